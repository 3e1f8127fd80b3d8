"""The transfer benchmark: configs per model variant and target, and the Markdown table / PNG chart of results."""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import yaml

from benchmarks.runs import ROOT, not_rerun
from rec_transfer.cli import target_only_config

# Folder of each domain under the data root.
DOMAINS = {
    "Scientific": "amazon/Scientific",
    "Office": "amazon/Office",
    "Games": "amazon/Games",
    "Kitchen": "amazon/Kitchen",
    "Food": "amazon/Food",
    "ml-100k": "movielens/ml-100k",
}

SASREC, TRANSFER = "configs/scientific_sasrec.yaml", "configs/scientific_transfer.yaml"

# Each variant is the shipped transfer config (the default recipe: every layer fine-tuned on the target, each domain's
# text vectors centred, the learned history offset, half the learning rate after the switch) or the SASRec config,
# plus the changes its spec lists: "freeze" / "handover" / "anchor" (DomainTransfer's), "model" (model settings),
# "text_encoder" (every domain's), "target_only" / "sources_only", "joint" / "source_mixing" (the data module's).
# Variants of other recipes spell out where they differ from the default, so their rows keep meaning what they
# measured (every row measured before the history offset existed says history_bias: False; every row trained on the
# target at the source learning rate says target_lr: 1e-3, which the target-only variants train at too).
UNCENTRED = {"center": False}
NO_OFFSET = {"history_bias": False}
FULL_LR = {"target_lr": 1e-3}
VARIANTS: dict[str, dict] = {
    "sasrec": {"config": SASREC, "label": "SASRec (IDs), target only", "model": NO_OFFSET},
    "sasrec_history": {"config": SASREC, "label": "SASRec (IDs), target only, learned history offset"},
    # The transfer config's target-only version (rec_transfer.cli.target_only_config): the same text model, no sources.
    "text_target_only": {
        "config": TRANSFER,
        "target_only": True,
        "label": "text, target only",
        "text_encoder": UNCENTRED,
        "model": {**NO_OFFSET, **FULL_LR},
    },
    # The default recipe's own target-only version before the history offset (centred, batches of 1024), at 1e-3.
    "text_target_only_center": {
        "config": TRANSFER,
        "target_only": True,
        "label": "text, target only (centred, no history offset)",
        "model": {**NO_OFFSET, **FULL_LR},
    },
    "transfer_text_full_center": {
        "config": TRANSFER,
        "label": "transfer, full fine-tune, centred (no history offset)",
        "model": {**NO_OFFSET, **FULL_LR},
    },
    "transfer_text": {
        "config": TRANSFER,
        "label": "transfer + adaptor fine-tune (text)",
        "freeze": ["encoder"],
        "text_encoder": UNCENTRED,
        "model": {**NO_OFFSET, **FULL_LR},
    },
    "transfer_text_full": {
        "config": TRANSFER,
        "label": "transfer + full fine-tune (text)",
        "text_encoder": UNCENTRED,
        "model": {**NO_OFFSET, **FULL_LR},
    },
    "transfer_text_center": {
        "config": TRANSFER,
        "label": "transfer + adaptor fine-tune (text, centred per domain)",
        "freeze": ["encoder"],
        "model": {**NO_OFFSET, **FULL_LR},
    },
    # Sources only: the run stops at the switch and tests the source epoch with the best target validation
    # NDCG@10 (the checkpoint callback picks it, as early stopping picks every other row's epoch).
    "zero_shot_text": {
        "config": TRANSFER,
        "label": "zero-shot (sources only, text): best source epoch by target validation",
        "sources_only": True,
        "text_encoder": UNCENTRED,
        "model": NO_OFFSET,
    },
    # The same for the default recipe's centred vectors: the zero-shot model DomainTransfer(handover="best") hands over.
    "zero_shot_text_center": {
        "config": TRANSFER,
        "label": "zero-shot (sources only, text, centred): best source epoch by target validation",
        "sources_only": True,
        "model": NO_OFFSET,
    },
    "transfer_text+id": {
        "config": TRANSFER,
        "label": "transfer + adaptor/ID fine-tune (text+ID)",
        "model": {**NO_OFFSET, **FULL_LR, "mode": "text+id"},
        "freeze": ["encoder"],
        "text_encoder": UNCENTRED,
    },
    # IDs on the sources only: they soak up item-specific signal there; on the target the ID table stays at zero
    # (frozen), so only the text adaptor trains, as in transfer_text.
    "transfer_idpretrain": {
        "config": TRANSFER,
        "label": "transfer: text+ID pre-training, adaptor fine-tune (no target IDs)",
        "model": {**NO_OFFSET, **FULL_LR, "mode": "text+id"},
        "freeze": ["encoder", "item_tower.id_embeddings"],
        "text_encoder": UNCENTRED,
    },
    # A decoder's last-token states share one large direction; centring removes it (TextEncoderConfig.center).
    "transfer_smollm2": {
        "config": TRANSFER,
        "label": "transfer + adaptor fine-tune (text, SmolLM2, centred)",
        "freeze": ["encoder"],
        "text_encoder": {"model_name": "smollm2", "center": True},
        "model": {**NO_OFFSET, **FULL_LR},
    },
    # The default recipe with the language model's top layer fine-tuned in the loop (its own learning rate).
    "transfer_lm": {
        "config": TRANSFER,
        "label": "transfer, default recipe + MiniLM's top layer trained (learning rate 3e-5)",
        "text_encoder": {"train_layers": 1},
        "model": {"history_bias": True, "text_lr": 3e-5},
    },
    # Its target-only version: the same text model and language-model layer trained on the target alone.
    "text_target_only_lm": {
        "config": TRANSFER,
        "target_only": True,
        "label": "text, target only (learning rate 5e-4) + MiniLM's top layer trained (learning rate 3e-5)",
        "text_encoder": {"train_layers": 1},
        "model": {"history_bias": True, "text_lr": 3e-5},
    },
    # The default recipe with a gradient-reversal domain discriminator on the items during the source phase.
    "transfer_align": {
        "config": TRANSFER,
        "label": "transfer, default recipe + domain-adversarial alignment (weight 0.1)",
        "model": {**NO_OFFSET, **FULL_LR, "align_weight": 0.1},
    },
    # Full fine-tune, centred, one learned logit offset for items already in the user's history (model.history_bias,
    # how often users return to an item; the evaluation still ranks every item), at the source learning rate on the
    # target; and the target-only version of that model at the same learning rate.
    "transfer_history": {
        "config": TRANSFER,
        "label": "transfer, full fine-tune, centred, history offset, target learning rate 1e-3",
        "model": {"history_bias": True, **FULL_LR},
    },
    "text_target_only_history": {
        "config": TRANSFER,
        "target_only": True,
        "label": "text, target only, centred, history offset, learning rate 1e-3",
        "model": {"history_bias": True, **FULL_LR},
    },
    # The default recipe's target-only version, as --compare_target_only trains it: at transfer's target learning rate.
    "text_target_only_history_half_lr": {
        "config": TRANSFER,
        "target_only": True,
        "label": "text, target only (the default recipe's baseline: centred, history offset, learning rate 5e-4)",
        "model": {"history_bias": True},
    },
    # Gentler first target steps: a warm-up after the switch, or half the target learning rate (the default recipe).
    "transfer_history_warmup": {
        "config": TRANSFER,
        "label": "transfer, history offset, target learning rate 1e-3 + 40-step warm-up after the switch",
        "model": {"history_bias": True, **FULL_LR, "target_warmup_steps": 40},
    },
    "transfer_history_half_lr": {
        "config": TRANSFER,
        "label": "transfer, default recipe (full fine-tune, centred, history offset, target learning rate 5e-4)",
        "model": {"history_bias": True, "target_lr": 5e-4},
    },
    # The default recipe with the target's training histories mixed into the source phase (TransferDataModule's
    # joint): the model at the switch has then seen the target, so its "zero-shot" row is not one.
    "transfer_joint": {
        "config": TRANSFER,
        "label": "transfer, default recipe, the target's training histories also in the source phase",
        "joint": True,
    },
    # The same with the source phase's steps shared evenly among its domains (source_mixing 0): the target gets a
    # quarter of them instead of 6-12 %.
    "transfer_joint_even": {
        "config": TRANSFER,
        "label": "transfer, default recipe, the target in the source phase with an even share of its steps",
        "joint": True,
        "source_mixing": 0.0,
    },
    # The default recipe with the source epoch's steps shared among the sources in proportion to the square root of
    # their batches (source_mixing 0.5): with Games and Kitchen among five sources, the small domains keep a say.
    "transfer_sources_sqrt": {
        "config": TRANSFER,
        "label": "transfer, default recipe, source steps shared ∝ √(each source's batches)",
        "source_mixing": 0.5,
    },
    # The default recipe handing over the source epoch with the best target validation instead of the last.
    "transfer_handover_best": {
        "config": TRANSFER,
        "label": "transfer, default recipe, best source epoch handed over",
        "handover": "best",
    },
    # The default recipe with L2-SP: after the switch each step pulls the weights back towards the handed-over ones.
    "transfer_anchor": {
        "config": TRANSFER,
        "label": "transfer, default recipe, weights pulled towards the handed-over ones (DomainTransfer anchor 10)",
        "anchor": 10.0,
    },
}

