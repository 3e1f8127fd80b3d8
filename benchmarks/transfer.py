"""Does transfer help? Target-only baselines, zero-shot, and transfer + fine-tune on one target, over seeds.

Writes benchmarks/results/<target>.json (git commit, command, machine, per-seed values, wall times),
<target>.md (the table) and <target>.png (a chart) and prints the table. Variants already in
<target>.json and not run this time stay in the table, each with the command and commit that
measured it, if that report has the same sources, source epochs and seeds (checked first).

Examples:
    python -m benchmarks.transfer --target Scientific --seeds 0 1 2
    python -m benchmarks.transfer --target Office --variants sasrec text_target_only transfer_text
    python -m benchmarks.transfer --target Scientific --sources Office ml-100k --source-epochs 4 \\
        -- --trainer.accelerator gpu --trainer.precision bf16-mixed
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml

from benchmarks.runs import bench_configs, provenance, stop_fits_on_sigterm
from benchmarks.transfer_table import (
    config_name,
    default_sources,
    earlier_results,
    in_table_order,
    variant_config,
    write_report,
)
from benchmarks.variants import DOMAINS, PUBLISHED, VARIANTS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=sorted(DOMAINS), default="Scientific")
    parser.add_argument("--sources", choices=sorted(DOMAINS), nargs="+", help="default: every other domain")
    parser.add_argument("--variants", choices=list(VARIANTS), nargs="+", default=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--source-epochs", type=int, default=None, help="override the transfer config's")
    parser.add_argument("--data-root", default=None, help="folder holding amazon/ and movielens/ (default: configs')")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time (e.g. several on one GPU)")
    parser.add_argument("--output-dir", default="benchmarks/results")
    parser.add_argument(
        "--work-dir",
        default=None,
        help="runs' logs, checkpoints and results (default: lightning_logs/bench_runs/<target>); "
        "rerunning the same command reuses the runs that finished and resumes those interrupted",
    )
    parser.add_argument("extra", nargs="*", help="more CLI arguments for every run, after --")
    args = parser.parse_args()
    stop_fits_on_sigterm()

    measured = provenance()  # at the start: the commit whose code the runs import
    sources = args.sources or default_sources(args.target)
    extra = list(args.extra) + (["--data.init_args.data_root", args.data_root] if args.data_root else [])
    out_dir = Path(args.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = out_dir / args.target
    try:
        kept = earlier_results(stem.with_suffix(".json"), args.variants, sources, args.source_epochs, args.seeds)
    except ValueError as e:
        parser.error(str(e))
    with tempfile.TemporaryDirectory(prefix="rec_transfer_variants_") as tmp:
        configs = {}
        for variant in args.variants:
            path = Path(tmp) / f"{variant}.yaml"
            path.write_text(yaml.safe_dump(variant_config(variant, args.target, sources, args.source_epochs)))
            configs[variant] = path
        work_dir = args.work_dir or f"lightning_logs/bench_runs/{args.target}"
        print(f"runs go to {work_dir} (finished ones there are reused, interrupted ones resumed)", flush=True)
        results = bench_configs(configs, args.seeds, extra, parallel=args.parallel, work_dir=work_dir)
    for variant, res in results.items():
        res["config"] = config_name(variant)  # the temporary file is gone; name the shipped one
        res["provenance"] = measured
    results = in_table_order(results | kept)
    report = {
        **measured,
        "note": "each variant's provenance: the command that measured it; per_seed git_commit: the code each "
        "run imported (a rerun reuses runs that finished earlier)",
        "target": args.target,
        "sources": sources,
        "source_epochs": args.source_epochs,
        "seeds": args.seeds,
        "ties": "pessimistic: items scored equal to the target rank above it",
        "zero_shot": "the source-trained model tested on the target before any target training",
        "results": results,
        # Published numbers train on the whole target: not comparable when the runs train on a part of it.
        "published": {} if any("train_users" in arg for arg in extra) else PUBLISHED.get(args.target, {}),
    }
    table = write_report(report, stem)
    print("\n" + table)
    print(f"wrote {stem}.json, .md, .png")


if __name__ == "__main__":
    main()
