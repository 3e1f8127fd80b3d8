"""The target-only version of a transfer config: the baseline ``--compare_target_only`` and the benchmarks train."""

from __future__ import annotations

import copy
import importlib
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jsonargparse import Namespace

from rec_transfer.callbacks import DomainTransfer
from rec_transfer.callbacks.weight_averaging import AVERAGING_CALLBACKS
from rec_transfer.models.optim import recipe_target_lr_scale
from rec_transfer.models.recommender import TransferRecommender

TARGET_LR_DEFAULT = inspect.signature(TransferRecommender).parameters["target_lr"].default
MODE_DEFAULT = inspect.signature(TransferRecommender).parameters["mode"].default


def target_only_config(config: Mapping[str, Any] | Namespace) -> dict[str, Any]:
    """The target-only version of a transfer config: the baseline that transfer must beat.

    The same model, target domain and trainer settings, without the source domains and the ``DomainTransfer``
    callback that switches from them; it trains as transfer does on the target: at its learning rate
    (``model.target_lr``, the model's default where the config leaves it out), with its ``target_lr_scale`` (the
    recipe's where left out) and ``target_warmup_steps``, so the two runs differ only by the source phase. Its
    weights are averaged as the transfer run's are: where the transfer config names no averaging (the CLI adds
    ``TargetWeightAveraging`` to a fit with sources), the baseline names it. Checkpoint folders, the logger's run
    name and ``results_json`` get a ``-target_only`` suffix, so both runs can write side by side.
    ``--compare_target_only`` fits it after the transfer; the benchmarks' text target-only variants are it.

    Args:
        config: a ``fit`` config: a parsed YAML file or the CLI's namespace (left unchanged).
    """
    cfg = copy.deepcopy(config.as_dict() if isinstance(config, Namespace) else dict(config))
    for key in ("config", "compare_target_only"):  # the files the CLI read; the comparison itself
        cfg.pop(key, None)
    model = cfg.setdefault("model", {})
    target_lr = model.pop("target_lr", TARGET_LR_DEFAULT)
    if target_lr is not None:  # None: the target trains at lr
        model["lr"] = target_lr
    # The rest of what transfer trains the target with, under the names of a run without transfer (the source
    # phase's scales are not the target's): None, or left out, is the model's default, the recipe's scales.
    scale = model.pop("target_lr_scale", None)
    model["lr_scale"] = recipe_target_lr_scale(model.get("mode", MODE_DEFAULT)) if scale is None else scale
    target_warmup = model.pop("target_warmup_steps", None)
    if target_warmup is not None:  # None: the target warms up over warmup_steps
        model["warmup_steps"] = target_warmup
    sources = cfg.get("data", {}).get("init_args", {}).pop("sources", None)
    trainer = cfg.setdefault("trainer", {})
    trainer["callbacks"] = [cb for cb in trainer.get("callbacks") or [] if not _is_transfer(cb["class_path"])]
    if sources and not any(_is_averaging(cb["class_path"]) for cb in trainer["callbacks"]):
        # the transfer run averages by default (default_callbacks); without sources the CLI would not add it
        trainer["callbacks"].append({"class_path": "rec_transfer.callbacks.TargetWeightAveraging"})
    for cb in trainer["callbacks"]:
        if cb.get("init_args", {}).get("dirpath"):  # checkpoints
            cb["init_args"]["dirpath"] += "-target_only"
    logger = trainer.get("logger")
    if isinstance(logger, dict) and logger.get("init_args", {}).get("name"):
        logger["init_args"]["name"] += "-target_only"
    if cfg.get("results_json"):
        path = Path(cfg["results_json"])
        cfg["results_json"] = str(path.with_name(f"{path.stem}-target_only{path.suffix}"))
    return cfg


def _is_transfer(class_path: str) -> bool:
    """Whether a callback's class path names ``DomainTransfer`` (or a subclass of it)."""
    return names_subclass(class_path, DomainTransfer)


def _is_averaging(class_path: str) -> bool:
    """Whether a callback's class path names a weight averaging (Lightning's, or ``TargetWeightAveraging``)."""
    return any(names_subclass(class_path, base) for base in AVERAGING_CALLBACKS)


def names_subclass(class_path: str, base: type) -> bool:
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return name == base.__name__
    return isinstance(cls, type) and issubclass(cls, base)
