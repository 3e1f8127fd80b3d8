"""Which hyperparameters of ``TransferRecommender`` a checkpoint fixes, and which a run from it may change.

A run from a checkpoint (``--ckpt_path``: resume, validate, test, predict) starts from the checkpoint's
hyperparameters. A value the user gives (config file or command line) that differs is, per key:

- refused, naming the key and both values, if the weights only mean something with the checkpoint's value
  (``FIXED_BY_WEIGHTS``: the architecture and the scoring function);
- applied otherwise: evaluation and prediction settings (``EVALUATION``) and how training goes on
  (``TRAINING``: on resume the optimizer takes the new learning rates and weight decay, see
  ``TransferRecommender.on_train_start``).

Never silently dropped. Every argument of ``TransferRecommender`` is in exactly one of the three sets (a test checks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

FIXED_BY_WEIGHTS = frozenset(
    {
        "mode",
        "hidden_size",
        "layers",
        "heads",
        "inner_size",
        "adaptor_experts",
        "max_len",
        "similarity",
        "align_weight",
        "history_bias",
    }
)
EVALUATION = frozenset({"top_k", "exclude_history", "item_chunk", "eval_dtype", "cutoffs"})
TRAINING = frozenset(
    {
        "lr", "lr_scale", "target_lr", "target_lr_scale", "text_lr", "weight_decay", "warmup_steps",
        "target_warmup_steps", "dropout", "adaptor_dropout", "temperature", "loss", "num_negatives",
        "text_items_per_step", "align_items", "text_write_back", "contrast_weight", "contrast_mask", "pretrained",
    }
)  # fmt: skip

# Keys added after checkpoints were already written, with the value those checkpoints' weights were trained with.
SINCE = {"history_bias": False, "text_write_back": False}


def _same(a: Any, b: Any) -> bool:
    """Equal settings; a list and a tuple of the same values too (a config gives lists, a checkpoint keeps tuples)."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return list(a) == list(b)
    return a == b


def checkpoint_hparams(
    saved: Mapping[str, Any], given: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, tuple[Any, Any]]]:
    """The hyperparameters of a run from a checkpoint: ``saved`` (the checkpoint's) with the user's ``given`` values
    applied where the weights allow.

    Args:
        saved: the checkpoint's ``hyper_parameters``.
        given: the model arguments the user set explicitly (config files and command line, not the defaults).

    Returns:
        ``(hparams, applied)``: the values to run with, and ``{key: (checkpoint's value, user's value)}`` for every
        key where the user's value replaced a different one of the checkpoint.

    Raises:
        ValueError: a ``FIXED_BY_WEIGHTS`` key differs, naming every such key and both values.
    """
    saved = {**SINCE, **saved}
    differ = {k: (saved[k], v) for k, v in given.items() if k in saved and not _same(saved[k], v)}
    fixed = {k: values for k, values in differ.items() if k in FIXED_BY_WEIGHTS}
    if fixed:
        found = "; ".join(f"{k}: checkpoint {old!r}, given {new!r}" for k, (old, new) in sorted(fixed.items()))
        raise ValueError(
            f"its weights were trained with other model settings ({found}); these cannot change with the weights: "
            "give the checkpoint's values or drop them from the config and command line"
        )
    return {**saved, **{k: v for k, v in given.items() if k in saved}}, differ


def apply_optimizer_settings(
    optimizer: torch.optim.Optimizer, scheduler: Any, groups: list[dict], hparams: Mapping[str, Any]
) -> None:
    """Sets the learning rate of each of ``optimizer``'s parameter groups (from ``groups``, as the model builds them)
    and ``hparams["weight_decay"]``, over what a checkpoint restored; a ``LambdaLR`` ``scheduler`` keeps its
    position (the learning rate is the new base times its factor at the current step)."""
    if len(groups) != len(optimizer.param_groups):
        return  # not the optimizer the model builds: nothing to map the settings onto
    lambda_lr = isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR)
    for i, (group, wanted) in enumerate(zip(optimizer.param_groups, groups, strict=True)):
        group.update(weight_decay=hparams["weight_decay"], initial_lr=wanted["lr"], lr=wanted["lr"])
        if lambda_lr:
            scheduler.base_lrs[i] = wanted["lr"]
            group["lr"] = wanted["lr"] * scheduler.lr_lambdas[i](scheduler.last_epoch)
    if lambda_lr:
        scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
