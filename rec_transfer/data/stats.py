"""Load statistics of a domain: sizes, what preprocessing dropped, and what loading it cost (time, peak memory)."""

from __future__ import annotations

import resource
import time
from pathlib import Path
from typing import Any

from rec_transfer.data.datamodule import DomainDataModule


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def domain_stats(
    path: str | Path,
    cache_dir: str | Path,
    kcore: int | None = None,
    max_history: int | None = 50,
    **datamodule_kwargs: Any,
) -> dict[str, Any]:
    """Builds a ``DomainDataModule`` for ``path`` (no text encoder), makes it usable, and describes it.

    "Usable" means ``prepare_data()`` and ``setup()`` ran and the train loader was iterated once; ``load_seconds``
    is the wall time of all of that. ``peak_rss_mb`` is the whole process's peak, so it also covers anything the
    process loaded before (run one domain per process for a per-domain figure).

    Args:
        path: a domain folder, or ``"synthetic:<name>"``.
        cache_dir: the data module's cache; ``cold`` says whether this domain's processed cache was absent.
        kcore: iterative k-core filter (``None``: none).
        max_history: history cap as in ``PreprocessConfig`` (default: the data module's 50; ``None``: no cap).
        **datamodule_kwargs: other ``DomainDataModule`` arguments (``batch_size``, ``synthetic``, ...).

    Returns:
        A JSON-serialisable dict: ``domain``, ``path``, ``users``, ``items``, ``interactions``, ``avg_history``,
        ``train_batches``, ``train_rows``, ``cold``, ``load_seconds``, ``peak_rss_mb`` and the preprocessing
        ``counts``.
    """
    dm = DomainDataModule(
        str(path),
        text_encoder=None,
        cache_dir=str(cache_dir),
        kcore=kcore,
        max_history=max_history,
        **datamodule_kwargs,
    )
    cold = not (dm._domain_dir / "meta.json").exists()
    start = time.perf_counter()
    dm.prepare_data()
    dm.setup("fit")
    train_batches = train_rows = 0
    for batch in dm.train_dataloader():
        train_batches += 1
        train_rows += len(batch["user"])
    load_seconds = time.perf_counter() - start
    domain = dm.domain
    assert domain is not None
    return {
        "domain": dm.name,
        "path": str(path),
        "users": domain.num_users,
        "items": domain.num_items,
        "interactions": domain.num_interactions,
        "avg_history": round(domain.num_interactions / max(domain.num_users, 1), 3),
        "train_batches": train_batches,
        "train_rows": train_rows,
        "cold": cold,
        "load_seconds": round(load_seconds, 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "counts": dict(domain.counts),
    }