METRICS = ("ndcg@10", "recall@10", "ndcg@50", "recall@50")

PUBLISHED = {  # the papers' tables on the same split: UniSRec (KDD 2022), VQ-Rec (WWW 2023), MISSRec (MM 2023)
    "Scientific": {
        "SASRec (UniSRec paper)": {"ndcg@10": 0.0553, "recall@10": 0.1080, "ndcg@50": 0.0760, "recall@50": 0.2042},
        "SASRec_T (VQ-Rec paper)": {"ndcg@10": 0.0561, "recall@10": 0.0994, "ndcg@50": 0.0815, "recall@50": 0.2162},
        "UniSRec text+ID fine-tune": {"ndcg@10": 0.0634, "recall@10": 0.1235, "ndcg@50": 0.0904, "recall@50": 0.2473},
        "VQ-Rec (re-released ckpt)": {"ndcg@10": 0.0645, "recall@10": 0.1238, "ndcg@50": 0.0901, "recall@50": 0.2409},
        "VQ-Rec zero-shot": {"ndcg@10": 0.0361, "recall@10": 0.0640, "ndcg@50": 0.0421, "recall@50": 0.0909},
        "MISSRec (text + image, IDs; ACM MM 2023)": {
            "ndcg@10": 0.0753, "recall@10": 0.1360, "ndcg@50": 0.0983, "recall@50": 0.2431,
        },
    },
}  # fmt: skip


