"""The scale benchmark's goals (PASS/FAIL), its table printed and as Markdown (``benchmarks.scale``)."""

from __future__ import annotations

import resource
from pathlib import Path

GIB = 1024.0  # MB per GiB
RSS_LIMIT_GB = 12
EVAL_SLACK = 0.8  # users/s × items at 1M may be this fraction of that at 100k: "roughly constant or better"
TRAIN_RATIO = 2.0
EPOCH_RATIO = 2.0


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB, since it started its program.

    Read from ``/proc/self/status`` (VmHWM) where there is one: ``getrusage``'s ``ru_maxrss`` keeps the peak of the
    process image before ``exec``, so a child started from a large parent reports at least the parent's size.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def _synthetic(rows: list[dict], items: int) -> dict | None:
    return next((r for r in rows if r["domain"].startswith("synthetic") and r["items"] == items), None)


def _peak_gb(row: dict) -> float:
    return max(row["peak_rss_mb"], row.get("prepare", {}).get("peak_rss_mb", 0.0)) / GIB


def _per_cpu_second(low: dict, high: dict, key: str) -> str:
    """The same ratio in CPU seconds (less sensitive to other jobs on the machine), when both rows have it."""
    if key not in low or key not in high:
        return ""
    return f"; per CPU second x{high[key] / low[key]:.2f}"


def check_goals(rows: list[dict], scientific: dict | None) -> list[dict]:
    """Each goal with ``passed`` (None when its rows were not run) and the numbers that decide it."""
    goals = []
    big, mid, small = _synthetic(rows, 1_000_000), _synthetic(rows, 100_000), _synthetic(rows, 10_000)

    goal = "1M items, >= 5M interactions: one epoch and a full-ranking test of every user, "
    goal += f"peak RSS < {RSS_LIMIT_GB} GB"
    if big is None:
        goals.append({"goal": goal, "passed": None, "detail": "1M row not run"})
    else:
        peak = _peak_gb(big)
        passed = big["interactions"] >= 5_000_000 and peak < RSS_LIMIT_GB
        detail = f"{big['interactions']:,} interactions, {big['users']:,} users tested; peak RSS {peak:.2f} GB"
        detail += f" (train+test {big['peak_rss_mb'] / GIB:.2f}, prepare {big['prepare']['peak_rss_mb'] / GIB:.2f})"
        goals.append({"goal": goal, "passed": passed, "detail": detail})

    goal = f"evaluation cost at most linear in the catalogue: users/s x items at 1M >= {EVAL_SLACK} x at 100k"
    if big is None or mid is None:
        goals.append({"goal": goal, "passed": None, "detail": "100k or 1M row not run"})
    else:
        ratio = big["eval_user_items_per_s"] / mid["eval_user_items_per_s"]
        detail = f"{mid['eval_user_items_per_s']:.3g} at 100k, {big['eval_user_items_per_s']:.3g} at 1M: x{ratio:.2f}"
        detail += _per_cpu_second(mid, big, "eval_user_items_per_cpu_s")
        goals.append({"goal": goal, "passed": ratio >= EVAL_SLACK, "detail": detail})

    goal = f"training cost per target within {TRAIN_RATIO:g}x from 10k to 1M items (sampled softmax)"
    if big is None or small is None:
        goals.append({"goal": goal, "passed": None, "detail": "10k or 1M row not run"})
    else:
        ratio = small["train_targets_per_s"] / big["train_targets_per_s"]
        detail = f"{small['train_targets_per_s']:.0f} targets/s at 10k, {big['train_targets_per_s']:.0f} at 1M: "
        detail += f"{ratio:.2f}x the cost" + _per_cpu_second(big, small, "train_targets_per_cpu_s")
        passed = ratio <= TRAIN_RATIO and small["loss"] == big["loss"] == "sampled"
        goals.append({"goal": goal, "passed": passed, "detail": detail})

    goal = f"Scientific: text epoch <= {EPOCH_RATIO:g}x the SASRec epoch, with the text recipe's own loss"
    if scientific is None:
        goals.append({"goal": goal, "passed": None, "detail": "Scientific not run"})
    else:
        ratio = scientific["text_epoch_s"] / scientific["sasrec_epoch_s"]
        detail = f"text ({scientific['text_loss']}) {scientific['text_epoch_s']:.1f} s, SASRec "
        detail += f"{scientific['sasrec_epoch_s']:.1f} s: x{ratio:.1f}"
        goals.append({"goal": goal, "passed": ratio <= EPOCH_RATIO, "detail": detail})
    return goals


