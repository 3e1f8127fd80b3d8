"""``ModelCheckpoint`` whose ``last.ckpt`` really is the latest validated state."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class LatestCheckpoint(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint``, rewriting ``last.ckpt`` at every validation.

    With a ``monitor``, Lightning 2.6 rewrites ``last.ckpt`` only when a top-k checkpoint is saved
    in the same step, so ``--ckpt_path last`` would go back to the best epoch and redo the epochs
    after it. Here ``last.ckpt`` follows every validation, as users expect.
    """

    def _save_last_now(self, trainer: L.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):  # skips if already saved this step
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    # Lightning saves in one of these two hooks; follow it there, after its own top-k save.
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_now(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_now(trainer)
