"""Benchmark item-text encoding: cold cache miss, cache hit, the bare model forward, and unsorted batching.

Prints one JSON object. ``overhead_ratio`` = cold items/s over bare-forward items/s (1.0 means tokenising, sorting,
pooling, model loading and writing cost nothing next to the forward pass).

Example:
    python -m benchmarks.encode --data ../shared/data/amazon/Scientific --model minilm
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from rec_transfer.data.domain import render_texts
from rec_transfer.data.formats import read_domain
from rec_transfer.text import (
    TokenBatch,
    cached_item_vectors,
    default_pooling,
    encode_texts,
    iter_token_batches,
    load_text_model,
)
from rec_transfer.text.encode import forward_hidden, with_position_ids


def read_item_texts(data: Path, limit: int | None = None) -> list[str]:
    """Item texts of a domain folder (any format ``read_domain`` detects)."""
    # The same texts a DomainDataModule encodes: the package's reader and default template.
    texts = render_texts(read_domain(data), template=None).to_pylist()
    return texts if limit is None else texts[:limit]


def real_token_share(batches: Iterable[TokenBatch]) -> float:
    batches = list(batches)
    real = sum(int(b.inputs["attention_mask"].sum()) for b in batches)
    padded = sum(b.inputs["attention_mask"].numel() for b in batches)
    return real / max(padded, 1)


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="RecBole dataset folder holding <name>.item")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N items")
    parser.add_argument("--repeats", type=int, default=1, help="rounds of all measurements; the fastest of each counts")
    args = parser.parse_args()

    load_start = os.getloadavg()[0]
    texts = read_item_texts(args.data, args.limit)
    n = len(texts)
    settings = dict(model_name=args.model, max_length=args.max_length, batch_size=args.batch_size, progress=False)
    times: dict[str, list[float]] = {"cold": [], "hit": [], "bare": [], "unsorted": []}
    with tempfile.TemporaryDirectory(prefix="bench_encode_") as cache_dir:
        # First load converts GGUF models into this cache dir; keep that one-off cost out of the throughput numbers.
        model_prepare_s, (model, tokenizer, _) = _timed(lambda: load_text_model(args.model, cache_dir=cache_dir))
        pooling = default_pooling(model)
        sorted_batches = list(iter_token_batches(texts, tokenizer, args.max_length, args.batch_size, True))
        sorted_inputs = [with_position_ids(model, batch.inputs) for batch in sorted_batches]
        unsorted_share = real_token_share(
            iter_token_batches(texts, tokenizer, args.max_length, args.batch_size, sort_by_length=False)
        )

        def bare_forward() -> None:
            with torch.inference_mode():
                for inputs in sorted_inputs:
                    forward_hidden(model, inputs)

        # Rounds interleave all variants, so load from other processes on a shared machine hits each alike.
        for _ in range(args.repeats):
            shutil.rmtree(Path(cache_dir) / "text_vectors", ignore_errors=True)
            cold_s, cold = _timed(lambda: cached_item_vectors(texts, cache_dir=cache_dir, **settings))
            hit_s, hit = _timed(lambda: cached_item_vectors(texts, cache_dir=cache_dir, **settings))
            if not torch.equal(cold, hit):
                raise RuntimeError("cache hit returned different vectors")
            bare_s, _ = _timed(bare_forward)
            unsorted_s, unsorted = _timed(
                lambda: encode_texts(
                    texts,
                    model,
                    tokenizer,
                    pooling,
                    max_length=args.max_length,
                    batch_size=args.batch_size,
                    sort_by_length=False,
                    progress=False,
                )
            )
            for name, value in zip(times, (cold_s, hit_s, bare_s, unsorted_s), strict=True):
                times[name].append(value)

    best = {name: min(values) for name, values in times.items()}
    items_per_s = n / best["cold"]
    bare_items_per_s = n / best["bare"]
    unsorted_items_per_s = n / best["unsorted"]
    result = {
        "model": args.model,
        "data": str(args.data),
        "items": n,
        "dim": cold.shape[1],
        "pooling": pooling,
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "model_prepare_s": round(model_prepare_s, 3),
        "cold_s": round(best["cold"], 3),
        "items_per_s": round(items_per_s, 2),
        "cached_load_s": round(best["hit"], 4),
        "bare_forward_items_per_s": round(bare_items_per_s, 2),
        "overhead_ratio": round(items_per_s / bare_items_per_s, 4),
        "unsorted_items_per_s": round(unsorted_items_per_s, 2),
        "sort_speedup": round(items_per_s / unsorted_items_per_s, 3),
        "real_token_share_sorted": round(real_token_share(sorted_batches), 4),
        "real_token_share_unsorted": round(unsorted_share, 4),
        "max_abs_diff_sorted_vs_unsorted": float((cold - unsorted).abs().max()) if n else 0.0,
        "all_times_s": {name: [round(v, 3) for v in values] for name, values in times.items()},
        "loadavg_1min_start_end": [round(load_start, 2), round(os.getloadavg()[0], 2)],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