COLUMNS = [
    ("domain", "domain", "{}"),
    ("model", "model", "{}"),
    ("loss", "loss", "{}"),
    ("items", "items", "{:,}"),
    ("users", "users", "{:,}"),
    ("interactions", "interactions", "{:,}"),
    ("train targets/s", "train_targets_per_s", "{:,.0f}"),
    ("epoch s", "train_epoch_s", "{:.1f}"),
    ("train targets/CPU s", "train_targets_per_cpu_s", "{:,.0f}"),
    ("eval users/s", "eval_users_per_s", "{:,.0f}"),
    ("users x items/s", "eval_user_items_per_s", "{:.3g}"),
    ("users x items/CPU s", "eval_user_items_per_cpu_s", "{:.3g}"),
    ("eval s", "eval_s", "{:.1f}"),
    ("peak RSS MB", "peak_rss_mb", "{:,.0f}"),
    ("prepare RSS MB", "prepare_rss_mb", "{:,.0f}"),
    ("prepare s", "prepare_s", "{:.0f}"),
]


def _cells(row: dict) -> list[str]:
    prepare = row.get("prepare", {})
    flat = row | {
        "prepare_rss_mb": prepare.get("peak_rss_mb", float("nan")),
        "prepare_s": prepare.get("read_preprocess_s", 0.0) + prepare.get("text_vectors_s", 0.0),
    }
    return [fmt.format(flat.get(key, float("nan"))) for _, key, fmt in COLUMNS]


def goal_lines(report: dict) -> list[str]:
    mark = {True: "PASS", False: "FAIL", None: "NOT RUN"}
    return [f"{mark[g['passed']]}: {g['goal']} ({g['detail']})" for g in report["goals"]]


def quality_lines(report: dict) -> list[str]:
    quality = (report.get("scientific") or {}).get("quality")
    if not quality:
        return []
    return [
        f"Scientific text model, {loss} softmax, trained to early stopping (seed 0, one thread): test NDCG@10 "
        f"{q['test_ndcg@10']:.4f}, Recall@10 {q['test_recall@10']:.4f}, {q['epochs']} epochs of "
        f"{q['mean_train_epoch_s']:.1f} s"
        for loss, q in quality.items()
    ]


def print_table(report: dict) -> None:
    table = [[name for name, _, _ in COLUMNS]] + [_cells(r) for r in report["rows"]]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    for row in table:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
    for line in goal_lines(report) + quality_lines(report):
        print(line)


def markdown(report: dict) -> str:
    lines = [
        "# Scale: one training epoch and a full-ranking test of every user, by catalogue size",
        "",
        f"Command: `{report['command']}`; environment {report.get('environment')}; commit `{report['git_commit']}`; "
        f"{report['machine']['device']}, {report['machine']['threads']} threads; {report['when']}; load average "
        f"(1 min) {report.get('load_avg_1min')} at start and end.",
        "",
        *[f"- {what}: {how}" for what, how in report.get("settings", {}).items()],
        "",
        "| " + " | ".join(name for name, _, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(_cells(r)) + " |" for r in report["rows"]]
    lines += ["", *[f"- {line}" for line in goal_lines(report) + quality_lines(report)], ""]
    return "\n".join(lines)
