"""Encode a catalogue in shards cached as they finish, so that a killed run resumes from its last finished shard.

A catalogue of more than one shard (``shard_size`` items, in item order) is encoded shard by shard. Each finished shard
is written atomically to ``<cache_dir>/text_vectors/<key>.shards/<index>.safetensors`` with its metadata (the cache
key, its index, its item range, width and a checksum; ``rec_transfer.text.store``). A run that misses the cache first
reads the shards that validate and encodes only the others; a shard that does not validate (damaged, or of another
``shard_size``) is encoded again. Once every shard is done the table is written as the ordinary cache file
``<key>.safetensors`` (so a cache hit reads that one file, as for a catalogue of one shard) and the folder is removed.
A change of texts or settings changes the key, so shards of other texts are never read.

Memory: the (N, D) float32 result, allocated once, plus one shard's work: its texts and their lengths, one tokenised
chunk at a time (``rec_transfer.text.encode``) and its (shard_size, D) vectors. Under ``torch.distributed`` every rank
encodes its strided share of each shard (``encode_texts_sharded``), rank 0 writes the files, and a shard counts as
done only when every rank can read it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from rec_transfer.text.encode import encode_texts_sharded, vector_width
from rec_transfer.text.store import load_vectors, save_vectors
from rec_transfer.utils.distributed import collective_device, dist_info

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DEFAULT_SHARD_SIZE = 65536


def shard_dir(path: Path) -> Path:
    """Folder of the finished shards of the cache file ``path`` (``<key>.safetensors`` → ``<key>.shards``)."""
    return path.with_suffix(".shards")


def shard_ranges(count: int, shard_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` item ranges of ``shard_size`` items (the last one shorter), covering ``0..count``."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    return [(start, min(start + shard_size, count)) for start in range(0, count, shard_size)]


def _shard_metadata(metadata: dict[str, str], index: int, start: int, stop: int, dim: int) -> dict[str, str]:
    # `count` is what load_vectors checks the row count against.
    shard = {"shard": str(index), "start": str(start), "stop": str(stop), "count": str(stop - start), "dim": str(dim)}
    return {**metadata, **shard}


def _all_ranks_agree(flags: list[bool]) -> list[bool]:
    """Each flag, true only where it is true on every rank."""
    if dist_info()[1] == 1 or not flags:
        return flags
    tensor = torch.tensor([int(f) for f in flags], device=collective_device())
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return [bool(v) for v in tensor.tolist()]


def encode_into_cache(
    texts: Sequence[str],
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: Path,
    metadata: dict[str, str],
    shard_size: int = DEFAULT_SHARD_SIZE,
    progress: bool = True,
    **kwargs,
) -> torch.Tensor:
    """Encodes ``texts`` shard by shard, resuming from finished shards, and writes the cache file ``path``.

    Every rank must call it under ``torch.distributed``, with the same arguments; all return the full table.

    Args:
        texts: Item texts, templated, in item order.
        model: The language model, on this rank's device.
        tokenizer: Its tokenizer.
        path: The cache file to write (``store.cache_path``); its shards go to :func:`shard_dir`.
        metadata: The cache file's metadata (key, model, settings, count); each shard adds its own range.
        shard_size: Items per shard.
        progress: Show a progress bar over items (finished shards count as done) on rank 0.
        **kwargs: Passed to ``encode_texts`` (pooling, max_length, batch_size, normalize).

    Returns:
        float32 CPU tensor (N, D), row i for ``texts[i]``.
    """
    rank, world = dist_info()
    ranges = shard_ranges(len(texts), shard_size)
    folder = shard_dir(path)
    dim = vector_width(model)
    out = torch.empty(len(texts), dim, dtype=torch.float32)
    sharded = len(ranges) > 1  # one shard: nothing to resume, so no shard files either
    done = [False] * len(ranges)
    if sharded and folder.is_dir():
        for i, (start, stop) in enumerate(ranges):
            part = load_vectors(folder / f"{i:05d}.safetensors", _shard_metadata(metadata, i, start, stop, dim))
            if part is not None:
                out[start:stop] = part
                done[i] = True
    done = _all_ranks_agree(done)
    resumed = sum(stop - start for (start, stop), d in zip(ranges, done, strict=True) if d)
    if any(done):
        log.info("Resuming: %d of %d shards of %d texts encoded in %s", sum(done), len(ranges), len(texts), folder)
    bar = tqdm(total=len(texts), initial=resumed, unit="item", desc="Encoding texts", disable=not progress or rank != 0)
    with bar:
        bar.set_postfix_str(f"shards {sum(done)}/{len(ranges)}")
        for i, (start, stop) in enumerate(ranges):
            if done[i]:
                continue
            # Per batch when this process encodes the whole shard; under DDP rank 0 sees only its share, so per shard.
            part = encode_texts_sharded(
                [texts[j] for j in range(start, stop)],
                model,
                tokenizer,
                progress=False,
                **({"bar": bar} if world == 1 else {}),
                **kwargs,
            )  # (stop - start, D)
            out[start:stop] = part
            if world > 1:
                bar.update(stop - start)
            if sharded and rank == 0:
                save_vectors(folder / f"{i:05d}.safetensors", part, _shard_metadata(metadata, i, start, stop, dim))
            del part
            done[i] = True
            bar.set_postfix_str(f"shards {sum(done)}/{len(ranges)}")
    if rank == 0:
        save_vectors(path, out, metadata)
        shutil.rmtree(folder, ignore_errors=True)
        log.info("Cached %d text vectors in %s", len(texts), path)
    if world > 1:
        dist.barrier()
    return out