def default_sources(target: str) -> list[str]:
    return [d for d in DOMAINS if d != target]


def config_name(variant: str) -> str:
    """The shipped config a variant starts from, as reports name it."""
    spec = VARIANTS[variant]
    return spec["config"] + (" (target only)" if spec.get("target_only") else "")


def variant_config(variant: str, target: str, sources: list[str], source_epochs: int | None = None) -> dict:
    """The config of ``variant`` with ``target`` (and, for transfer, ``sources``) swapped in."""
    spec = VARIANTS[variant]
    if target not in DOMAINS or any(s not in DOMAINS for s in sources):
        raise ValueError(f"unknown domain in target {target!r} / sources {sources}; known: {sorted(DOMAINS)}")
    if target in sources:
        raise ValueError(f"target {target!r} cannot also be a source")
    cfg = yaml.safe_load((ROOT / spec["config"]).read_text())
    cfg["model"].update(spec.get("model", {}))
    if spec.get("target_only"):  # after the model's changes: the target-only run trains at their target_lr
        cfg = target_only_config(cfg)
    data = cfg["data"]["init_args"]
    data["target"]["init_args"]["path"] = DOMAINS[target]
    if "sources" in data:
        if not sources:
            raise ValueError(f"variant {variant!r} transfers: give at least one source domain")
        template = data["sources"][0]  # sources keep the config's source settings (e.g. their batch size)
        data["sources"] = []
        for name in sources:
            source = copy.deepcopy(template)
            source["init_args"]["path"] = DOMAINS[name]
            data["sources"].append(source)
        for cb in cfg["trainer"]["callbacks"]:
            if not cb["class_path"].endswith("DomainTransfer"):
                continue
            if source_epochs is not None:
                cb["init_args"]["source_epochs"] = source_epochs
            for key in ("freeze", "handover", "anchor"):
                if key in spec:
                    cb["init_args"][key] = spec[key]
            if spec.get("sources_only"):  # every epoch on the sources: no early switch, no target step
                cb["init_args"]["source_patience"] = None
                cfg["trainer"]["max_epochs"] = cb["init_args"]["source_epochs"]
    if spec.get("joint"):
        data["joint"] = True
    if "source_mixing" in spec:
        data["source_mixing"] = spec["source_mixing"]
    if "text_encoder" in spec:
        for domain in [data["target"], *data.get("sources", [])]:
            domain["init_args"]["text_encoder"].update(spec["text_encoder"])
    return cfg


def earlier_results(
    path: Path, running: list[str], sources: list[str], source_epochs: int | None, seeds: list[int]
) -> dict:
    """The variants of the earlier report at ``path`` that are not ``running`` now, to keep in the new table.

    Only rows of the same sources, source epochs and seeds are kept (others would not compare in one
    table): checked before any run starts, so a mismatch costs nothing. Each kept variant carries the
    command and commit that measured it (``provenance``).
    """
    if not path.exists():
        return {}
    earlier = json.loads(path.read_text())
    kept = not_rerun(earlier, running)
    settings = (earlier.get("sources"), earlier.get("source_epochs"), earlier.get("seeds"))
    if kept and settings != (sources, source_epochs, seeds):
        raise ValueError(
            f"{path} holds {sorted(kept)} measured with sources, source epochs, seeds {settings}, not "
            f"{(sources, source_epochs, seeds)}: write this run elsewhere (--output-dir) or rerun those variants too"
        )
    return kept


