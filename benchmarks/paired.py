"""Is one model's test score above another's by more than the test users' sampling error? A paired comparison over
the target's users, one pair of trained models per seed.

    python -m benchmarks.paired --a CONFIG CKPT [--a RUN_FOLDER ...] --b CONFIG CKPT [--b ...] \
        [--data-root ../shared/data] [--output F]

The i-th ``--a`` is compared with the i-th ``--b`` (e.g. one seed's transfer fit and the same seed's target-only fit)
on the target's test split, full ranking, ties against the held-out item. Each is a run's config and best checkpoint,
tested here, or the run folder (or ``test_users.pt`` file) where a fit wrote its test users' scores: no test needed.
For each pair and metric (NDCG@10, Recall@10): both models' means, the mean of the users' differences A - B, its
standard error (the differences' standard deviation / sqrt(users): how far the figure would move on another draw of
test users of this size) and z = difference / standard error. ``margin_for_every_seed`` is the true difference at
which A would finish above B on each of 3 seeds with probability 0.9 if each seed's difference scattered
independently by its standard error (z = 1.82). ``pooled`` averages the pairs, which must share their test users.
Prints and writes JSON with the command and commit (default ``paired.json`` beside the first ``--a`` checkpoint).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.runs import portable, provenance
from benchmarks.trained import trained_model
from rec_transfer.metrics import UserScores, mean_and_error, paired_comparison, pessimistic_rank, z_score
from rec_transfer.runs import USER_SCORES, read_user_scores

METRICS = ("ndcg@10", "recall@10")
# Phi(z) ** 3 = 0.9: a win on each of 3 independent seeds with probability 0.9.
EVERY_SEED_Z = 1.82


def per_user(model, loader) -> dict[str, torch.Tensor]:
    """Each test user's index (``user``) and the model's ``ndcg@10`` and ``recall@10`` for that user."""
    scores = UserScores()
    with torch.no_grad():
        for batch in loader:
            scores.update(batch["user"], pessimistic_rank(model(batch), batch["target"]))
    return scores.compute()


def pooled(differences: list[torch.Tensor]) -> dict:
    """The mean difference over pairs (seeds), each given as its users' differences A - B on the same test users.
    Its standard error is that of each user's difference averaged over the pairs: every seed is tested on the same
    draw of users, so a user who favours A on one seed may favour it on the others, and the draws are not
    independent."""
    per_pair = [mean_and_error(d) for d in differences]
    mean, se = mean_and_error(torch.stack(differences).double().mean(dim=0))
    return {
        "difference": round(mean, 5),
        "standard_error": round(se, 5),
        "z": z_score(mean, se),
        "a_ahead_in": f"{sum(m > 0 for m, _ in per_pair)} of {len(per_pair)}",
        "margin_for_every_seed": round(EVERY_SEED_Z * max(s for _, s in per_pair), 5),
    }


def tested(config: str, ckpt: str, data_root: str | None):
    """A trained model and its target's test loader."""
    model, data, _ = trained_model(config, ckpt, data_root)
    return model, data.target.view_loader("test")


def scores_of(spec: list[str], data_root: str | None) -> dict[str, torch.Tensor]:
    """A model's per-user test scores: ``[CONFIG, CKPT]`` tested here, or ``[FOLDER or FILE]`` where a fit wrote them
    (``rec_transfer.runs.write_user_scores``)."""
    if len(spec) == 2:
        return per_user(*tested(*spec, data_root))
    path = Path(spec[0])
    if path.is_file() and path.suffix != ".pt":
        raise ValueError(f"{path}: give a run folder, a {USER_SCORES} file, or a config and its checkpoint")
    scores = torch.load(path, weights_only=True) if path.is_file() else read_user_scores(path)
    if scores is None:
        raise FileNotFoundError(f"{path}: no {USER_SCORES} (a fit writes it beside results.json when it tests)")
    return {k: v.reshape(-1) for k, v in scores.items()}  # a file of one user's scores holds 0-d tensors


def checkpoint_name(ckpt: str) -> str:
    """A checkpoint as a report names it: its run folder and file (``portable`` keeps only the file of a path
    outside the checkout, and every run's best checkpoint is called ``epoch=N-step=M.ckpt``)."""
    path = Path(portable(ckpt))
    return str(path) if not path.parts[0].startswith("<") else f"{Path(ckpt).parent.name}/{path.name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for side in ("--a", "--b"):
        parser.add_argument(side, nargs="+", action="append", required=True, metavar="CONFIG CKPT | RUN_FOLDER")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if len(args.a) != len(args.b):
        parser.error(f"give as many --b as --a (one pair per seed): {len(args.a)} --a, {len(args.b)} --b")
    if bad := [" ".join(spec) for spec in args.a + args.b if len(spec) > 2]:
        parser.error(f"each --a / --b is CONFIG CKPT or one run folder, not: {bad[0]}")
    report = provenance() | {"pairs": []}
    differences: dict[str, list[torch.Tensor]] = {m: [] for m in METRICS}
    users = None
    for spec_a, spec_b in zip(args.a, args.b, strict=True):
        try:  # a wrong path or pair is one line, naming it
            a, b = scores_of(spec_a, args.data_root), scores_of(spec_b, args.data_root)
            compared = paired_comparison(a, b)
        except (OSError, ValueError) as e:
            parser.error(f"--a {' '.join(spec_a)} --b {' '.join(spec_b)}: {e}")
        pair = {"a": checkpoint_name(spec_a[-1]), "b": checkpoint_name(spec_b[-1]), **compared}
        print(json.dumps(pair), flush=True)
        report["pairs"].append(pair)
        if users is not None and not torch.equal(users, a["user"]):
            parser.error(f"{spec_a[-1]}: tested on other users than the first pair (pool the seeds of one target)")
        users = a["user"]
        for m in METRICS:
            differences[m].append(a[m] - b[m])
    report["pooled"] = {m: pooled(differences[m]) for m in METRICS}
    print(json.dumps(report["pooled"], indent=1))
    print(f"A − B over {len(args.a)} pair(s) (seeds), on the same {len(users)} test users:")
    for m, p in report["pooled"].items():
        gap = f"{p['difference']:+.4f} ± {p['standard_error']:.4f}  z {p['z']:+.1f}"
        margin = f"{p['margin_for_every_seed']:.4f}"
        print(f"  {m:<10} {gap}  A ahead in {p['a_ahead_in']} pair(s); a true difference of {margin} would put A "
              "ahead on each of 3 seeds with probability 0.9")  # fmt: skip
    first = Path(args.a[0][-1])
    out = Path(args.output or (first / "paired.json" if first.is_dir() else first.with_name("paired.json")))
    out.parent.mkdir(parents=True, exist_ok=True)
    replaced = " (replacing the one there: --output to keep both)" if out.exists() else ""
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}{replaced}")


if __name__ == "__main__":
    main()
