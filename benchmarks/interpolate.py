"""The fine-tuned model mixed with the source-trained model it started from (WiSE-FT), on the target's validation
and test splits.

    python -m benchmarks.interpolate --config CONFIG --ckpt BEST.ckpt --handover RUN/handover.ckpt \
        [--alphas 0 0.1 0.2] [--data-root ../shared/data] [--output F]

CONFIG and BEST.ckpt are a transfer fit's config and best checkpoint, ``handover.ckpt`` the model its
``DomainTransfer`` handed over (in the run folder). For each alpha, full ranking: ``weights``, the one model whose
weights are (1 - alpha) * fine-tuned + alpha * handed over (Wortsman et al., CVPR 2022); ``scores``, the two models'
logits mixed the same way (an ensemble of two). Prints and writes JSON with the command and commit (default
``interpolate.json`` beside the checkpoint).
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from benchmarks.runs import portable, provenance
from benchmarks.trained import trained_model
from rec_transfer.metrics import RankingMetrics
from rec_transfer.utils.checkpoints import load_checkpoint


def mixed(a: dict, b: dict, alpha: float) -> dict:
    """``(1 - alpha) * a + alpha * b`` for floating-point tensors; the others (counts, ids) as in ``a``."""
    return {k: (1 - alpha) * v + alpha * b[k] if v.is_floating_point() else v for k, v in a.items()}


def evaluate(models, weights, loader) -> dict:
    """NDCG@10, Recall@10 and Recall@50 of the ``weights``-weighted sum of the ``models``' scores."""
    metric = RankingMetrics((10, 50))
    with torch.no_grad():
        for batch in loader:
            scores = sum(w * m(batch) for m, w in zip(models, weights, strict=True))
            metric.update(scores, batch["target"])
    return {k: round(float(v), 5) for k, v in metric.compute().items() if k in ("ndcg@10", "recall@10", "recall@50")}


def mixes(model, data, handover: dict, alphas) -> list[dict]:
    """For each alpha, the target's validation and test metrics of the weights mixed from ``model`` (fine-tuned)
    and ``handover`` (a state dict), and of the two models' scores mixed."""
    tuned = model.state_dict()
    handed, blend = copy.deepcopy(model), copy.deepcopy(model)
    handed.load_state_dict(handover)
    rows = []
    for alpha in alphas:
        blend.load_state_dict(mixed(tuned, handover, alpha))
        row = {"alpha": alpha}
        for split in ("valid", "test"):
            loader = data.target.view_loader(split)
            row[f"weights_{split}"] = evaluate([blend], [1.0], loader)
            row[f"scores_{split}"] = evaluate([model, handed], [1 - alpha, alpha], loader)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--handover", required=True, help="the run folder's handover.ckpt")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0, 0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    report = provenance() | {"ckpt": portable(args.ckpt), "handover": portable(args.handover)}
    model, data, checkpoint = trained_model(args.config, args.ckpt, args.data_root)
    rows = mixes(model, data, load_checkpoint(args.handover)["state_dict"], args.alphas)
    report["rows"] = rows
    out = Path(args.output or Path(args.ckpt).with_name("interpolate.json"))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
