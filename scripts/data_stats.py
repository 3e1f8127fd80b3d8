"""Load each domain through ``DomainDataModule`` (no text encoder) and print one JSON line of statistics per domain.

Each line holds the sizes, ``avg_history``, the preprocessing ``counts``, ``cold`` (the domain's cache was empty),
``load_seconds`` (read + preprocess + setup + one pass of the train loader) and ``peak_rss_mb`` (this process's
peak so far: run one domain per process for a per-domain figure). Without ``--cache-dir`` a fresh temporary
cache is used, so timings are cold. Defaults are the data module's: no k-core, history cap 50.

Example:
    python scripts/data_stats.py ../shared/data/amazon/Scientific
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import datasets

from rec_transfer.data.stats import domain_stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="domain folders (or synthetic:<name>)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="cache to use (default: a fresh temporary one)")
    parser.add_argument("--kcore", type=int, default=None, help="iterative k-core filter (default: none)")
    parser.add_argument("--max-history", type=int, default=50, help="history cap (default: 50; 0: none)")
    args = parser.parse_args()

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory(prefix="rec_transfer_stats_") as tmp:
        cache_dir = args.cache_dir if args.cache_dir is not None else Path(tmp)
        for path in args.paths:
            stats = domain_stats(path, cache_dir, kcore=args.kcore, max_history=args.max_history or None)
            print(json.dumps(stats), flush=True)


if __name__ == "__main__":
    main()
