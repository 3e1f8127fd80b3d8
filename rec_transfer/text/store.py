"""The text caches' files: cache keys, and validated safetensors files written atomically.

A file ``<cache_dir>/text_vectors/<key>.safetensors`` holds one float32 tensor ``vectors`` (N, D) and metadata
describing how it was made plus a sha256 of the tensor bytes; ``<cache_dir>/token_states/<key>.safetensors`` holds
a catalogue's lower-layer token states (``TokenStates``) for a language model that trains its top layers. Reading
validates the file: anything unexpected (parse error, truncation, wrong shape, metadata or checksum mismatch) logs
a warning and reads as a miss. Reading needs neither the language model nor ``transformers``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from rec_transfer.text.pooling import PoolingMethod
from rec_transfer.text.trainable import TokenStates
from rec_transfer.utils.files import atomic_path

log = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = "1"
_TENSOR_NAME = "vectors"


def text_cache_key(
    texts: Sequence[str],
    *,
    identity: str,
    pooling: PoolingMethod,
    max_length: int,
    normalize: bool,
    template: str = "",
) -> str:
    """Cache key of a set of item vectors.

    Args:
        texts: Raw item texts (before the template), hashed in a streaming pass, each with its byte length so that
            ``["ab", "c"]`` and ``["a", "bc"]`` differ.
        identity: Model identity from :func:`model_identity` / :func:`load_text_model`.
        pooling: Resolved pooling method (not None).
        max_length: Truncation length.
        normalize: Whether vectors are L2-normalised.
        template: Template applied to each text (``"{text}"`` placeholder), or ``""``.

    Returns:
        Hex sha256.
    """
    header = json.dumps(
        {
            "version": CACHE_FORMAT_VERSION,
            "identity": identity,
            "pooling": pooling,
            "max_length": int(max_length),
            "normalize": bool(normalize),
            "template": template,
        },
        sort_keys=True,
    ).encode()
    digest = hashlib.sha256()
    digest.update(len(header).to_bytes(8, "little"))
    digest.update(header)
    for text in texts:
        data = text.encode("utf-8")
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    digest.update(len(texts).to_bytes(8, "little"))
    return digest.hexdigest()


def cache_path(cache_dir: str | Path, key: str) -> Path:
    """File that holds the vectors of ``key``."""
    return Path(cache_dir) / "text_vectors" / f"{key}.safetensors"


def _tensor_checksum(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()


def load_vectors(path: Path, expected: dict[str, str]) -> torch.Tensor | None:
    """Return the cached tensor, or None when missing or invalid (never raises on a bad file)."""
    if not path.exists():
        return None
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensor = f.get_tensor(_TENSOR_NAME)
    except Exception as err:  # safetensors raises its own error type, OSError or ValueError on bad files
        log.warning("Text vector cache %s is unreadable (%s); rebuilding it", path, err)
        return None
    problems = [k for k, v in expected.items() if metadata.get(k) != v]
    if tensor.dtype != torch.float32 or tensor.ndim != 2:
        problems.append(f"tensor {tuple(tensor.shape)} {tensor.dtype}")
    else:
        if tensor.shape[0] != int(expected["count"]):
            problems.append("row count")
        if metadata.get("dim") != str(tensor.shape[1]):
            problems.append("dim")
        if metadata.get("checksum") != _tensor_checksum(tensor):
            problems.append("checksum")
    if problems:
        log.warning("Text vector cache %s does not match (%s); rebuilding it", path, ", ".join(problems))
        return None
    return tensor


def save_vectors(path: Path, tensor: torch.Tensor, metadata: dict[str, str]) -> None:
    """Writes ``tensor`` with ``metadata``, its width and checksum, atomically (readers never see a partial file)."""
    tensor = tensor.contiguous()
    metadata = {**metadata, "dim": str(tensor.shape[1]), "checksum": _tensor_checksum(tensor)}
    with atomic_path(path) as tmp:
        save_file({_TENSOR_NAME: tensor}, tmp, metadata=metadata)


def token_states_path(cache_dir: str | Path, key: str) -> Path:
    """File that holds the token states of ``key`` (see ``rec_transfer.text.trainable``)."""
    return Path(cache_dir) / "token_states" / f"{key}.safetensors"


def load_token_states(path: Path, key: str) -> TokenStates | None:
    """The cached token states, or None when missing, unreadable or not matching ``key`` (never raises)."""
    if not path.exists():
        return None
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            values, offsets = f.get_tensor("values"), f.get_tensor("offsets")
    except Exception as err:  # safetensors raises its own error type, OSError or ValueError on bad files
        log.warning("Token state cache %s is unreadable (%s); rebuilding it", path, err)
        return None
    if metadata.get("key") != key or metadata.get("checksum") != _tensor_checksum(values, offsets):
        log.warning("Token state cache %s does not match its key or checksum; rebuilding it", path)
        return None
    return TokenStates(values, offsets)


def save_token_states(path: Path, states: TokenStates, key: str) -> None:
    """Writes ``states`` with their key and checksum, atomically."""
    values, offsets = states.values.contiguous(), states.offsets.contiguous()
    metadata = {"key": key, "checksum": _tensor_checksum(values, offsets)}
    with atomic_path(path) as tmp:
        save_file({"values": values, "offsets": offsets}, tmp, metadata=metadata)
