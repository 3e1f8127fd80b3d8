"""``EpochSeed``: torch's global RNG reseeded at every training epoch, so a resumed run draws what an uninterrupted one
would."""

from __future__ import annotations

import os

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


def global_seed() -> int:
    """The seed ``seed_everything`` set (``PL_GLOBAL_SEED``; 0 without it)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


class EpochSeed(Callback):
    """Reseeds torch from ``(seed, epoch, rank)`` before each epoch's first training step.

    Lightning does not checkpoint RNG states, so without this a run resumed at an epoch boundary would
    draw other dropout masks than an uninterrupted one. The seed is the one ``seed_everything`` set
    (``PL_GLOBAL_SEED``; 0 without it). Training batches need no reseeding: their order depends only
    on the sampler's seed and the epoch.
    """

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if batch_idx == 0:
            torch.manual_seed(global_seed() * 1_000_003 + trainer.current_epoch * 1009 + trainer.global_rank)
