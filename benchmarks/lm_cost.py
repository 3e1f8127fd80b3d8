"""What training the language model in the loop costs: one Scientific training epoch and a full-ranking test of
every user, with MiniLM frozen (its pooled vectors cached) and with its top layer(s) trained inside the recommender.

    python -m benchmarks.lm_cost --data-root ../shared/data [--train-layers 1 2] [--reuse]

Each row runs in a fresh process (benchmarks.scale's rows: seconds, CPU seconds, peak RSS). Writes
``benchmarks/results/lm_in_the_loop/cost.json`` and ``cost.md``; the quality of these settings is in docs/findings.md.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from benchmarks.runs import provenance
from benchmarks.scale import run_row, scientific_config

TEXT_LR = 1e-5  # the language model's learning rate in the loop (model.text_lr)


def lm_config(data_root: str, cache_dir: Path, train_layers: int) -> dict:
    """The shipped Scientific text config, with MiniLM's top ``train_layers`` layers trained (0: frozen)."""
    cfg = scientific_config("text", data_root, cache_dir, None)
    if train_layers:
        cfg["data"]["init_args"]["target"]["init_args"]["text_encoder"]["train_layers"] = train_layers
        cfg["model"]["text_lr"] = TEXT_LR
    return cfg


def markdown(report: dict) -> str:
    lines = [
        "# The language model in the loop: cost on Scientific",
        "",
        f"`{report['command']}` at commit `{report['git_commit']}`, {report['when']}; "
        + ", ".join(f"{k} {v}" for k, v in report["machine"].items()),
        "",
        "| MiniLM layers trained | s / train epoch | CPU s / train epoch | s / test of every user | peak RSS (MB) |",
        "|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['train_layers']} | {r['train_epoch_s']} | {r['train_cpu_s']} | {r['eval_s']} | {r['peak_rss_mb']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data", help="folder holding amazon/Scientific")
    parser.add_argument("--train-layers", type=int, nargs="+", default=[0, 1], help="0: the frozen reference")
    parser.add_argument("--work-dir", default="lightning_logs/bench_lm_cost")
    parser.add_argument("--reuse", action="store_true", help="read back finished rows of the same commit and config")
    parser.add_argument("--output-dir", default="benchmarks/results/lm_in_the_loop")
    args = parser.parse_args()

    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data_root = str(Path(args.data_root).resolve())
    rows = []
    for layers in args.train_layers:
        cfg = lm_config(data_root, work / "cache", layers)
        rows.append(run_row(f"Scientific_lm{layers}", cfg, work, args.reuse) | {"train_layers": layers})
    report = {**provenance(), "threads": os.environ.get("OMP_NUM_THREADS"), "text_lr": TEXT_LR, "rows": rows}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cost.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "cost.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
