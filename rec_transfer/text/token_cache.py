"""Disk cache of lower-layer token states (see ``trainable``), keyed like the pooled-vector cache plus the layer."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from rec_transfer.text.cache import _check_template, _encoding_lock, _TemplatedView, text_cache_key
from rec_transfer.text.models import load_text_model, resolve_default_pooling, resolve_model
from rec_transfer.text.pooling import PoolingMethod
from rec_transfer.text.trainable import TextTop, TokenStates, check_split, num_layers, token_states

log = logging.getLogger(__name__)

_VERSION = "1"


def _checksum(*tensors: torch.Tensor) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(t.contiguous().view(torch.uint8).numpy())
    return digest.hexdigest()


def _load(path: Path, key: str) -> TokenStates | None:
    if not path.exists():
        return None
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            values, offsets = f.get_tensor("values"), f.get_tensor("offsets")
    except Exception as err:  # safetensors raises its own error type, OSError or ValueError on bad files
        log.warning("Token state cache %s is unreadable (%s); rebuilding it", path, err)
        return None
    if meta.get("key") != key or meta.get("checksum") != _checksum(values, offsets):
        log.warning("Token state cache %s does not match its key or checksum; rebuilding it", path)
        return None
    return TokenStates(values, offsets)


def _save(path: Path, states: TokenStates, key: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    values, offsets = states.values.contiguous(), states.offsets.contiguous()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    os.close(fd)
    try:
        metadata = {"key": key, "checksum": _checksum(values, offsets)}
        save_file({"values": values, "offsets": offsets}, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def cached_token_states(
    texts: Sequence[str],
    model_name: str,
    train_layers: int,
    max_length: int = 128,
    template: str = "",
    batch_size: int = 64,
    cache_dir: str | Path = ".cache/rec_transfer",
    trust_remote_code: bool = False,
    progress: bool = True,
) -> TokenStates:
    """Token states of every text below the top ``train_layers`` layers, from the cache or encoded once."""
    _check_template(template)
    resolved = resolve_model(model_name)
    key = text_cache_key(
        texts,
        identity=f"{resolved.identity}|tokens-below-top-{train_layers}|v{_VERSION}",
        pooling=resolve_default_pooling(resolved),
        max_length=max_length,
        normalize=False,
        template=template,
    )
    path = Path(cache_dir) / "token_states" / f"{key}.safetensors"
    states = _load(path, key)
    if states is not None:
        log.info("Loaded cached token states of %d texts from %s", len(texts), path)
        return states
    with _encoding_lock(Path(cache_dir) / "locks" / f"{key}.lock", len(texts)):
        states = _load(path, key)
        if states is None:
            model, tokenizer, _ = load_text_model(model_name, trust_remote_code, cache_dir)
            split = num_layers(model) - train_layers
            view = _TemplatedView(texts, template) if template else texts
            states = token_states(view, model, tokenizer, split, max_length, batch_size, progress)
            _save(path, states, key)
            log.info("Cached token states of %d texts (layer %d) in %s", len(texts), split, path)
    return states


def build_text_top(
    model_name: str,
    train_layers: int,
    pooling: PoolingMethod | None = None,
    check_texts: Sequence[str] = (),
    max_length: int = 128,
    cache_dir: str | Path = ".cache/rec_transfer",
    trust_remote_code: bool = False,
) -> TextTop:
    """The trainable top layers of ``model_name``, checked against the full model on ``check_texts``."""
    resolved = resolve_model(model_name)
    model, tokenizer, _ = load_text_model(model_name, trust_remote_code, cache_dir)
    top = TextTop(model, train_layers, pooling or resolve_default_pooling(resolved))
    check_split(model, tokenizer, top, check_texts, max_length)
    return top
