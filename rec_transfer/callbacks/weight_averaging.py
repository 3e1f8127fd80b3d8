"""``TargetWeightAveraging``: an exponential moving average of the weights, over the target phase only."""

from __future__ import annotations

import functools
import logging
import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import EMAWeightAveraging, StochasticWeightAveraging, WeightAveraging
from lightning.pytorch.trainer.states import TrainerFn
from torch.optim.swa_utils import AveragedModel

from rec_transfer.models.components.item_text import TrainableItemText
from rec_transfer.phase import current_phase

log = logging.getLogger(__name__)

# What counts as a config's own weight averaging (the default one is not added beside it).
AVERAGING_CALLBACKS = (WeightAveraging, StochasticWeightAveraging)


@torch.no_grad()
def ema_update(average: torch.Tensor, current: torch.Tensor, num_averaged: torch.Tensor, decay: float) -> torch.Tensor:
    """``torch.optim.swa_utils.get_ema_avg_fn(decay)``'s update, as a module-level function (picklable)."""
    return decay * average + (1 - decay) * current


class TargetWeightAveraging(EMAWeightAveraging):
    """Lightning's ``EMAWeightAveraging`` over the target phase: validation, checkpoints, the test and the final
    weights are those of the running average of the target-phase weights.

    The average starts from the weights after the first target step, so nothing of the source phase is averaged
    into the target model; the source phase trains, validates and checkpoints the plain weights. Lightning's
    callback builds its average when the fit starts, before the model's ``setup`` has added the domains' tables;
    this one builds it at the first target epoch (or, on a resumed fit, from the checkpoint). A checkpoint written
    in the target phase holds the average as ``state_dict`` (what ``test`` / ``predict --ckpt_path``,
    ``--model.pretrained`` and the fit's own test load) and the trained weights as ``current_model_state`` (what a
    fit resumed from it trains on from).

    The average is a copy of the parameters only: it shares the model's buffers (item tables, cached token states),
    which are never averaged. With the language model in the loop (``text_encoder.train_layers``) its top layers
    are averaged too; each swap of the weights marks the item banks stale, so validation scores the average's
    vectors and training the trained weights' (one more refresh of each catalogue per epoch).

    A fit with source domains whose config names no weight averaging gets this one with its defaults (see
    ``default_callbacks``); ``decay: 0`` turns it off.

    Args:
        decay: weight of the running average at each optimizer step: it averages over about ``1 / (1 - decay)``
            steps (0.99: about 100 steps, 11 epochs of Scientific in batches of 1024 histories). 0: no average,
            the trained weights throughout (what an average over one step would be, without its copy).
    """

    def __init__(self, decay: float = 0.99):
        if not 0 <= decay < 1:
            raise ValueError(f"TargetWeightAveraging decay must be in [0, 1), got {decay}")
        self.decay = decay
        # Buffers are not averaged: they are item tables and popularity, constant through a fit.
        super().__init__(use_buffers=False, decay=decay)
        # Lightning's average function is a closure, which ddp_spawn cannot pickle; this is the same update.
        self._kwargs["avg_fn"] = functools.partial(ema_update, decay=decay)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            self._average_model = None  # built at the first target epoch, once the model has every domain

    def _averaging(self) -> bool:
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    def _start_average(self, pl_module: L.LightningModule) -> None:
        # AveragedModel deep-copies the module and, with use_buffers=False, copies every buffer into its copy after
        # each step: the item tables and token states would take twice the memory and a copy a step, for nothing
        # (never averaged, never swapped). Held out of the copy and shared, each step's copy is a no-op.
        live = list(pl_module.modules())
        buffers = [m._buffers for m in live]
        try:
            for m in live:
                m._buffers = {}
            self._average_model = AveragedModel(
                pl_module, device=pl_module.device, use_buffers=self._use_buffers, **self._kwargs
            )
        finally:
            for m, held in zip(live, buffers, strict=True):
                m._buffers = held
        for copy, held in zip(self._average_model.module.modules(), buffers, strict=True):
            copy._buffers = dict(held)

    @staticmethod
    def _weights_swapped(pl_module: L.LightningModule) -> None:
        for m in pl_module.modules():
            if isinstance(m, TrainableItemText):
                m.weights_replaced()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._average_model is None and self.decay > 0 and current_phase(trainer) == "target":
            self._start_average(pl_module)  # the first update copies the weights of the first target step
            per_epoch = trainer.num_training_batches / trainer.accumulate_grad_batches
            if trainer.is_global_zero and math.isfinite(per_epoch) and per_epoch > 0:
                steps = 1 / (1 - self.decay)  # so a user sees a horizon too long for the target's epochs
                log.info("averaging the target weights over about %.0f steps, %.1f epochs", steps, steps / per_epoch)
                left = (trainer.max_epochs or 0) - trainer.current_epoch  # max_epochs -1 or None: no limit
                if 0 < left < steps / per_epoch:
                    log.warning(
                        "the average spans about %.0f epochs, more than the %d left before max_epochs: the averaged "
                        "model (validated, tested, saved) stays near where the target phase started; lower "
                        "TargetWeightAveraging's decay (0: off) or raise trainer.max_epochs", steps / per_epoch, left,
                    )  # fmt: skip

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        # Lightning's hook for when to update: never in the source phase, where there is no average yet.
        return self._average_model is not None and super().should_update(step_idx=step_idx, epoch_idx=epoch_idx)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._averaging():
            super().on_validation_epoch_start(trainer, pl_module)
            self._weights_swapped(pl_module)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._averaging():
            super().on_validation_epoch_end(trainer, pl_module)
            self._weights_swapped(pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._averaging():
            super().on_train_end(trainer, pl_module)
            self._weights_swapped(pl_module)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._averaging():
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # Testing or predicting from a checkpoint: its state_dict, the average, is already loaded. Lightning's
        # callback would load the trained weights over it when it still holds the fit's average.
        if trainer.state.fn != TrainerFn.FITTING or "averaging_state" not in checkpoint:
            return  # nor does a checkpoint of the source phase hold an average: it starts at the first target epoch
        self._start_average(pl_module)
        super().on_load_checkpoint(trainer, pl_module, checkpoint)
