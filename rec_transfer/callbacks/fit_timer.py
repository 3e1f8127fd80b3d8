"""``FitTimer``: training seconds per epoch and the target's validation curve over time, for speed reports."""

from __future__ import annotations

import time

import lightning as L
from lightning.pytorch.callbacks import Callback


def _validated_domains(trainer: L.Trainer) -> set[str]:
    loaders = trainer.val_dataloaders
    loaders = loaders if isinstance(loaders, list | tuple) else [loaders]
    return {getattr(dl.dataset, "domain", None) for dl in loaders if dl is not None}


class FitTimer(Callback):
    """Times a fit: each training epoch, and when each target validation reached which NDCG@10.

    The command line adds it to every run and writes both lists to ``results.json``.

    Attributes:
        train_epoch_seconds: one entry per training epoch run, from its start to the end of its last step
            (validation excluded); also logged as ``time/train_epoch_s``.
        val_history: one entry per target validation of the fit (the sanity check excluded): ``epoch``,
            ``seconds`` since the fit started and the target's ``ndcg@10``, for time-to-quality reports.
    """

    def __init__(self) -> None:
        self.train_epoch_seconds: list[float] = []
        self.val_history: list[dict[str, float]] = []
        self._fit_start: float | None = None
        self._epoch_start: float | None = None
        self._last_step_end = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = None  # validations of later validate/test calls are not part of this fit

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = self._last_step_end = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._last_step_end = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch_start is None:  # a resumed run finishing an epoch that ended before the restart
            return
        self.train_epoch_seconds.append(self._last_step_end - self._epoch_start)
        pl_module.log("time/train_epoch_s", self.train_epoch_seconds[-1])

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the model's on_validation_epoch_end: this validation's metrics are in callback_metrics by now.
        if self._fit_start is None or trainer.sanity_checking:
            return
        target = getattr(trainer.datamodule, "target_name", None)
        value = trainer.callback_metrics.get(f"val/{target}/ndcg@10")
        if value is None or target not in _validated_domains(trainer):  # the target was not validated this time
            return
        self.val_history.append({
            "epoch": trainer.current_epoch,
            "seconds": round(time.perf_counter() - self._fit_start, 3),
            "ndcg@10": round(float(value), 5),
        })  # fmt: skip
