"""How many of each user's top-10 test slots a trained model gives to items already in the user's history, and what
its test metrics would be if those items were left out (a diagnostic: the published protocol ranks every item).

    python -m benchmarks.history_slots --config CONFIG --ckpt CHECKPOINT [--data-root ../shared/data] [--output F]
        [-- more CLI arguments, e.g. --model.history_bias false for a checkpoint trained without the offset]

CONFIG and CHECKPOINT are a fit's config and one of its checkpoints (e.g. ``configs/scientific_transfer.yaml`` and its
best checkpoint). Prints and writes JSON with the command and commit (default
``benchmarks/results/history_slots/<checkpoint name>.json``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from benchmarks.runs import ROOT, provenance
from benchmarks.trained import trained_model
from rec_transfer.metrics import pessimistic_rank, user_scores
from rec_transfer.models.components.history import in_history, last_histories


def slots(model, loader) -> dict:
    """Test NDCG@10 / Recall@10 as scored and with history items left out, and history items per top 10."""
    sums = {"users": 0, "history_in_top10": 0.0}
    for name in ("as_scored", "history_left_out"):
        sums |= {f"{name}_ndcg@10": 0.0, f"{name}_recall@10": 0.0}
    with torch.no_grad():
        for batch in loader:
            scores = model(batch)  # (B, N + 1), with the model's own history offset if it has one
            target = batch["target"]
            seen = in_history(last_histories(batch["input"], batch.get("segments"), batch.get("last")),
                              torch.arange(scores.shape[1]))  # fmt: skip
            seen[:, 0] = False
            target_score = scores.gather(1, target[:, None])
            left_out = scores.masked_fill(seen, float("-inf")).scatter(1, target[:, None], target_score)
            sums["users"] += len(target)
            sums["history_in_top10"] += seen.gather(1, scores.topk(10, dim=1).indices).sum().item()
            for name, s in (("as_scored", scores), ("history_left_out", left_out)):
                recall, ndcg = user_scores(pessimistic_rank(s, target), 10)
                sums[f"{name}_ndcg@10"] += ndcg.sum().item()
                sums[f"{name}_recall@10"] += recall.sum().item()
    users = sums.pop("users")
    return {"users": users, **{k: round(v / users, 5) for k, v in sums.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--output", default=None)
    parser.add_argument("extra", nargs="*", help="more CLI arguments for the model and data, after --")
    args = parser.parse_args()
    report = provenance()
    model, data, _ = trained_model(args.config, args.ckpt, args.data_root, args.extra)
    loaders = data.test_dataloader()
    loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
    report["domain"] = data.target_name
    report |= slots(model, loader)
    if model.scorer.history_bias is not None:
        report["history_offset_logit"] = round(model.scorer.history_bias.logit.item(), 4)
    print(json.dumps(report, indent=1))
    out = Path(args.output or ROOT / "benchmarks/results/history_slots" / f"{Path(args.ckpt).stem}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
