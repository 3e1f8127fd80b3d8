"""Speed against RecBole, the report side (pure): one of our runs against one RecBole run, and many against many.

``benchmarks/vs_recbole.py`` trains both and calls :func:`compare`; ``benchmarks/pool_vs_recbole.py`` pools the
runs of several earlier reports (RecBole with several seeds, ours with several) with :func:`pool`.
"""

from __future__ import annotations

from benchmarks.stats import best_validation, spread


def _first_reaching(history: list[dict], threshold: float | None) -> dict | None:
    if threshold is None:
        return None
    return next((h for h in history if h["ndcg@10"] >= threshold), None)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def recbole_summary(recbole: dict) -> dict:
    """The headline figures of one RecBole runner JSON."""
    rb_epochs = recbole.get("train_epoch_seconds", [])
    return {
        "seconds_per_train_epoch": round(sum(rb_epochs) / len(rb_epochs), 4) if rb_epochs else None,
        "best_val_ndcg@10": recbole.get("best_val_ndcg@10"),
        "best_epoch": recbole.get("best_epoch"),
        "seconds_to_best": recbole.get("seconds_to_best"),
        "test_ndcg@10": recbole.get("test", {}).get("ndcg@10"),
        "test_recall@10": recbole.get("test", {}).get("recall@10"),
        "epochs_run": recbole.get("epochs_run", len(recbole.get("val_history", []))),
        "fit_seconds": recbole.get("fit_seconds"),
    }


def compare(ours: dict, recbole: dict, domain: str, patience: int, max_epochs: int) -> dict:
    """One dataset's comparison of our results JSON (``run_seed``) and the RecBole runner's JSON.

    ``patience`` and ``max_epochs`` are our run's; they tell whether our early stopping fired.
    """
    ours_hist = ours.get("val_history", [])
    ours_best = best_validation(ours_hist)
    test = ours.get("target_only", {})
    ours_summary = {
        "seconds_per_train_epoch": ours.get("mean_train_epoch_seconds"),
        "best_val_ndcg@10": ours_best[1]["ndcg@10"] if ours_best else None,
        "best_epoch": ours_best[1]["epoch"] if ours_best else None,
        "seconds_to_best": ours_best[1]["seconds"] if ours_best else None,
        "test_ndcg@10": test.get(f"test/{domain}/ndcg@10"),
        "test_recall@10": test.get(f"test/{domain}/recall@10"),
        "epochs_run": len(ours_hist),
        "fit_seconds": ours.get("fit_seconds"),
    }
    rb_summary = recbole_summary(recbole)
    reached = _first_reaching(ours_hist, rb_summary["best_val_ndcg@10"])
    stopped = _stopped(recbole)
    recbole_converged = stopped == "early stopping"
    # Our early stopping fired if the run ended before the cap, or if the last `patience` validations did not improve.
    ours_converged = bool(ours_best) and (len(ours_hist) < max_epochs or len(ours_hist) - 1 - ours_best[0] >= patience)
    caveats = []
    if not recbole_converged:
        why = f"its time budget ({recbole['time_budget']:g} s)" if stopped == "time budget" else "its epoch cap"
        caveats.append(
            f"RecBole hit {why} after {rb_summary['epochs_run']} epochs, before early stopping: its best validation "
            "NDCG@10 (and its seconds to best) is a lower bound, it had not finished."
        )
    if not ours_converged:
        caveats.append(f"Ours hit its epoch cap ({len(ours_hist)} epochs) before early stopping.")
    if reached is None:
        caveats.append("Our validation NDCG@10 never reached RecBole's best: no time-to-quality speedup.")
    ours_test, rb_test = ours_summary["test_ndcg@10"], rb_summary["test_ndcg@10"]
    return {
        "ours": ours_summary,
        "recbole": rb_summary,
        "ours_seconds_to_recbole_best": reached["seconds"] if reached else None,
        "ours_epoch_to_recbole_best": reached["epoch"] if reached else None,
        "speedup_to_recbole_best": _ratio(rb_summary["seconds_to_best"], reached["seconds"] if reached else None),
        "train_epoch_speedup": _ratio(rb_summary["seconds_per_train_epoch"], ours_summary["seconds_per_train_epoch"]),
        "test_ndcg_ours_minus_recbole": round(ours_test - rb_test, 5)
        if ours_test is not None and rb_test is not None
        else None,
        "recbole_converged": recbole_converged,
        "ours_converged": ours_converged,
        "caveat": " ".join(caveats) or None,
    }


