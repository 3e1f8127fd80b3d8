"""``FitTimer``: training seconds per epoch and the target's validation curve over time, for speed reports."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from rec_transfer.callbacks.progress import validated_domains


class FitTimer(Callback):
    """Times a fit: each training epoch, and when each target validation reached which NDCG@10.

    The command line adds it to every run and writes both lists to ``results.json``.

    Attributes:
        train_epoch_seconds: one entry per training epoch run, from its start to the end of its last step
            (validation excluded); also logged as ``time/train_epoch_s``.
        val_history: one entry per target validation of the fit (the sanity check excluded): ``epoch``,
            ``seconds`` since the fit started and the target's ``ndcg@10``, for time-to-quality reports.
        fit_seconds: the fit's duration, known once it ended.

    All three cover the whole fit across resumes: they are kept in the checkpoint, and a resumed fit's clock starts
    from the seconds the checkpoint had counted (the time between that checkpoint and the interruption is lost, as
    the work done in it is redone).
    """

    def __init__(self) -> None:
        self.train_epoch_seconds: list[float] = []
        self.val_history: list[dict[str, float]] = []
        self.fit_seconds: float | None = None
        self._fit_start: float | None = None
        self._resumed_seconds = 0.0  # counted before the checkpoint this fit resumed from
        self._epoch_start: float | None = None
        self._last_step_end = 0.0
        self._resumed_epoch_seconds: float | None = None  # training seconds of the epoch a checkpoint interrupted

    def _elapsed(self) -> float:
        return time.perf_counter() - self._fit_start if self._fit_start is not None else self._resumed_seconds

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_start = time.perf_counter() - self._resumed_seconds  # the checkpoint's state is loaded by now

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.fit_seconds = self._elapsed()
        self._fit_start = None  # validations of later validate/test calls are not part of this fit
        self._resumed_seconds = 0.0

    def state_dict(self) -> dict[str, Any]:
        return {
            "train_epoch_seconds": list(self.train_epoch_seconds),
            "val_history": [dict(h) for h in self.val_history],
            "seconds": self._elapsed(),
            "epoch_seconds": None if self._epoch_start is None else self._last_step_end - self._epoch_start,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.train_epoch_seconds = list(state_dict["train_epoch_seconds"])
        self.val_history = [dict(h) for h in state_dict["val_history"]]
        self._resumed_seconds = float(state_dict["seconds"])
        self._resumed_epoch_seconds = state_dict.get("epoch_seconds")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = self._last_step_end = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if self._epoch_start is None:  # resumed in the middle of an epoch: go on from the seconds it had
            self._epoch_start = time.perf_counter() - (self._resumed_epoch_seconds or 0.0)
            self._resumed_epoch_seconds = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        self._last_step_end = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._epoch_start is None:  # a resumed run finishing an epoch whose steps ran before the restart
            if self._resumed_epoch_seconds is not None:
                self.train_epoch_seconds.append(self._resumed_epoch_seconds)
                self._resumed_epoch_seconds = None
            return
        self.train_epoch_seconds.append(self._last_step_end - self._epoch_start)
        self._epoch_start = None  # counted: a checkpoint written from now on holds no epoch in progress
        pl_module.log("time/train_epoch_s", self.train_epoch_seconds[-1], sync_dist=True)  # the ranks' mean

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the model's on_validation_epoch_end: this validation's metrics are in callback_metrics by now.
        if self._fit_start is None or trainer.sanity_checking:
            return
        target = getattr(trainer.datamodule, "target_name", None)
        value = trainer.callback_metrics.get(f"val/{target}/ndcg@10")
        if value is None or target not in validated_domains(trainer):  # the target was not validated this time
            return
        self.val_history.append({
            "epoch": trainer.current_epoch,
            "seconds": round(self._elapsed(), 3),
            "ndcg@10": round(float(value), 5),
        })  # fmt: skip
