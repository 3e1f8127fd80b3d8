"""``ModelCheckpoint`` whose ``last.ckpt`` really is the latest validated state, written whole; and which file
``--ckpt_path`` means."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
from fsspec.implementations.local import LocalFileSystem
from lightning.pytorch.callbacks import ModelCheckpoint

from rec_transfer.phase import current_phase
from rec_transfer.utils.checkpoints import CheckpointError, NoCheckpoint, checkpoint_problem

log = logging.getLogger(__name__)


class LatestCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint``, rewriting ``last.ckpt`` at every validation.

    With a ``monitor``, Lightning 2.6 rewrites ``last.ckpt`` only when a top-k checkpoint is saved
    in the same step, so ``--ckpt_path last`` would go back to the best epoch and redo the epochs
    after it. Here ``last.ckpt`` follows every validation, as users expect.

    Each checkpoint is written beside its final name and renamed onto it: Lightning writes through a temporary file
    in the system's temp folder and moves it, which is a copy when that is another filesystem, so a kill could leave
    a truncated checkpoint under the final name.

    In a transfer run the best checkpoint is chosen among target epochs only: the fit's test row is the fine-tuned
    model, and the source-trained one has its own (zero-shot) row, even where it validates higher.
    """

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        if current_phase(trainer) == "source":  # "target" throughout a run without sources
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        if not isinstance(self._fs, LocalFileSystem):
            return super()._save_checkpoint(trainer, filepath)
        # Not named like a checkpoint (no "last", no ".ckpt"): a leftover of a kill is never taken for one.
        partial = Path(filepath).with_name(f".checkpoint-{os.getpid()}.partial")
        try:
            super()._save_checkpoint(trainer, str(partial))  # every rank calls; rank 0 writes, all pass a barrier
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        if trainer.is_global_zero:
            os.replace(partial, filepath)
        self._last_checkpoint_saved = filepath

    def _save_last_now(self, trainer: L.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):  # skips if already saved this step
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    # Lightning saves in one of these two hooks; follow it there, after its own top-k save.
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_now(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_now(trainer)


def find_checkpoint(ckpt_path: str | Path, folders: Sequence[str | Path], last_name: str = "last") -> Path:
    """The checkpoint file ``--ckpt_path`` means: a file as given, or for ``last`` the newest ``*last*.ckpt`` in
    ``folders`` (the checkpoint callbacks' ``dirpath``), as Lightning picks it.

    An unreadable ``last`` (truncated by a crash or a full disk, or corrupt) falls back, with a warning, to the newest
    whole checkpoint beside it; a named file that is unreadable is refused.

    Raises:
        NoCheckpoint: no such file, or no last checkpoint in ``folders`` (a ``FileNotFoundError``).
        CheckpointError: the file is not a whole checkpoint, and for ``last`` nothing whole is beside it.
    """
    if str(ckpt_path) != "last":
        problem = checkpoint_problem(ckpt_path)
        if problem == "does not exist":
            raise NoCheckpoint(f"--ckpt_path {ckpt_path}: no such checkpoint file")
        if problem is not None:
            raise CheckpointError(ckpt_path, problem)
        return Path(ckpt_path)
    candidates = [p for folder in folders for p in Path(folder).glob(f"*{last_name}*.ckpt") if p.is_file()]
    if not candidates:
        where = ", ".join(str(f) for f in folders) or "nowhere: no ModelCheckpoint callback with a fixed dirpath"
        raise NoCheckpoint(
            f"--ckpt_path last: no last checkpoint in {where} (ModelCheckpoint needs a fixed dirpath and "
            "save_last: true); drop --ckpt_path to start a new run"
        )
    last = max(candidates, key=lambda p: p.stat().st_mtime_ns)
    problem = checkpoint_problem(last)
    if problem is None:
        return last
    whole = [p for p in last.parent.glob("*.ckpt") if p != last and checkpoint_problem(p) is None]
    if not whole:
        raise CheckpointError(last, f"{problem}, and no whole checkpoint is beside it to fall back to")
    fallback = max(whole, key=lambda p: p.stat().st_mtime_ns)
    log.warning("checkpoint %s %s: falling back to the newest whole checkpoint, %s", last, problem, fallback)
    return fallback