def across_seeds(per_seed: dict[str, dict]) -> dict:
    """Mean / min / max over our seeds (against the one RecBole run) of the headline figures."""

    def stats(key: str, side: str | None = None) -> dict | None:
        values = [(c[side] if side else c)[key] for c in per_seed.values()]
        if not values or any(v is None for v in values):
            return None  # e.g. a seed that never reached RecBole's best: no mean speedup
        return {k: v for k, v in spread(values).items() if k in ("mean", "min", "max")}

    return {
        "seeds": len(per_seed),
        "speedup_to_recbole_best": stats("speedup_to_recbole_best"),
        "train_epoch_speedup": stats("train_epoch_speedup"),
        "ours_seconds_to_recbole_best": stats("ours_seconds_to_recbole_best"),
        "ours_test_ndcg@10": stats("test_ndcg@10", "ours"),
        "ours_test_recall@10": stats("test_recall@10", "ours"),
        "test_ndcg_ours_minus_recbole": stats("test_ndcg_ours_minus_recbole"),
    }


def format_table(results: dict) -> str:
    """A readable side-by-side table of :func:`compare`'s outputs, by dataset."""

    def cell(v) -> str:
        if v is None:
            return "—"
        return f"{v:.4f}" if isinstance(v, float) and abs(v) < 1 else str(v)

    rows = [
        ("train seconds / epoch", "seconds_per_train_epoch"),
        ("seconds to best val", "seconds_to_best"),
        ("best epoch", "best_epoch"),
        ("epochs run", "epochs_run"),
        ("best val NDCG@10", "best_val_ndcg@10"),
        ("test NDCG@10 (at best)", "test_ndcg@10"),
        ("test Recall@10 (at best)", "test_recall@10"),
    ]
    lines = []
    for name, r in results.items():
        lines.append(f"\n{name}\n{'':<28}{'ours':>12}{'RecBole':>12}")
        lines += [f"{label:<28}{cell(r['ours'][k]):>12}{cell(r['recbole'][k]):>12}" for label, k in rows]
        lines.append(f"{'ours: seconds to RecBole best':<28}{cell(r['ours_seconds_to_recbole_best']):>12}")
        speedup = r["speedup_to_recbole_best"]
        lines.append(f"{'speedup to RecBole best':<28}{(f'{speedup}x' if speedup is not None else '—'):>12}")
        lines.append(f"{'test NDCG@10 ours − RecBole':<28}{cell(r['test_ndcg_ours_minus_recbole']):>12}")
        if r["caveat"]:
            lines.append(f"caveat: {r['caveat']}")
    return "\n".join(lines)


# ---------------------------------------------------------------- many runs against many