def in_table_order(results: dict) -> dict:
    return {k: results[k] for k in [*VARIANTS, *results] if k in results}


def rows(results: dict) -> list[tuple[str, dict]]:
    """(label, summary) per table row: each variant, then each transfer variant's zero-shot point."""
    out = []
    for name, res in results.items():
        label = VARIANTS.get(name, {}).get("label", name)
        out.append((label, {m.split("/")[-1]: s for m, s in res["summary"].items() if m.startswith("test/")}))
        zero = {m.split("/")[-1]: s for m, s in res["summary"].items() if m.startswith("zeroshot_test/")}
        if zero:
            out.append((f"{label}: zero-shot (before fine-tuning)", zero))
    return out


def markdown_table(results: dict, target: str, seeds: list[int], published: dict) -> str:
    head = f"| model ({target}, {len(seeds)} seeds: mean ± std) | " + " | ".join(METRICS) + " | s / train epoch |"
    lines = [head, "|" + "---|" * (len(METRICS) + 2)]
    epoch_s = {VARIANTS.get(n, {}).get("label", n): r.get("mean_train_epoch_seconds") for n, r in results.items()}
    for label, summary in rows(results):
        cells = [f"{summary[m]['mean']:.4f} ± {summary[m]['std']:.4f}" if m in summary else "—" for m in METRICS]
        secs = epoch_s.get(label)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {secs if secs is not None else ''} |")
    for label, values in published.items():
        cells = [f"{values[m]:.4f}" if m in values else "—" for m in METRICS]
        lines.append(f"| *published: {label}* | " + " | ".join(cells) + " | |")
    return "\n".join(lines) + "\n"


def plot(results: dict, target: str, path: Path, published: dict) -> None:
    """Bar chart of test NDCG@10 and Recall@10 (mean, std as error bars), published numbers as lines."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    table = rows(results)
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.6 * len(table) + 3.5), sharey=True)
    for ax, metric in zip(axes, ("ndcg@10", "recall@10"), strict=True):
        labels = [label for label, s in table if metric in s]
        means = [s[metric]["mean"] for _, s in table if metric in s]
        stds = [s[metric]["std"] for _, s in table if metric in s]
        ax.barh(labels, means, xerr=stds, color="tab:blue", alpha=0.8, capsize=3)
        for i, (name, values) in enumerate(published.items()):
            if metric in values:
                ax.axvline(values[metric], linestyle="--", color=f"C{i + 1}", label=name)
        ax.set_xlabel(f"test {metric}")
        ax.invert_yaxis()
        if published:  # below the axes: inside, it hides the bars
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2)
    fig.suptitle(f"{target}: full ranking, leave-one-out")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(report: dict, stem: Path) -> str:
    """``<stem>.json``, the Markdown table with each row's command and commit (``.md``) and the chart (``.png``)
    of a transfer ``report``; returns the table."""
    results, sources = report["results"], report["sources"]
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2))
    # The papers' numbers, where the report's runs train on the same data as they did (see benchmarks.transfer).
    published = report.get("published", {})
    table = markdown_table(results, report["target"], report["seeds"], published)
    measured_by = {}  # command and commit -> variants they measured
    for variant, res in results.items():
        p = res["provenance"]
        measured_by.setdefault((p["command"], p["git_commit"], p["machine"]["device"]), []).append(variant)
    header = "".join(
        f"Command: `{cmd}`  \nCommit: `{commit}`; machine: {device}; rows: {', '.join(variants)}\n\n"
        for (cmd, commit, device), variants in measured_by.items()
    )
    stem.with_suffix(".md").write_text(f"{header}Sources: {', '.join(sources)}\n\n{table}")
    plot(results, report["target"], stem.with_suffix(".png"), published)
    return table


def add_rows(report: dict, other: dict) -> dict:
    """``report`` with the variants of ``other`` (a report of the same target, sources, source epochs and seeds)
    added or replaced, each keeping the command and commit that measured it."""
    settings = [(r["target"], r["sources"], r["source_epochs"], r["seeds"]) for r in (report, other)]
    if settings[0] != settings[1]:
        raise ValueError(f"reports of other settings (target, sources, source epochs, seeds): {settings}")
    added = not_rerun(other, [])
    kept = not_rerun(report, list(added))
    return report | {"results": in_table_order(kept | added)}


def main() -> None:
    """``python -m benchmarks.transfer_table REPORT.json [MORE.json ...]``: adds the rows of MORE to REPORT, then
    writes its JSON, table and chart again."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("report", type=Path)
    parser.add_argument("more", type=Path, nargs="*")
    args = parser.parse_args()
    report = json.loads(args.report.read_text())
    for path in args.more:
        report = add_rows(report, json.loads(path.read_text()))
    print(write_report(report, args.report.with_suffix("")))


if __name__ == "__main__":
    main()
