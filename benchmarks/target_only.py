"""Scientific, target only: SASRec (IDs) and the text model from scratch, over seeds, against the papers.

Writes benchmarks/results/scientific_target_only.json (git commit, command, machine, per-seed metrics,
mean/std, seconds per training epoch) and prints a table. With ``--only``, the other models' results
already in the file are kept, each with the command and commit that measured it.

Example:
    python -m benchmarks.target_only --seeds 0 1 2 [--data-root ../shared/data]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import transfer_table
from benchmarks.runs import bench_configs, not_rerun, provenance

PAPERS = transfer_table.PUBLISHED["Scientific"]  # UniSRec (KDD 2022) and VQ-Rec (WWW 2023), same split
PUBLISHED = {
    name: {f"test/Scientific/{metric}": value for metric, value in PAPERS[paper].items()}
    for name, paper in (("sasrec", "SASRec (UniSRec paper)"), ("text_target_only", "SASRec_T (VQ-Rec paper)"))
}
CONFIGS = {"sasrec": "configs/scientific_sasrec.yaml", "text_target_only": "configs/scientific_target_only.yaml"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-root", default=None, help="folder holding amazon/Scientific (default: the configs')")
    parser.add_argument("--only", choices=sorted(CONFIGS), nargs="+", default=sorted(CONFIGS))
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time (e.g. several on one GPU)")
    parser.add_argument("--output", default="benchmarks/results/scientific_target_only.json")
    parser.add_argument(
        "--work-dir",
        default="lightning_logs/bench_runs/target_only",
        help="runs' logs, checkpoints and results; rerunning the same command reuses the runs that finished",
    )
    parser.add_argument("extra", nargs="*", help="more CLI arguments for every run, after --")
    args = parser.parse_args()

    measured = provenance()  # at the start, the commit the runs import: the report's header and every model rerun now
    extra = list(args.extra) + (["--data.init_args.data_root", args.data_root] if args.data_root else [])
    configs = {k: CONFIGS[k] for k in args.only}
    results = bench_configs(configs, args.seeds, extra, parallel=args.parallel, work_dir=args.work_dir)
    for res in results.values():
        res["provenance"] = measured
    output = Path(args.output)
    if output.exists():  # models not rerun this time keep their earlier results
        results |= not_rerun(json.loads(output.read_text()), results)
    report = {
        **measured,
        "note": "each model's results carry the command and commit that measured them (provenance)",
        "ties": "pessimistic: items scored equal to the target rank above it",
        "results": {name: results[name] for name in sorted(results)},
        "published": PUBLISHED,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2))
    print(f"\n{'model':<18}{'metric':<26}{'ours (mean ± std)':>22}{'published':>11}")
    for name in configs:
        res = results[name]
        for metric, s in res["summary"].items():
            pub = PUBLISHED[name].get(metric)
            print(f"{name:<18}{metric:<26}{s['mean']:>14.4f} ± {s['std']:.4f}{pub if pub else '':>11}")
        print(f"{name:<18}{'train seconds / epoch':<26}{res['mean_train_epoch_seconds']:>22}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
