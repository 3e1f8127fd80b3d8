"""The Arrow cache layer every reader writes through: ``datasets.Dataset.from_generator`` plus the counts it reported.

Generators stream rows into a memory-mapped Arrow cache; their keyword arguments (which hold each input file's
``FileKey``) are part of the cache fingerprint, so an edited file is read again and an unchanged one is not.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import datasets

from rec_transfer.data.errors import DataFormatError
from rec_transfer.utils.errors import exception_chain
from rec_transfer.utils.files import atomic_write

logger = logging.getLogger(__name__)

# Bump when the rows a generator yields change meaning, so old caches are not reused.
CACHE_VERSION = 2  # 2: ids without surrounding whitespace
_WRITER_BATCH_SIZE = 100_000
_COUNTS_FILE = "rec_transfer_counts.json"

INTERACTION_FEATURES = datasets.Features(
    {"user_id": datasets.Value("string"), "item_id": datasets.Value("string"), "timestamp": datasets.Value("float64")}
)


def _format_error_in(exc: BaseException) -> DataFormatError | None:
    # datasets wraps generator failures (DatasetGenerationError); dig our own error out of the chain.
    return next((e for e in exception_chain(exc) if isinstance(e, DataFormatError)), None)


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def build(
    generator: Callable[..., Iterator[dict[str, Any]]],
    features: datasets.Features,
    cache_dir: str | Path | None,
    **gen_kwargs: Any,
) -> tuple[datasets.Dataset, dict[str, int]]:
    """Runs from_generator and returns the dataset plus the counts the generator reported (or cached).

    The generator is called with ``gen_kwargs`` plus ``stats`` (a dict it may fill with what it dropped) and
    ``cache_version``; a DataFormatError it raises comes out as itself, not wrapped by datasets.
    """
    # The generator fills `stats` only when it actually runs; on a cache hit the counts come from a side file.
    stats: dict[str, int] = {}
    gen_kwargs = {**gen_kwargs, "stats": stats, "cache_version": CACHE_VERSION}
    try:
        with _no_progress_bars():
            # features=None skips datasets' slow per-row encode_example; the generators
            # yield only str and float, so the inferred schema matches `features` (checked below).
            ds = datasets.Dataset.from_generator(
                generator,
                features=None,
                cache_dir=str(cache_dir) if cache_dir is not None else None,
                keep_in_memory=False,
                gen_kwargs=gen_kwargs,
                writer_batch_size=_WRITER_BATCH_SIZE,
            )
    except Exception as e:
        err = _format_error_in(e)
        if err is None:
            raise
        raise err from None
    if ds.features != features:
        ds = ds.cast(features)
    counts_file = Path(ds.cache_files[0]["filename"]).parent / _COUNTS_FILE
    if stats:
        atomic_write(counts_file, json.dumps(stats))
    elif counts_file.is_file():
        stats = json.loads(counts_file.read_text())
    if stats.get("ids_with_spaces"):
        source = gen_kwargs.get("source") or gen_kwargs["sources"][0]
        logger.warning('%s: removed spaces around %d ids ("u1 " is u1)', source[0], stats["ids_with_spaces"])
    return ds, stats
