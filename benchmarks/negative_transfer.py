"""Why does transfer (not) help? Pre-train once on the sources, then fine-tune on the target in several ways.

Fine-tuning strategies, all from the same pre-trained weights (``--model.pretrained``) and compared
with the same model trained from scratch on the target:
  full          every weight trained, fresh optimizer at the source learning rate
  full_lr1e-4   every weight trained at a 10x lower learning rate (less forgetting)
  adaptor_only  the sequence encoder frozen, only the text adaptor trained (UniSRec's recipe)
  text+id       full fine-tuning plus a new ID embedding per target item (zero-initialised)
  adaptor+id    the encoder frozen; adaptor and new target ID embeddings trained (UniSRec's transductive recipe)

Writes benchmarks/results/negative_transfer/<target>.json (``_seed<N>`` added for seeds other than 0) and
prints a table.

Example:
    python -m benchmarks.negative_transfer --target Scientific --sources Office Food ml-100k --source-epochs 4
    # another fine-tuning seed from the same pre-trained weights
    python -m benchmarks.negative_transfer ... --save-pretrained pre.ckpt   # then:
    python -m benchmarks.negative_transfer ... --pretrained pre.ckpt --strategies adaptor_only --seed 1
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import yaml

from benchmarks.runs import portable, provenance, run_seed, stop_fits_on_sigterm, zero_shot_test
from benchmarks.transfer_table import default_sources, variant_config
from benchmarks.variants import DOMAINS

# Ways to fine-tune the pre-trained weights on the target (the module docstring says what each does).
STRATEGIES = {
    "scratch": {"pretrained": False},
    "full": {},
    "full_lr1e-4": {"model": {"lr": 1e-4}},
    "adaptor_only": {"freeze": ["encoder"]},
    "text+id": {"model": {"mode": "text+id"}},
    "adaptor+id": {"model": {"mode": "text+id"}, "freeze": ["encoder"]},
}


def finetune_config(target: str, strategy: str, pretrained: Path) -> dict:
    """The text target-only config, started from ``pretrained`` weights as ``strategy`` says."""
    spec = STRATEGIES[strategy]
    cfg = variant_config("text_target_only", target, [])
    cfg["model"] = {**cfg["model"], "target_lr": None, **spec.get("model", {})}  # fine-tuning trains at its lr
    if spec.get("pretrained", True):
        cfg["model"]["pretrained"] = str(pretrained)
        # No sources: DomainTransfer switches at epoch 0, i.e. it freezes what is asked and evaluates
        # the pre-trained weights zero-shot on the target before the first step.
        transfer = {"class_path": "rec_transfer.callbacks.DomainTransfer",
                    "init_args": {"source_epochs": 0, "freeze": spec.get("freeze", [])}}  # fmt: skip
        cfg["trainer"]["callbacks"].insert(0, transfer)
    return cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", choices=sorted(DOMAINS), default="Scientific")
    parser.add_argument("--sources", choices=sorted(DOMAINS), nargs="+", help="default: every other domain")
    parser.add_argument("--source-epochs", type=int, default=8)
    parser.add_argument("--strategies", choices=list(STRATEGIES), nargs="+", default=list(STRATEGIES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pretrained", default=None, help="skip pre-training: fine-tune this checkpoint's weights")
    parser.add_argument(
        "--save-pretrained", default=None, help="copy the pre-trained checkpoint here, for --pretrained"
    )
    parser.add_argument(
        "--output", default=None, help="default: benchmarks/results/negative_transfer/<target>[_seed<seed>].json"
    )
    parser.add_argument("extra", nargs="*", help="more CLI arguments for every run, after --")
    args = parser.parse_args()
    stop_fits_on_sigterm()

    sources = args.sources or default_sources(args.target)
    suffix = f"_seed{args.seed}" if args.seed else ""  # another seed never overwrites seed 0's report
    out = Path(args.output or f"benchmarks/results/negative_transfer/{args.target}{suffix}.json")
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="rec_transfer_study_") as tmp:
        tmp = Path(tmp)
        # 1. Pre-train on the sources only: the transfer config stopped at the switch.
        if args.pretrained:
            pretrained = Path(args.pretrained)
            results["pretrain"] = {"checkpoint": portable(pretrained)}
        else:
            # Exactly source_epochs on the sources, no switch: the zero-shot variant of the transfer table.
            cfg = variant_config("zero_shot_text", args.target, sources, args.source_epochs)
            (tmp / "pretrain_base.yaml").write_text(yaml.safe_dump(cfg))
            pre = run_seed(tmp / "pretrain_base.yaml", args.seed, "pretrain", args.extra, tmp)
            pretrained = tmp / "checkpoints" / "pretrain" / "last.ckpt"
            if args.save_pretrained:  # the temporary folder goes at the end; later seeds can fine-tune this copy
                Path(args.save_pretrained).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(pretrained, args.save_pretrained)
            keys = ("fit_seconds", "epochs", "mean_train_epoch_seconds", "val_history")
            # Its test = the best source-phase checkpoint (by target validation) on the target: zero-shot.
            results["pretrain"] = {k: pre[k] for k in keys} | {"zero_shot_test": pre.get("transfer")}
            print(f"pre-trained on {', '.join(sources)}: {pre['epochs']} epochs, {pre['fit_seconds']} s", flush=True)
        write_report(args, sources, results, out)
        # 2. Fine-tune the same weights in each way.
        for strategy in args.strategies:
            path = tmp / f"{strategy}_base.yaml"
            path.write_text(yaml.safe_dump(finetune_config(args.target, strategy, pretrained)))
            r = run_seed(path, args.seed, strategy, args.extra, tmp)
            results[strategy] = {
                "test": r["target_only"],
                "zero_shot": zero_shot_test(r),
                **{k: r[k] for k in ("fit_seconds", "epochs", "mean_train_epoch_seconds", "val_history")},
            }
            print(f"{strategy}: {json.dumps(results[strategy]['test'])}", flush=True)
            write_report(args, sources, results, out)  # after every run: a long study keeps what it finished
    t = args.target
    print(f"\n{'strategy':<14}{'NDCG@10':>9}{'R@10':>8}{'NDCG@50':>9}{'R@50':>8}{'epochs':>8}  zero-shot NDCG@10")
    for strategy in args.strategies:
        r = results[strategy]
        m = [r["test"][f"test/{t}/{k}"] for k in ("ndcg@10", "recall@10", "ndcg@50", "recall@50")]
        zero = r["zero_shot"].get(f"zeroshot_test/{t}/ndcg@10", "")
        print(f"{strategy:<14}{m[0]:>9.4f}{m[1]:>8.4f}{m[2]:>9.4f}{m[3]:>8.4f}{r['epochs']:>8}  {zero}")
    print(f"wrote {out}")


def write_report(args: argparse.Namespace, sources: list[str], results: dict, out: Path) -> None:
    report = {
        **provenance(),
        "target": args.target,
        "sources": sources,
        "source_epochs": args.source_epochs,
        "seed": args.seed,
        "results": results,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
