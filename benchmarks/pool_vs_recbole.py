"""Pool earlier speed reports against RecBole: every run of ours against every RecBole run, nothing trained.

One RecBole seed is a poor yardstick on a small dataset: on ml-100k its test NDCG@10 moves by more between seeds
than the gap being judged. This reads RecBole runs from several reports of benchmarks/vs_recbole.py (one
per seed; a report with runs of ours can serve too) and runs of ours from one or more, then reports the speedup of
every pairing and each side's test NDCG@10 / Recall@10 as mean ± std over its runs. Reports must be measured the
same way (threads, patience); seeds must not repeat on either side.

Example (R = benchmarks/results/speed_vs_recbole_ml-100k):
    python -m benchmarks.pool_vs_recbole --dataset ml-100k \\
        --recbole $R/recbole_seed0.json $R/recbole_seed1.json $R/recbole_seed2.json \\
        --ours $R/ours_stride5.json:0,1,2,4 $R/ours_stride5_seed3_rerun.json --output $R/pooled.json
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from benchmarks.runs import portable, provenance
from benchmarks.vs_recbole_report import format_pool, pool


def load(paths: list[str], dataset: str, side: str) -> list[tuple[str, dict]]:
    """(path, report) for every report; refuses one without a ``side`` run on ``dataset``.

    ``PATH:0,1`` keeps only those seeds of ours (e.g. to replace one seed with a rerun made the same day).
    """
    reports = []
    for path in paths:
        path, _, seeds = path.rpartition(":") if re.fullmatch(r".+:[0-9,]+", path) else (path, "", "")
        report = json.loads(Path(path).read_text())
        runs = report.get("raw", {}).get(dataset, {}).get(side)
        if seeds:
            kept = seeds.split(",")
            if side != "ours" or not set(kept) <= set(runs or {}):
                raise SystemExit(f"{path}: no {side} runs with seeds {seeds} on {dataset}")
            report["raw"][dataset][side] = {s: run for s, run in runs.items() if s in kept}
            path = f"{path}:{seeds}"
        if not runs:
            raise SystemExit(f"{path} has no {side} run on {dataset}")
        reports.append((path, report))
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True, help="as named in the reports, e.g. ml-100k or Scientific")
    parser.add_argument("--recbole", nargs="+", required=True, help="reports whose RecBole run to pool (one a seed)")
    parser.add_argument(
        "--ours", nargs="+", required=True, help="reports whose runs of ours to pool (all seeds, or PATH:0,1 for some)"
    )
    parser.add_argument("--goal", type=float, default=10.0, help="speedup asked for (default 10)")
    parser.add_argument("--output", default=None, help="JSON report (default: print only)")
    args = parser.parse_args()

    rb_reports, our_reports = load(args.recbole, args.dataset, "recbole"), load(args.ours, args.dataset, "ours")
    measured = {(r.get("threads"), r["settings"]["patience"]) for _, r in rb_reports + our_reports}
    if len(measured) != 1:
        raise SystemExit(f"reports measured differently (threads, patience): {sorted(measured)}")
    patience = measured.pop()[1]

    recbole = {}
    for path, report in rb_reports:
        label = f"seed {report['settings']['seed']}"
        if label in recbole:
            raise SystemExit(f"two RecBole runs with {label} (the second in {path}): pass one per seed")
        recbole[label] = report["raw"][args.dataset]["recbole"]
    ours, max_epochs = {}, {}
    for path, report in our_reports:
        for seed, run in report["raw"][args.dataset]["ours"].items():
            if seed in ours:
                raise SystemExit(f"two runs of ours with seed {seed} (the second in {path}): pass one per seed")
            ours[seed], max_epochs[seed] = run, report["settings"]["max_epochs"]

    pooled = pool(ours, recbole, args.dataset, patience, max_epochs, args.goal)
    print(format_pool(pooled))
    if args.output:
        keep = ("command", "git_commit", "when")  # "when": reports older than it lack it
        inputs = {side: [{"report": portable(p), **{k: r.get(k) for k in keep}} for p, r in reports]
                  for side, reports in (("recbole", rb_reports), ("ours", our_reports))}  # fmt: skip
        report = {**provenance(), "dataset": args.dataset, "patience": patience, "inputs": inputs, "results": pooled}
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2))
        print(f"\nwrote {args.output}")


if __name__ == "__main__":
    main()
