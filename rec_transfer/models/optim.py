"""The recommender's optimizer (parameter groups with their learning rates, as the transfer phase says), and what the
switch may do to the weights it starts from: pull them back towards the handed-over ones, or mix a fresh model in."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

# The default recipe's learning-rate scales after the switch: the text adaptor learns the target's items at twice the
# target learning rate, the rest at it (docs/findings.md, "The text adaptor at twice the target learning rate").
RECIPE_TARGET_LR_SCALE = {"item_tower.adaptor": 2.0}


def recipe_target_lr_scale(mode: str) -> dict[str, float]:
    """The default recipe's ``target_lr_scale`` for a model of ``mode``: none for ``id``, which has no text adaptor."""
    return {} if mode == "id" else dict(RECIPE_TARGET_LR_SCALE)


def param_groups(
    model: nn.Module,
    lr: float,
    text: nn.Module | None = None,
    text_lr: float | None = None,
    scales: Mapping[str, float] | None = None,
) -> list[dict]:
    """Parameter groups of ``model``'s trainable parameters: each submodule named in ``scales`` at ``lr × scale``,
    the language model's trainable top (``text``) at ``text_lr`` (``lr`` if None), everything else at ``lr``.

    Raises:
        ValueError: a name in ``scales`` is not a submodule of ``model``.
    """
    scales = dict(scales or {})
    groups: list[dict] = []
    taken: set[int] = set()
    for name, scale in scales.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"a learning-rate scale names {name!r}, which is not a part of the model") from None
        params = [p for p in module.parameters() if p.requires_grad and id(p) not in taken]
        groups.append({"params": params, "lr": lr * scale})
        taken |= {id(p) for p in params}
    if text is not None:
        params = [p for p in text.parameters() if p.requires_grad and id(p) not in taken]
        groups.append({"params": params, "lr": lr if text_lr is None else text_lr})
        taken |= {id(p) for p in params}
    groups.append({"params": [p for p in model.parameters() if p.requires_grad and id(p) not in taken], "lr": lr})
    return [g for g in groups if g["params"]]


def adamw_with_warmup(groups: list[dict], weight_decay: float, warmup_steps: int) -> dict:
    """AdamW over ``groups`` with a linear warm-up of ``warmup_steps`` steps, as Lightning's optimizer config."""
    if not groups:
        raise ValueError("every parameter is frozen: nothing to train (see DomainTransfer's freeze)")
    optimizer = torch.optim.AdamW(groups, weight_decay=weight_decay)
    warmup = max(1, warmup_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


@torch.no_grad()
def decay_towards(optimizer: torch.optim.Optimizer, anchors: Mapping[int, torch.Tensor], strength: float) -> None:
    """Decoupled weight decay towards ``anchors`` (keyed by ``id`` of the parameter, each on its parameter's device)
    instead of towards zero: each anchored parameter with a gradient moves ``lr × strength`` of the way to its anchor,
    at its group's learning rate.

    L2-SP (Li et al., 2018) in AdamW's decoupled form; written here because torch's optimizers only decay to zero.
    Called right before ``optimizer.step()``, where AdamW applies its own decay.
    """
    for group in optimizer.param_groups:
        rate = min(1.0, group["lr"] * strength)
        for p in group["params"]:
            anchor = anchors.get(id(p))
            if anchor is not None and p.grad is not None:
                p.lerp_(anchor, rate)


def reset_recursively(module: nn.Module) -> None:
    """Calls ``reset_parameters`` of ``module`` and of every submodule, children before their parent (a parent's own
    initialisation, e.g. ``SequenceEncoder``'s, overrides its children's defaults), except under modules that set
    ``pretrained_weights`` (a language model's weights are not a random initialisation)."""
    if getattr(module, "pretrained_weights", False):
        return
    for child in module.children():
        reset_recursively(child)
    if hasattr(module, "reset_parameters"):
        module.reset_parameters()


@torch.no_grad()
def mix_with_fresh_init(module: nn.Module, share: float, seed: int) -> None:
    """Every trainable parameter of ``module`` becomes ``(1 - share) ×`` itself ``+ share ×`` a fresh initialisation
    drawn with ``seed`` (the same on every process; torch's global random state is left as it was).

    Shrink and perturb (Ash & Adams, 2020), with the perturbation drawn as the model's own initialisation rather
    than as noise of a chosen scale: a warm-started model keeps its direction and regains some of a fresh one's
    plasticity. Frozen parameters and language-model weights (``pretrained_weights``) stay as they are.
    """
    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    devices = sorted({p.device.index or 0 for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        reset_recursively(module)
    for name, p in module.named_parameters():
        if p.requires_grad:
            p.lerp_(before[name], 1.0 - share)
        else:
            p.copy_(before[name])
