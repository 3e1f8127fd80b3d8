"""``TensorBoardHparams``: the HPARAMS tab with the settings that tell runs apart, and a transfer phase marker."""

from __future__ import annotations

import os
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger

from rec_transfer.callbacks.progress import MONITOR, target_validated
from rec_transfer.phase import current_phase, find_schedule

BEST = "hp/best_val_ndcg@10"
TEST = "hp/test_ndcg@10"  # logged by the model when it tests
# The target's validation NDCG@10 by epochs trained on the target (0: the zero-shot point), so a transfer run's curve
# and its target-only baseline's start at one step and the head start shows where they are overlaid.
BY_TARGET_EPOCH = "target_epochs/val_ndcg@10"


def _value(v: Any) -> int | float | str | bool:
    """What the HPARAMS tab can show: numbers, strings and booleans; lists joined, None as "none"."""
    if isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, list | tuple):
        return ", ".join(map(str, v)) or "none"
    return "none" if v is None else str(v)


def run_hparams(trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
    """The model's hyper-parameters and what else sets a run apart: data, transfer and trainer settings."""
    params = {f"model/{k}": v for k, v in pl_module.hparams.items() if not k.startswith("_")}
    dm = trainer.datamodule
    sources = list(getattr(dm, "source_names", []) or [])
    domains = getattr(dm, "domains", {})
    target = domains.get(getattr(dm, "target_name", None))
    params["data/target"] = getattr(dm, "target_name", None)
    params["data/sources"] = sources
    if target is not None:
        encoder = target.text_encoder
        params["data/batch_size"] = target.batch_size
        params["data/max_len"] = target.max_len
        params["data/text_model"] = encoder.model_name if encoder is not None else None
        params["data/text_train_layers"] = encoder.train_layers if encoder is not None else 0
        params["data/text_center"] = encoder.center if encoder is not None else False
        params["data/text_whiten"] = encoder.whiten if encoder is not None else False
    if sources:
        params["data/source_batch_size"] = [domains[s].batch_size for s in sources]
    schedule = find_schedule(trainer)
    transfer = schedule is not None and bool(sources)
    params["transfer/source_epochs"] = getattr(schedule, "source_epochs", 0) if transfer else 0
    params["transfer/source_patience"] = getattr(schedule, "source_patience", None) if transfer else None
    params["transfer/freeze"] = getattr(schedule, "freeze", []) if transfer else []
    params["transfer/handover"] = getattr(schedule, "handover", None) if transfer else None
    params["transfer/anchor"] = getattr(schedule, "anchor", 0.0) if transfer else 0.0
    params["transfer/reinit"] = getattr(schedule, "reinit", 0.0) if transfer else 0.0
    params["transfer/joint"] = bool(getattr(dm, "hparams", {}).get("joint", False)) if transfer else False
    params["transfer/rehearsal"] = float(getattr(dm, "hparams", {}).get("rehearsal", 0.0)) if transfer else 0.0
    params["seed"] = os.environ.get("PL_GLOBAL_SEED")
    params["trainer/max_epochs"] = trainer.max_epochs
    params["trainer/precision"] = trainer.precision
    params["trainer/devices"] = trainer.world_size
    return {k: _value(v) for k, v in params.items()}


class TensorBoardHparams(Callback):
    """Fills TensorBoard's HPARAMS tab and marks the transfer phase on the time axis.

    At the start of a fit it writes the run's settings (``run_hparams``: model, data, transfer: sources, source
    epochs, freezing, handover, anchor, reinit, joint source phase, rehearsal, batch sizes) with two metrics,
    ``hp/best_val_ndcg@10`` (the best target validation so far: the tab shows a metric's last value, so this is the
    best, not the last validation) and ``hp/test_ndcg@10``. No value is written before one is measured.
    ``transfer/phase`` is 0 on source epochs and 1 on target epochs. ``target_epochs/val_ndcg@10`` is the target's
    validation NDCG@10 at the step of the epochs trained on the target (0: the zero-shot point; a run without
    sources starts at 1). The best value is kept in checkpoints, so a resumed run continues it.
    """

    def __init__(self) -> None:
        self.best: float | None = None

    @staticmethod
    def _loggers(trainer: L.Trainer) -> list[TensorBoardLogger]:
        return [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = self._loggers(trainer)
        if not loggers or not trainer.is_global_zero:
            return
        from torch.utils.tensorboard.summary import hparams

        # The metrics are named only: their values come as they are measured (no placeholder at step 0).
        summaries = hparams(run_hparams(trainer, pl_module), {BEST: None, TEST: None})
        for logger in loggers:
            writer = logger.experiment._get_file_writer()
            for summary in summaries:
                writer.add_summary(summary)

    @staticmethod
    def _switch_epoch(schedule) -> int:
        return getattr(schedule, "switch_epoch", None) or 0  # no schedule (no sources): the target from epoch 0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        schedule = find_schedule(trainer)
        if schedule is not None:
            phase = 1.0 if current_phase(trainer) == "target" else 0.0
            for logger in trainer.loggers:
                logger.log_metrics({"transfer/phase": phase}, step=trainer.global_step)
            # The switch has just scored the handed-over model (DomainTransfer runs first): the curve's start.
            target = getattr(trainer.datamodule, "target_name", None)
            zero_shot = getattr(schedule, "zero_shot_metrics", {}).get(f"zeroshot/{target}/ndcg@10")
            if phase and zero_shot is not None and trainer.current_epoch == self._switch_epoch(schedule):
                for logger in trainer.loggers:
                    logger.log_metrics({BY_TARGET_EPOCH: zero_shot}, step=0)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not target_validated(trainer):
            return
        value = trainer.callback_metrics.get(MONITOR)
        if value is None:
            return
        self.best = float(value) if self.best is None else max(self.best, float(value))
        target_epochs = trainer.current_epoch - self._switch_epoch(find_schedule(trainer)) + 1
        for logger in trainer.loggers:
            logger.log_metrics({BEST: self.best}, step=trainer.global_step)
            logger.log_metrics({BY_TARGET_EPOCH: float(value)}, step=target_epochs)

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")
