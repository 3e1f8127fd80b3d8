"""Progress bars of libraries that report per file or per weight: off while they do work we report ourselves."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def no_dataset_bars() -> Iterator[None]:
    """Hugging Face ``datasets`` without its "Saving the dataset" bars (one per table and shard), restored after."""
    import datasets

    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


@contextmanager
def no_weight_bars() -> Iterator[None]:
    """``transformers`` without its "Loading weights" bar, restored after; the encoding bar is ours."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()
