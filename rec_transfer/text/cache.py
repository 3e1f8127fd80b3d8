"""Item text vectors from the disk cache, or encoded once and cached: who encodes, who waits, who writes.

A cache hit reads one validated file (``rec_transfer.text.store``) and never loads or imports the language model.
On a miss the model is loaded and the texts encoded, a large catalogue in resumable shards
(``rec_transfer.text.shards``): under ``torch.distributed`` every rank encodes its share and rank 0 writes the files;
separate processes missing the same file at once take a file lock, so one encodes and the others read its file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from filelock import FileLock, Timeout

from rec_transfer.text.models import load_text_model, resolve_default_pooling, resolve_model
from rec_transfer.text.pooling import POOLING_METHODS, PoolingMethod
from rec_transfer.text.shards import DEFAULT_SHARD_SIZE, encode_into_cache
from rec_transfer.text.store import CACHE_FORMAT_VERSION, cache_path, load_vectors, text_cache_key
from rec_transfer.utils.distributed import collective_device, dist_info
from rec_transfer.utils.files import atomic_write

log = logging.getLogger(__name__)

TEMPLATE_FIELD = "{text}"
# How long a process waits for another one encoding the same texts (a catalogue of millions through an LLM on one
# GPU takes tens of minutes) before it gives up, naming the holder.
LOCK_TIMEOUT_S = 3600.0


class _TemplatedView(Sequence[str]):
    """Applies the template lazily, so a large catalogue is not duplicated in memory."""

    def __init__(self, texts: Sequence[str], template: str) -> None:
        self._texts = texts
        self._template = template

    def __len__(self) -> int:
        return len(self._texts)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self._template.replace(TEMPLATE_FIELD, t) for t in self._texts[i]]
        return self._template.replace(TEMPLATE_FIELD, self._texts[i])


def _check_template(template: str) -> None:
    if template and TEMPLATE_FIELD not in template:
        raise ValueError(f"template must contain {TEMPLATE_FIELD!r} where the item text goes, got {template!r}")


def _all_ranks_hit(hit: bool) -> bool:
    flag = torch.tensor([int(hit)], device=collective_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _encoding_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def cached_item_vectors(
    texts: Sequence[str],
    model_name: str = "minilm",
    pooling: PoolingMethod | None = None,
    max_length: int = 128,
    normalize: bool = False,
    template: str = "",
    batch_size: int = 64,
    cache_dir: str | Path = ".cache/rec_transfer",
    trust_remote_code: bool = False,
    progress: bool = True,
    lock_timeout: float = LOCK_TIMEOUT_S,
    shard_size: int = DEFAULT_SHARD_SIZE,
) -> torch.Tensor:
    """Item text vectors, from the disk cache when possible, else encoded and cached.

    Under ``torch.distributed`` every rank must call this with the same arguments (so from Lightning's ``setup``,
    not the rank-0-only ``prepare_data``): all ranks encode their shard, rank 0 writes the file, and every rank
    returns the full tensor. Outside ``torch.distributed``, processes that miss the same file at once encode it
    once: the first holds a lock (``<cache_dir>/locks/<key>.lock``) while it encodes; the others wait, then read
    its file.

    Args:
        texts: One text per item, in item order.
        model_name: ``"minilm"``, ``"smollm2"``, a local model path or a hub id.
        pooling: ``"mean"``, ``"cls"``, ``"last"``, or None for the model's default.
        max_length: Truncation length in tokens.
        normalize: L2-normalise the vectors.
        template: Applied to every text before encoding; ``"{text}"`` marks where the text goes
            (e.g. ``"This product: {text}"``). ``""`` uses texts as they are.
        batch_size: Texts per forward pass.
        cache_dir: Cache root; vectors go to ``<cache_dir>/text_vectors/``, converted GGUF models to
            ``<cache_dir>/models/``.
        trust_remote_code: Allow custom model code from the hub.
        progress: Show a progress bar while encoding.
        lock_timeout: Seconds to wait for another process encoding the same texts before giving up with a
            ``TimeoutError`` that says who holds the lock (a hung process would otherwise block every run).
        shard_size: A larger catalogue is encoded in shards of this many items, each cached as it finishes, so that
            a run killed while encoding resumes from its last finished shard (``rec_transfer.text.shards``).

    Returns:
        float32 CPU tensor of shape (N, D), row i for ``texts[i]``.
    """
    _check_template(template)
    if pooling is not None and pooling not in POOLING_METHODS:
        raise ValueError(f"Unknown pooling {pooling!r}; expected one of {POOLING_METHODS}")
    resolved = resolve_model(model_name)
    pooling = pooling or resolve_default_pooling(resolved)
    key = text_cache_key(
        texts,
        identity=resolved.identity,
        pooling=pooling,
        max_length=max_length,
        normalize=normalize,
        template=template,
    )
    path = cache_path(cache_dir, key)
    expected = {
        "format_version": CACHE_FORMAT_VERSION,
        "key": key,
        "model_name": model_name,
        "identity": resolved.identity,
        "pooling": pooling,
        "max_length": str(max_length),
        "normalize": str(bool(normalize)),
        "template": template,
        "count": str(len(texts)),
    }
    rank, world = dist_info()
    distributed = world > 1
    vectors = load_vectors(path, expected)
    hit = vectors is not None
    if distributed:
        # Collectives below must be entered by every rank, so all agree on hit/miss first.
        hit = _all_ranks_hit(hit)
    if hit:
        log.debug("Loaded %d cached text vectors from %s", len(texts), path)  # the data module says it in one line
        return vectors

    with contextlib.ExitStack() as stack:
        if not distributed:  # ranks of one job already coordinate through collectives
            stack.enter_context(_encoding_lock(Path(cache_dir) / "locks" / f"{key}.lock", len(texts), lock_timeout))
            vectors = load_vectors(path, expected)
            if vectors is not None:
                log.info("Loaded %d text vectors from %s, encoded meanwhile by another process", len(texts), path)
                return vectors
        # Rank 0 first: a GGUF model is converted once, then the other ranks load the converted folder.
        if rank == 0:
            model, tokenizer, _ = load_text_model(model_name, trust_remote_code, cache_dir)
        if distributed:
            dist.barrier()
        if rank != 0:
            model, tokenizer, _ = load_text_model(model_name, trust_remote_code, cache_dir)
        model.to(_encoding_device())
        return encode_into_cache(
            _TemplatedView(texts, template) if template else texts,
            model,
            tokenizer,
            path,
            expected,
            shard_size=shard_size,
            progress=progress,
            pooling=pooling,
            max_length=max_length,
            batch_size=batch_size,
            normalize=normalize,
        )


@contextlib.contextmanager
def _encoding_lock(lock_path: Path, count: int, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Held while one process encodes a catalogue, so that others started alongside wait and read its file instead.

    An OS lock (flock): a process that dies holding it releases it, so no stale lock can block later runs. A live
    process that hangs holding it would, so waiting ends after ``timeout`` seconds with a ``TimeoutError`` naming
    the lock and its holder (``<lock>.owner`` says which process took it, and when).
    """
    lock_path.parent.mkdir(parents=True, exist_ok=True)  # beside, not among, the vector files
    owner = lock_path.with_name(lock_path.name + ".owner")
    lock = FileLock(lock_path)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        holder = _lock_holder(owner)
        log.warning("Another process is encoding these %d texts (%s); waiting up to %.0f s", count, holder, timeout)
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            raise TimeoutError(
                f"waited {timeout:.0f} s for the encoding lock {lock_path}, held by another process ({holder}) "
                f"encoding the same {count} texts: it may be hung. Stop it, or wait longer with a larger "
                "lock_timeout (text_encoder.lock_timeout in a config)"
            ) from None
    try:
        atomic_write(owner, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        yield
    finally:
        lock.release()


def _lock_holder(owner: Path) -> str:
    try:
        return owner.read_text().strip() or "unknown"
    except OSError:
        return "unknown"
