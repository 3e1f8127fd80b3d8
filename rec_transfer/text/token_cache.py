"""Lower-layer token states of a catalogue (see ``trainable``): from the cache, or encoded once and cached."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from rec_transfer.text.cache import LOCK_TIMEOUT_S, _check_template, _encoding_lock, _TemplatedView
from rec_transfer.text.models import load_text_model, resolve_default_pooling, resolve_model
from rec_transfer.text.pooling import PoolingMethod
from rec_transfer.text.store import load_token_states, save_token_states, text_cache_key, token_states_path
from rec_transfer.text.trainable import TextTop, TokenStates, check_split, num_layers, token_states

log = logging.getLogger(__name__)

_VERSION = "1"  # bump when what token_states() stores changes meaning


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
    lock_timeout: float = LOCK_TIMEOUT_S,
) -> TokenStates:
    """Token states of every text below the top ``train_layers`` layers, from the cache or encoded once.

    Keyed like the pooled vectors (model identity, length, template, the texts) plus ``train_layers``; a hit
    reads one validated file without loading the model. Processes that miss the same file at once encode it
    once (a file lock, as for the vectors, given up after ``lock_timeout`` seconds).
    """
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
    path = token_states_path(cache_dir, key)
    states = load_token_states(path, key)
    if states is not None:
        log.debug("Loaded cached token states of %d texts from %s", len(texts), path)
        return states
    with _encoding_lock(Path(cache_dir) / "locks" / f"{key}.lock", len(texts), lock_timeout):
        states = load_token_states(path, key)
        if states is None:
            model, tokenizer, _ = load_text_model(model_name, trust_remote_code, cache_dir)
            split = num_layers(model) - train_layers
            view = _TemplatedView(texts, template) if template else texts
            states = token_states(view, model, tokenizer, split, max_length, batch_size, progress)
            save_token_states(path, states, key)
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
