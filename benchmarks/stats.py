"""The two figures every report takes over runs: the spread of a metric over seeds, and a run's best validation."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def spread(values: Sequence[float]) -> dict:
    """Count, mean, sample standard deviation (0 for one run), min and max of one figure over runs.

    Mean and standard deviation are rounded to 5 digits, as reports print them.
    """
    return {
        "n": len(values),
        "mean": round(statistics.fmean(values), 5),
        "std": round(statistics.stdev(values), 5) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def best_validation(history: Sequence[dict]) -> tuple[int, dict] | None:
    """Index and entry of the best validation NDCG@10 in a run's ``val_history`` (None if empty).

    Of equal scores the first counts, as our checkpoint callback keeps it (RecBole keeps the last:
    ``recbole_sasrec.py`` says so where it picks its own).
    """
    if not history:
        return None
    i = max(range(len(history)), key=lambda j: history[j]["ndcg@10"])  # max keeps the first of equal values
    return i, history[i]
