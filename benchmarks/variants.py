"""The transfer benchmark's catalogue: its domains, model variants (each a shipped config plus what it changes) and
the published numbers its tables show beside them."""

from __future__ import annotations

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
# text vectors centred, the learned history offset, half the learning rate after the switch and the text adaptor at
# twice that, the target phase's weights averaged) or the SASRec config, plus the changes its spec lists: "freeze" /
# "handover" / "anchor" / "reinit" (DomainTransfer's), "model" (model settings), "text_encoder" (every domain's),
# "target_only" / "sources_only", "joint" / "source_mixing" / "rehearsal" (the data module's), "average"
# (TargetWeightAveraging's settings; False: none).
# Variants of other recipes spell out where they differ from the default, so their rows keep meaning what they
# measured (every row measured before the history offset existed says history_bias: False; every row trained on the
# target at the source learning rate says target_lr: 1e-3, which the target-only variants train at too; every row
# measured before the text adaptor's faster rate says target_lr_scale: {}, at the end).
UNCENTRED = {"center": False}
NO_OFFSET = {"history_bias": False}
FULL_LR = {"target_lr": 1e-3}
# Every MiniLM layer trained in the loop, all of a batch's items through it (sized for a GPU).
LM_ALL = {
    "text_encoder": {"train_layers": 6},
    "model": {"history_bias": True, "text_lr": 1e-5, "text_items_per_step": 8192},
}


def _lm_top(text_lr: float, **model) -> dict:
    """MiniLM's top layer trained in the loop at ``text_lr``, with the history offset and the other ``model``."""
    return {"text_encoder": {"train_layers": 1}, "model": {"history_bias": True, "text_lr": text_lr, **model}}


