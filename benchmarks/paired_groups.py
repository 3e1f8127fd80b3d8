"""Where one model leads another: the paired comparison of ``benchmarks.paired`` within groups of test users, by how
often their held-out item is a training target of the target domain (0: a cold item) and by their history's length.

    python -m benchmarks.paired_groups --a RUN_FOLDER [--a ...] --b RUN_FOLDER [--b ...] [--data-root ../shared/data] \
        [--output F]

Each ``--a`` / ``--b`` is a fit's run folder (its ``config.yaml`` and ``test_users.pt``); the i-th ``--a`` is paired
with the i-th ``--b``, one pair per seed, all on one target (the groups come from the first ``--a``'s data). For each
group and metric: its users, both models' means over the seeds, and the difference A - B pooled over the seeds with its
standard error (``benchmarks.paired.pooled``). Prints a table and writes JSON with the command and commit (default
``paired_groups.json`` beside the first ``--a``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from benchmarks.paired import METRICS, pooled, scores_of
from benchmarks.runs import portable, provenance
from benchmarks.trained import configured

# Inclusive (low, high) bounds of each group; None: no upper bound.
BINS = {
    "held_out_item_training_count": ((0, 0), (1, 4), (5, 19), (20, None)),
    "history_length": ((1, 4), (5, 6), (7, 9), (10, None)),
}


def user_features(data) -> dict[str, np.ndarray]:
    """Per user index of a set-up domain: how often its held-out test item is a training target, and how many items
    its test history holds (before any ``max_len`` cut)."""
    view = data.view("test")
    held_out = view.values[view.offsets[1:] - 1]
    return {
        "held_out_item_training_count": data.item_train_counts.numpy()[held_out],
        "history_length": np.diff(view.offsets) - 1,
    }


def label(low: int, high: int | None) -> str:
    return f"{low}+" if high is None else str(low) if low == high else f"{low}-{high}"


def grouped(a: list[dict], b: list[dict], features: dict[str, np.ndarray]) -> dict:
    """Per feature and group: users, the models' means over the pairs, and the pooled difference per metric."""
    users = a[0]["user"].numpy()
    report = {}
    for feature, bins in BINS.items():
        values = features[feature][users]
        report[feature] = {}
        for low, high in bins:
            mask = torch.from_numpy((values >= low) & (values <= (np.inf if high is None else high)))
            group = {"users": int(mask.sum())}
            if group["users"] > 1:
                for m in METRICS:
                    group[m] = {
                        "a": round(torch.stack([s[m][mask] for s in a]).double().mean().item(), 5),
                        "b": round(torch.stack([s[m][mask] for s in b]).double().mean().item(), 5),
                        **pooled([sa[m][mask] - sb[m][mask] for sa, sb in zip(a, b, strict=True)]),
                    }
            report[feature][label(low, high)] = group
    return report


def table(report: dict) -> str:
    """The groups as Markdown rows: users, then A / B and the difference ± standard error per metric."""
    lines = [f"| group | users | {' | '.join(f'{m}: A / B | A - B' for m in METRICS)} |", "|---|---|" + "---|---|" * 2]
    for feature, groups in report.items():
        for name, g in groups.items():
            cells = [f"{g[m]['a']:.4f} / {g[m]['b']:.4f} | {g[m]['difference']:+.4f} ± {g[m]['standard_error']:.4f}"
                     if m in g else "- | -" for m in METRICS]  # fmt: skip
            lines.append(f"| {feature} {name} | {g['users']} | {' | '.join(cells)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for side in ("--a", "--b"):
        parser.add_argument(side, action="append", required=True, metavar="RUN_FOLDER")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if len(args.a) != len(args.b):
        parser.error(f"give as many --b as --a (one pair per seed): {len(args.a)} --a, {len(args.b)} --b")
    a = [scores_of([folder], None) for folder in args.a]
    b = [scores_of([folder], None) for folder in args.b]
    if any(not torch.equal(s["user"], a[0]["user"]) for s in a + b):
        raise ValueError("every run must be tested on the same users (one target, one data set)")
    data = configured(Path(args.a[0]) / "config.yaml", args.data_root).datamodule.target
    runs = {"a": [portable(f) for f in args.a], "b": [portable(f) for f in args.b]}
    report = provenance() | runs | {"groups": grouped(a, b, user_features(data))}
    print(table(report["groups"]))
    out = Path(args.output or Path(args.a[0]) / "paired_groups.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
