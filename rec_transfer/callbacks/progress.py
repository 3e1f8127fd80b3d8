"""``EpochProgress``: what a fit is doing, as plain log lines that read well in a file (nohup, cluster jobs)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn

from rec_transfer.phase import current_phase, find_schedule

log = logging.getLogger(__name__)
MONITOR = "hp/val_ndcg@10"  # the target's validation NDCG@10, as the model logs it


def validated_domains(trainer: L.Trainer) -> list[str]:
    """The domains of the current validation loaders, in their order."""
    loaders = trainer.val_dataloaders
    loaders = loaders if isinstance(loaders, list | tuple) else [loaders]
    return [getattr(dl.dataset, "domain", None) for dl in loaders if dl is not None]


def target_validated(trainer: L.Trainer) -> bool:
    """Whether the validation that just ended was one of a fit's (not its sanity check, nor ``validate``) and covered
    the target domain, after the switch in a transfer run (as the best checkpoint is chosen: ``LatestCheckpoint``)."""
    target = getattr(trainer.datamodule, "target_name", None)
    fitting = trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking
    fine_tuned = current_phase(trainer) == "target"  # as throughout a run without sources
    return fitting and fine_tuned and target in validated_domains(trainer)


def _count(n: int) -> str:
    return f"{n / 1e6:.1f} M" if n >= 1e6 else f"{n / 1e3:.1f} K" if n >= 1e3 else str(n)


class EpochProgress(Callback):
    """Logs a line when training starts and, without a progress bar, one line per epoch.

    The start line names the domains, the model's size, the devices and the run folder. An epoch line gives the
    phase, the mean training loss, each validated domain's NDCG@10 (the target's with its best so far) and the
    epoch's seconds. The command line turns the progress bar off when its output is not a terminal, so a log file
    gets these lines as training goes, not a progress bar's last frame at the end.

    It also keeps the target's best validation NDCG@10 and its epoch (``best``), across resume: the fit summary
    reports them.
    """

    def __init__(self) -> None:
        # {"epoch", "ndcg@10"} of the best target validation, its score exact: a rounded one lets a later, lower
        # score look better.
        self.best: dict[str, float | int] | None = None
        self._loss_sum: torch.Tensor | None = None
        self.world_size: int | None = None  # processes the run trained on, kept in the checkpoint
        self._steps = 0
        self._start = 0.0

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        where = f"; run folder {trainer.log_dir}" if trainer.loggers else ""  # every rank: a broadcast under DDP
        was, self.world_size = self.world_size, trainer.world_size
        if not trainer.is_global_zero:
            return
        if was is not None and was != trainer.world_size:
            log.warning(
                "resumed on %d process(es), trained so far on %d: batches are now split otherwise, so the numbers "
                "will differ from those of an uninterrupted run", trainer.world_size, was,
            )  # fmt: skip
        dm = trainer.datamodule
        sources = list(getattr(dm, "source_names", []) or [])
        what = f"{dm.target_name} ← {', '.join(sources)}" if sources else f"{dm.target_name} alone"
        if sources and getattr(getattr(dm, "hparams", None), "joint", False):
            what += " (joint: the target's training histories in the source phase too)"
        rehearsal = getattr(getattr(dm, "hparams", None), "rehearsal", 0)
        if sources and rehearsal:
            what += f" (rehearsal: {rehearsal:g} source batches for each target batch after the switch)"
        trainable = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        devices = f"{trainer.num_devices} {trainer.accelerator.__class__.__name__.removesuffix('Accelerator').lower()}"
        log.info(
            "training %s: %s trainable parameters, at most %s epochs, %s device(s), precision %s%s",
            what, _count(trainable), trainer.max_epochs, devices, trainer.precision, where,
        )  # fmt: skip

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._loss_sum, self._steps, self._start = None, 0, time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            loss = loss.detach()  # summed on the device: no sync per step
            self._loss_sum = loss if self._loss_sum is None else self._loss_sum + loss
            self._steps += 1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not target_validated(trainer):
            return
        value = trainer.callback_metrics.get(MONITOR)
        # Strictly higher than the exact best so far, as the checkpoint callback and early stopping compare.
        if value is not None and (self.best is None or float(value) > self.best["ndcg@10"]):
            self.best = {"epoch": trainer.current_epoch, "ndcg@10": float(value)}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After this epoch's validation (Lightning 2 validates before on_train_epoch_end).
        if trainer.progress_bar_callback is not None or not trainer.is_global_zero or not self._steps:
            return
        parts = [f"loss {float(self._loss_sum) / self._steps:.4f}"]
        dm, metrics = trainer.datamodule, trainer.callback_metrics
        scores = []
        for name in validated_domains(trainer):
            value = metrics.get(f"val/{name}/ndcg@10")
            if value is None:
                continue
            score = f"{name} {float(value):.4f}"
            if name == getattr(dm, "target_name", None) and self.best is not None:
                score += f" (best {self.best['ndcg@10']:.4f} at epoch {self.best['epoch']})"
            scores.append(score)
        if scores:
            parts.append("val NDCG@10 " + ", ".join(scores))
        parts.append(f"{time.perf_counter() - self._start:.1f} s")
        phase = f" {current_phase(trainer)}" if find_schedule(trainer) is not None else ""
        of = f"/{trainer.max_epochs - 1}" if trainer.max_epochs and trainer.max_epochs > 0 else ""
        log.info("epoch %d%s%s: %s", trainer.current_epoch, of, phase, " | ".join(parts))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Lightning catches Ctrl-C, tears down and exits with status 1, saying so only below our log level.
        if not isinstance(exception, KeyboardInterrupt) or not trainer.is_global_zero:
            return
        if trainer.state.fn != TrainerFn.FITTING:
            log.info("interrupted")
            return
        last = getattr(trainer.checkpoint_callback, "last_model_path", "") or ""
        if last and Path(last).is_file():
            log.info(
                "interrupted in epoch %d: the same command with --ckpt_path last resumes from the end of the last "
                "finished epoch (%s)", trainer.current_epoch, last,
            )  # fmt: skip
        else:
            log.info(
                "interrupted in epoch %d, before the first checkpoint: nothing to resume, a new fit starts over "
                "(preprocessed domains and text vectors stay cached)", trainer.current_epoch,
            )  # fmt: skip

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "world_size": self.world_size}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.world_size = state_dict.get("best"), state_dict.get("world_size")