def _default_and_baseline(suffix: str, what: str, **changes) -> dict[str, dict]:
    """``transfer_ema_<suffix>`` and ``text_target_only_ema_<suffix>``: the default recipe and its target-only
    baseline, both with ``what`` (the spec ``changes``)."""
    return {
        f"transfer_ema_{suffix}": {"config": TRANSFER, "label": f"transfer, default recipe with {what}", **changes},
        f"text_target_only_ema_{suffix}": {
            "config": TRANSFER,
            "target_only": True,
            "label": f"text, target only (the default recipe's baseline) with {what}",
            **changes,
        },
    }


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
        **_lm_top(3e-5),
    },
    # Its target-only version: the same text model and language-model layer trained on the target alone.
    "text_target_only_lm": {
        "config": TRANSFER,
        "target_only": True,
        "label": "text, target only (learning rate 5e-4) + MiniLM's top layer trained (learning rate 3e-5)",
        **_lm_top(3e-5),
    },
    # Both with each step's recomputed language-model vectors written back to the bank (model.text_write_back).
    "transfer_lm_write_back": {
        "config": TRANSFER,
        "label": "transfer, default recipe + MiniLM's top layer trained (learning rate 3e-5), vectors written back",
        **_lm_top(3e-5, text_write_back=True),
    },
    "text_target_only_lm_write_back": {
        "config": TRANSFER,
        "target_only": True,
        "label": "text, target only (learning rate 5e-4) + MiniLM's top layer trained (3e-5), vectors written back",
        **_lm_top(3e-5, text_write_back=True),
    },
    # The same two with a third of the language model's learning rate.
    "transfer_lm_write_back_1e5": {
        "config": TRANSFER,
        "label": "transfer, default recipe + MiniLM's top layer trained (learning rate 1e-5), vectors written back",
        **_lm_top(1e-5, text_write_back=True),
    },
    "text_target_only_lm_write_back_1e5": {
        "config": TRANSFER,
        "target_only": True,
        "label": "text, target only (learning rate 5e-4) + MiniLM's top layer trained (1e-5), vectors written back",
        **_lm_top(1e-5, text_write_back=True),
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
        "label": "text, target only (centred, history offset, learning rate 5e-4; weights not averaged)",
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
        "label": "transfer, full fine-tune, centred, history offset, target learning rate 5e-4 (weights not averaged)",
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
    # The default recipe with the sources rehearsed after the switch (TransferDataModule's rehearsal): each target
    # epoch adds a quarter as many source batches as it has target batches.
    "transfer_rehearsal": {
        "config": TRANSFER,
        "label": "transfer, default recipe, sources rehearsed after the switch (1 source batch per 4 target batches)",
        "rehearsal": 0.25,
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
    # The recipe before the text adaptor's faster rate, and its target-only version: the target phase's weights
    # averaged, every part at the target learning rate.
    "transfer_ema": {
        "config": TRANSFER,
        "label": "transfer, as above, target weights averaged (EMA, decay 0.99 a step)",
    },
    "text_target_only_ema": {
        "config": TRANSFER,
        "target_only": True,
        "label": "text, target only (learning rate 5e-4, weights averaged)",
    },
    # Both with a shorter average: about 50 steps (6 epochs of Scientific) instead of 100.
    "transfer_ema98": {
        "config": TRANSFER,
        "label": "transfer, default recipe with a shorter average (decay 0.98 a step)",
        "average": {"decay": 0.98},
    },
    "text_target_only_ema98": {
        "config": TRANSFER,
        "target_only": True,
        "label": "text, target only (the default recipe's baseline), shorter average (decay 0.98 a step)",
        "average": {"decay": 0.98},
    },
    # Both with a longer average: about 200 steps (25 epochs of Scientific) instead of 100.
    "transfer_ema995": {
        "config": TRANSFER,
        "label": "transfer, default recipe with a longer average (decay 0.995 a step)",
        "average": {"decay": 0.995},
    },
    # Both with every domain's text vectors whitened as well as centred (TextEncoderConfig.whiten): the domains
    # then share one covariance shape as well as one centre.
    "transfer_ema_whiten": {
        "config": TRANSFER,
        "label": "transfer, default recipe with every domain's text vectors whitened",
        "text_encoder": {"whiten": True},
    },
    "text_target_only_ema_whiten": {
        "config": TRANSFER,
        "target_only": True,
        "label": "text, target only (the default recipe's baseline), text vectors whitened",
        "text_encoder": {"whiten": True},
    },
    # The default recipe with every MiniLM layer trained in the loop (token states cached below the first layer),
    # every item of a batch run through the language model: sized for a GPU. Its target-only version beside it.
    "transfer_ema_lm_all": {
        "config": TRANSFER,
        "label": "transfer, default recipe + every MiniLM layer trained (learning rate 1e-5)",
        **LM_ALL,
    },
    "text_target_only_ema_lm_all": {
        "config": TRANSFER,
        "target_only": True,
        "label": "text, target only (learning rate 5e-4) + every MiniLM layer trained (learning rate 1e-5)",
        **LM_ALL,
    },
    "text_target_only_ema995": {
        "config": TRANSFER,
        "target_only": True,
        "label": "text, target only (the default recipe's baseline), longer average (decay 0.995 a step)",
        "average": {"decay": 0.995},
    },
    # Both with a deeper sequence encoder (transfer_ema_deep, text_target_only_ema_deep: 4 transformer layers instead
    # of 2), and with a shallower one (*_shallow: 1 layer).
    **_default_and_baseline("deep", "4 transformer layers", model={"layers": 4}),
    **_default_and_baseline("shallow", "1 transformer layer", model={"layers": 1}),
    # Both with a quarter of the source learning rate after the switch (2.5e-4 instead of half, 5e-4).
    **_default_and_baseline("quarter_lr", "target learning rate 2.5e-4", model={"target_lr": 2.5e-4}),
    # The default recipe with the sequence encoder fine-tuned at a quarter of the target learning rate
    # (target_lr_scale), the item tower and the history offset at the full target rate.
    "transfer_ema_slow_encoder": {
        "config": TRANSFER,
        "label": "transfer, default recipe with the sequence encoder at a quarter of the target learning rate",
        "model": {"target_lr_scale": {"encoder": 0.25}},
    },
    # The default recipe with half of a fresh initialisation mixed into the handed-over weights (shrink and perturb).
    "transfer_ema_reinit": {
        "config": TRANSFER,
        "label": "transfer, default recipe, half a fresh initialisation mixed in at the switch (reinit 0.5)",
        "reinit": 0.5,
    },
    # The default recipe with the text adaptor fine-tuned at a quarter of the target learning rate (target_lr_scale),
    # the sequence encoder and the history offset at the full target rate.
    "transfer_ema_slow_adaptor": {
        "config": TRANSFER,
        "label": "transfer, default recipe with the text adaptor at a quarter of the target learning rate",
        "model": {"target_lr_scale": {"item_tower.adaptor": 0.25}},
    },
    # The default recipe and its target-only version (--compare_target_only): as transfer_ema, with the text adaptor
    # fine-tuned at twice the target learning rate (target_lr_scale; the target-only run's lr_scale), the rest at 5e-4.
    "transfer_ema_fast_adaptor": {
        "config": TRANSFER,
        "label": "transfer, default recipe (weights averaged, the text adaptor at twice the target learning rate)",
        "model": {"target_lr_scale": {"item_tower.adaptor": 2.0}},
    },
    "text_target_only_ema_fast_adaptor": {
        "config": TRANSFER,
        "target_only": True,
        "label": "text, target only (the default recipe's baseline: learning rate 5e-4, the adaptor's 1e-3, averaged)",
        "model": {"target_lr_scale": {"item_tower.adaptor": 2.0}},
    },
    # The default recipe handing over a running average of the source phase's weights (about 50 steps).
    "transfer_ema_source_average": {
        "config": TRANSFER,
        "label": "transfer, default recipe handing over the source weights averaged (EMA, decay 0.98 a step)",
        "handover": "average",
    },
    # The default recipe with a sequence-to-sequence contrastive loss beside the next-item loss on the sources
    # (UniSRec's pre-training; a fifth of each history's items masked in the second view), at a tenth of its weight.
    "transfer_ema_contrast": {
        "config": TRANSFER,
        "label": "transfer, default recipe + a sequence contrastive loss on the sources (weight 0.1)",
        "model": {"contrast_weight": 0.1},
    },
    # The default recipe with the text adaptor kept as the sources left it; the sequence encoder fine-tunes.
    "transfer_ema_freeze_adaptor": {
        "config": TRANSFER,
        "label": "transfer, default recipe with the text adaptor frozen on the target",
        "freeze": ["item_tower.adaptor"],
    },
}
# Every other row was measured before the averaging was the default, without it: so are its reruns. ("default
# recipe" in their labels: the recipe of their time.) Every row but the default recipe's was measured with the text
# adaptor at the target learning rate, unless it names its own scales: so are its reruns.
for _name, _spec in VARIANTS.items():
    if _spec["config"] == TRANSFER and not _name.startswith(("transfer_ema", "text_target_only_ema")):
        _spec.setdefault("average", False)
    if _spec["config"] == TRANSFER and not _name.endswith("_ema_fast_adaptor"):
        _spec["model"] = {"target_lr_scale": {}, **_spec.get("model", {})}  # {}: every part at the target rate

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
