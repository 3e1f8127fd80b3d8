"""The summary a fit prints when it ends: test metrics of the tested checkpoint, the zero-shot point, the target-only
comparison (with its standard error over the test users), the best validation epoch, and where results, checkpoints
and TensorBoard logs went."""

from __future__ import annotations

import re
from typing import Any

CUTOFF = re.compile(r"^ndcg@(\d+)$")


def _row(label: str, metrics: dict[str, float], prefix: str, columns: list[str]) -> str:
    cells = [f"{metrics[prefix + c]:>11.4f}" if prefix + c in metrics else " " * 11 for c in columns]
    return f"{label:<14}" + "".join(cells)


def _best(run: dict[str, Any]) -> str:
    best = run.get("best_validation")
    if not best:
        return "no target validation"
    text = f"best validation NDCG@10 {best['ndcg@10']:.4f} at epoch {best['epoch']}"
    epochs, switch = run.get("epochs"), run.get("switch_epoch")
    sources = f"; the first {switch} on the sources" if switch else ""  # the rest are what the baseline had
    if run.get("stopped_early"):
        text += f" (stopped early after epoch {epochs - 1}{sources})" if epochs else " (stopped early)"
    elif epochs:
        still = "; still improving at the last: more epochs may score higher" if best["epoch"] == epochs - 1 else ""
        text += f" (of {epochs} epochs{sources}{still})"
    return text


# Fewer test users than this: their standard error is itself too rough to lean on.
FEW_USERS = 30


def _verdict(gap: dict[str, float], users: int) -> str:
    """What one metric's gap says (``paired_difference``): a side ahead only beyond two standard errors."""
    if users < 2:
        return "one test user: no standard error, no verdict"
    if gap["standard_error"] == 0:  # every user's difference is the same: no spread, and no z (reported as 0)
        if gap["difference"] == 0:
            return "level: the same on every test user"
        return f"{'transfer' if gap['difference'] > 0 else 'target only'} ahead by as much on every test user"
    if gap["z"] >= 2:
        return "transfer ahead"
    if gap["z"] <= -2:
        return "target only ahead"
    return "level: within what the draw of test users alone could make"


def _comparison(tested: dict[str, float], baseline: dict[str, float], prefix: str, comparison: dict | None) -> list:
    """Transfer against the target-only baseline, NDCG@10 and Recall@10, each gap with its standard error over the
    test users (``paired_comparison``) and what it says; without the users' scores, the gaps alone."""
    names = [m for m in ("ndcg@10", "recall@10") if prefix + m in tested and prefix + m in baseline]
    label = {"ndcg@10": "NDCG@10", "recall@10": "Recall@10"}
    if not comparison or not all(m in comparison for m in names):
        gaps = ", ".join(f"{label[m]} {tested[prefix + m] - baseline[prefix + m]:+.4f}" for m in names)
        return [f"transfer − target only on the test split: {gaps} (no per-user scores: no standard error)"]
    users = comparison["users"]
    who = "test user" if users == 1 else "test users"
    lines = [f"transfer − target only on the same {users} {who} (± standard error; one training seed):"]
    for m in names:
        gap = comparison[m]
        lines.append(
            f"  {label[m]:<10}{gap['difference']:+.4f} ± {gap['standard_error']:.4f}  z {gap['z']:+.1f}  "
            + _verdict(gap, users)
        )
    if 1 < users < FEW_USERS:
        lines.append(f"  only {users} test users: too few for these standard errors to mean much")
    return lines


def format_summary(results: dict[str, Any]) -> str:
    """The printed summary of a fit's ``results.json`` content (see ``RecTransferCLI.after_fit``)."""
    target, sources = results.get("target", "target"), results.get("sources") or []
    main = "transfer" if sources else "target_only"
    prefix = f"test/{target}/"
    tested = results.get(main) or {}
    ks = sorted({int(m.group(1)) for k in tested if k.startswith(prefix) and (m := CUTOFF.match(k[len(prefix) :]))})
    columns = [f"{name}@{k}" for k in ks for name in ("ndcg", "recall")] + ["mrr"]
    header = [c.replace("ndcg", "NDCG").replace("recall", "Recall").replace("mrr", "MRR") for c in columns]
    title = f"{target} ← {', '.join(sources)}" if sources else f"{target} (no source domains)"
    lines = [
        f"── result: {title} " + "─" * max(0, 60 - len(title)),
        f"{'test split':<14}" + "".join(f"{h:>11}" for h in header),
    ]
    zero_shot = results.get("zero_shot") or {}
    if any(k.startswith(f"zeroshot_test/{target}/") for k in zero_shot):
        lines.append(_row("zero-shot", zero_shot, f"zeroshot_test/{target}/", columns))
    never_switched = bool(sources) and "switch_epoch" in results and results["switch_epoch"] is None
    if tested:
        label = "sources only" if never_switched else "transfer" if sources else "target only"
        lines.append(_row(label, tested, prefix, columns))
    baseline = results.get("target_only") if sources else None
    if never_switched:
        lines.append("the fit ended before the switch to the target: raise max_epochs above source_epochs to transfer")
    if baseline:
        lines.append(_row("target only", baseline, prefix, columns))
        if prefix + "ndcg@10" in tested and prefix + "ndcg@10" in baseline and not never_switched:
            lines += _comparison(tested, baseline, prefix, results.get("comparison"))
    lines.append("")
    run = results.get("run", {})
    if never_switched:
        lines.append(f"{'sources only':<14}the test row is the weights after the last source epoch")
    else:
        lines.append(f"{'transfer' if sources else 'training':<14}{_best(results)}; the test row is that checkpoint")
    if baseline and results.get("target_only_run"):
        lines.append(f"{'target only':<14}{_best(results['target_only_run'])}")
    if run.get("results_json"):
        lines.append(f"{'results':<14}{run['results_json']}")
    if run.get("best_checkpoint"):
        lines.append(f"{'checkpoint':<14}{run['best_checkpoint']} (the best; last.ckpt beside it resumes)")
    if run.get("handover"):
        lines.append(f"{'handover':<14}{run['handover']} (the source-trained model: --model.pretrained)")
    if run.get("log_dir"):
        lines.append(f"{'tensorboard':<14}tensorboard --logdir {run['log_dir']}")
    return "\n".join(lines)