def pool(
    ours: dict[str, dict],
    recbole: dict[str, dict],
    domain: str,
    patience: int,
    max_epochs: dict[str, int],
    goal: float = 10.0,
) -> dict:
    """Every run of ours (by seed) against every RecBole run (by label), and each side's test figures over its runs.

    A single RecBole run is a poor yardstick when seeds move its test NDCG@10 by more than the gap being judged, so
    the test condition compares means over runs; the time condition must hold for every pairing. ``max_epochs`` is
    each of our runs' epoch cap (it tells whether our early stopping fired), ``goal`` the speedup asked for.
    """
    pairs = {
        o: {r: compare(run, rb, domain, patience, max_epochs[o]) for r, rb in recbole.items()}
        for o, run in ours.items()
    }
    speedups = {o: {r: c["speedup_to_recbole_best"] for r, c in row.items()} for o, row in pairs.items()}
    flat = [s for row in speedups.values() for s in row.values()]
    reached = [s for s in flat if s is not None]
    first = {o: next(iter(row.values())) for o, row in pairs.items()}  # our side is the same in every pairing
    ours_runs = {o: c["ours"] for o, c in first.items()}
    rb_runs = {r: {**recbole_summary(rb), "stopped": _stopped(rb)} for r, rb in recbole.items()}
    tests = {}
    for metric in ("test_ndcg@10", "test_recall@10"):
        mine, theirs = spread([s[metric] for s in ours_runs.values()]), spread([s[metric] for s in rb_runs.values()])
        tests[metric] = {"ours": mine, "recbole": theirs, "ours_minus_recbole": round(mine["mean"] - theirs["mean"], 5)}
    caveats = [
        f"RecBole {r} stopped on {s['stopped']}, before its own early stopping: a lower bound."
        for r, s in rb_runs.items()
        if s["stopped"] != "early stopping"
    ]
    caveats += [f"Ours seed {o} never reached RecBole {r}'s best validation." for o, row in speedups.items()
                for r, s in row.items() if s is None]  # fmt: skip
    caveats += [f"Ours seed {o} hit its epoch cap before early stopping." for o, c in first.items()
                if not c["ours_converged"]]  # fmt: skip
    return {
        "ours": ours_runs,
        "recbole": rb_runs,
        "speedup_to_recbole_best": speedups,
        "speedup": {
            "min": min(reached) if reached else None,
            "max": max(reached) if reached else None,
            "pairs": len(flat),
            "pairs_at_goal": sum(s >= goal for s in reached),
        },
        "test": tests,
        "goal": {
            "speedup": goal,
            "time_met": bool(reached) and len(reached) == len(flat) and min(reached) >= goal,
            "test_ndcg_met": tests["test_ndcg@10"]["ours_minus_recbole"] >= 0,
        },
        "caveats": caveats,
    }


def _stopped(recbole: dict) -> str:
    """Why a RecBole run ended: its own report's word, or (reports older than it) its early stopping flag."""
    if recbole.get("stopped"):
        return recbole["stopped"]
    return "early stopping" if recbole.get("stopped_early") else "epoch cap"


def format_pool(pooled: dict) -> str:
    """:func:`pool` as a Markdown table (one column per RecBole run) and the two conditions in words."""
    rb, ours = pooled["recbole"], pooled["ours"]
    cols = list(rb)
    lines = ["| | " + " | ".join(f"RecBole {r}" for r in cols) + " |", "|---" * (len(cols) + 1) + "|"]

    def row(label: str, cell) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(r) for r in cols) + " |")

    row("train seconds / epoch", lambda r: f"{rb[r]['seconds_per_train_epoch']:.0f}")
    row("epochs run (ended by)", lambda r: f"{rb[r]['epochs_run']} ({rb[r]['stopped']})")
    row("best validation NDCG@10 (epoch)", lambda r: f"{rb[r]['best_val_ndcg@10']:.4f} ({rb[r]['best_epoch']})")
    row("seconds to best validation", lambda r: f"{rb[r]['seconds_to_best']:.0f}")
    row("test NDCG@10 / Recall@10", lambda r: f"{rb[r]['test_ndcg@10']:.4f} / {rb[r]['test_recall@10']:.4f}")
    for o in ours:
        s = pooled["speedup_to_recbole_best"][o]
        row(f"ours seed {o}: × sooner to it", lambda r, s=s: "never" if s[r] is None else f"{s[r]:.1f}")
    t, g, sp = pooled["test"], pooled["goal"], pooled["speedup"]
    n, r10 = t["test_ndcg@10"], t["test_recall@10"]
    lines += [
        "",
        f"time: {sp['pairs_at_goal']} of {sp['pairs']} pairings at least {g['speedup']:g}× sooner "
        f"(min {sp['min']}, max {sp['max']}): {'met' if g['time_met'] else 'not met'}",
        f"test NDCG@10: ours {n['ours']['mean']:.4f} ± {n['ours']['std']:.4f} over {n['ours']['n']} seeds, RecBole "
        f"{n['recbole']['mean']:.4f} ± {n['recbole']['std']:.4f} over {n['recbole']['n']} runs, difference "
        f"{n['ours_minus_recbole']:+.4f}: {'met' if g['test_ndcg_met'] else 'not met'}",
        f"test Recall@10: ours {r10['ours']['mean']:.4f}, RecBole {r10['recbole']['mean']:.4f}, difference "
        f"{r10['ours_minus_recbole']:+.4f}",
    ]
    lines += [f"caveat: {c}" for c in pooled["caveats"]]
    return "\n".join(lines)
