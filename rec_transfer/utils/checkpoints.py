"""Checkpoint files read safely: integrity checked first, then loaded weights-only, every failure naming the file.

A ``torch.load`` that is not weights-only unpickles arbitrary objects, so a crafted checkpoint runs code as it loads;
every checkpoint this package reads goes through :func:`load_checkpoint`, which never does that.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from rec_transfer.utils.errors import UserInputError


class CheckpointError(UserInputError, ValueError):
    """A checkpoint that cannot or must not be loaded: names the file and why."""

    def __init__(self, path: str | Path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"checkpoint {self.path}: {reason}")


class NoCheckpoint(UserInputError, FileNotFoundError):
    """No checkpoint where one was asked for (``--ckpt_path``, ``model.pretrained``): says where it looked."""


def checkpoint_problem(path: str | Path) -> str | None:
    """Why the file at ``path`` is not a whole checkpoint (missing, truncated, corrupt), or None if it is.

    Reads the file once and checks the CRC of every member of ``torch.save``'s zip archive, without unpickling
    anything: a truncated file has no central directory, a flipped bit fails its member's CRC.
    """
    path = Path(path)
    if not path.is_file():
        return "does not exist" if not path.exists() else "is not a file"
    try:
        if not zipfile.is_zipfile(path):
            return "is truncated or not a checkpoint (no torch.save zip archive)"
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as e:
        return f"is unreadable ({type(e).__name__}: {e})"
    return f"is corrupt (checksum mismatch in {bad})" if bad is not None else None


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path``, loaded weights-only (tensors and plain Python values, no code).

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, or holds objects that weights-only loading refuses
            (they could run code when unpickled).
    """
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(path, problem)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            path,
            "refused: it holds Python objects beyond tensors and plain values, which could run code when loaded "
            f"(weights-only loading said: {reason})",
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise CheckpointError(path, f"is unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(path, f"holds a {type(checkpoint).__name__}, not a checkpoint dictionary")
    return checkpoint
