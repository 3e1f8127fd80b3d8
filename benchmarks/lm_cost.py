"""What training the language model in the loop costs: one Scientific training epoch and a full-ranking test of
every user, with the language model frozen (its pooled vectors cached) and with its top layer(s) trained inside the
recommender, in float32 or under bf16 autocast.

    python -m benchmarks.lm_cost --data-root ../shared/data [--model minilm] [--train-layers 0 1] \
        [--precision 32-true bf16-mixed] [--reuse]

Each row runs in a fresh process (benchmarks.scale's rows: seconds, CPU seconds, peak RSS), one per model, layer
count and precision. Writes ``benchmarks/results/lm_in_the_loop/cost.json`` and ``cost.md`` for MiniLM,
``cost_<model>.json`` / ``.md`` for another model; the quality of these settings is in docs/findings.md.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from benchmarks.runs import provenance
from benchmarks.scale import run_row, scientific_config

TEXT_LR = 1e-5  # the language model's learning rate in the loop (model.text_lr)


def lm_config(data_root: str, cache_dir: Path, train_layers: int, model: str = "minilm") -> dict:
    """The shipped Scientific text config with ``model`` for the item texts and its top ``train_layers`` layers
    trained (0: frozen)."""
    cfg = scientific_config("text", data_root, cache_dir, None)
    encoder = cfg["data"]["init_args"]["target"]["init_args"]["text_encoder"]
    encoder["model_name"] = model
    if train_layers:
        encoder["train_layers"] = train_layers
        cfg["model"]["text_lr"] = TEXT_LR
    return cfg


def markdown(report: dict) -> str:
    lines = [
        f"# The language model in the loop: cost on Scientific ({report.get('model', 'minilm')})",
        "",
        f"`{report['command']}` at commit `{report['git_commit']}`, {report['when']}; "
        + ", ".join(f"{k} {v}" for k, v in report["machine"].items()),
        "",
        "| layers trained | precision | s / train epoch | CPU s / train epoch | s / test of every user "
        "| peak RSS (MB) |",
        "|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['train_layers']} | {r.get('precision', '32-true')} | {r['train_epoch_s']} | {r['train_cpu_s']} "
            f"| {r['eval_s']} | {r['peak_rss_mb']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="../shared/data", help="folder holding amazon/Scientific")
    parser.add_argument("--model", default="minilm", help="the item text model: a short name, path or hub id")
    parser.add_argument("--train-layers", type=int, nargs="+", default=[0, 1], help="0: the frozen reference")
    parser.add_argument("--precision", nargs="+", default=["32-true"], help="Trainer precisions, e.g. bf16-mixed")
    parser.add_argument("--work-dir", default="lightning_logs/bench_lm_cost")
    parser.add_argument("--reuse", action="store_true", help="read back finished rows of the same commit and config")
    parser.add_argument("--output-dir", default="benchmarks/results/lm_in_the_loop")
    args = parser.parse_args()

    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data_root = str(Path(args.data_root).resolve())
    rows = []
    for layers in args.train_layers:
        for precision in args.precision:
            cfg = lm_config(data_root, work / "cache", layers, args.model)
            name = f"Scientific_{args.model}{layers}_{precision}".replace("/", "_")
            row = run_row(name, cfg, work, args.reuse, {"precision": precision})
            rows.append(row | {"train_layers": layers, "precision": precision})
    threads = os.environ.get("OMP_NUM_THREADS")
    report = {**provenance(), "model": args.model, "threads": threads, "text_lr": TEXT_LR, "rows": rows}
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = "cost" if args.model == "minilm" else f"cost_{Path(args.model).name}"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / f"{stem}.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
