"""``DomainTransfer``: source phase, then the switch to the target domain, inside one ``fit``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping

from rec_transfer.metrics import RankingMetrics
from rec_transfer.models.optim import decay_towards, mix_with_fresh_init
from rec_transfer.phase import Phase, PhaseAware, PhaseSchedule, current_phase
from rec_transfer.utils.files import atomic_path
from rec_transfer.utils.seeding import global_seed

log = logging.getLogger(__name__)

HANDOVER_FILE = "handover.ckpt"  # in the run folder: the source-trained model as handed over to the target


class DomainTransfer(Callback, PhaseSchedule):
    """Trains on the source domains, then switches to the target and starts a fresh optimizer.

    The switch happens after ``source_epochs`` epochs, or earlier once the mean source validation
    NDCG@10 has not improved for ``source_patience`` validations. At the first target epoch the
    callback freezes the requested submodules, tells the model (``on_transfer_phase("target")``, see
    ``rec_transfer.phase.PhaseAware``), rebuilds optimizer and scheduler through the strategy, and
    logs a zero-shot evaluation of the target: validation split as ``zeroshot/<target>/...``, test
    split as ``zeroshot_test/<target>/...``. Other modules read the phase of an epoch through
    ``rec_transfer.phase.current_phase``. With a logger and source domains, the handed-over model is written to
    the run folder as ``handover.ckpt`` (its weights): ``--model.pretrained`` starts another target from it, without
    a source phase.

    Its state (switch epoch, which phase the optimizer was built for, patience counters, the zero-shot
    result, with ``handover="best"`` the weights to hand over, with ``anchor`` the weights handed over) lives in
    the checkpoint and is restored before optimizers are rebuilt, so a resumed run continues exactly where it
    stopped.

    Args:
        source_epochs: most epochs on the source domains.
        source_patience: switch earlier after this many validations without improvement of the sources'
            validation (None: never).
        freeze: submodules of the model to freeze on the target, e.g. ``["encoder"]`` (the
            sequence encoder) or ``["encoder", "item_tower.adaptor"]``. By default none: the whole model
            fine-tunes on the target, which transferred better than an adaptor-only fine-tune across targets
            (docs/findings.md).
        zero_shot: evaluate the target with the source-trained model right before its first step.
        handover: which source-trained weights the target starts from: ``last``, the weights of the last source
            epoch; ``best``, those of the source epoch whose target validation NDCG@10 was best (the zero-shot
            model that validation picks; needs the target validated during the source phase, which
            ``TransferDataModule`` does by default). Later source epochs fit the sources more closely and often
            score lower on the target. ``average``, a running average of the source phase's weights (an exponential
            moving average, ``average_decay`` a step), as ``TargetWeightAveraging`` averages the target phase's.
        average_decay: with ``handover="average"``, the weight of the running average at each source step: it
            averages over about ``1 / (1 - average_decay)`` steps (0.98: about 50 steps, most of a source epoch of
            the shipped configs).
        anchor: after the switch, right before each optimizer step, every trainable weight moves ``lr × anchor`` of
            the way back to its value at the switch (L2-SP as a decoupled decay: AdamW's weight decay, pulling
            towards the handed-over weights instead of zero). The fine-tuned model stays near what the sources
            taught it; 0 (the default): off.
        reinit: at the switch, every trainable weight becomes ``(1 - reinit) ×`` the handed-over one ``+ reinit ×`` a
            fresh initialisation (shrink and perturb, ``rec_transfer.models.optim.mix_with_fresh_init``): the target
            starts from the sources' direction with some of a fresh model's plasticity. The language model's own
            weights and frozen submodules are kept; the zero-shot evaluation and ``handover.ckpt`` are of the
            handed-over model. 0 (the default): off; 1: a fresh model, as training on the target alone.
    """

    def __init__(
        self,
        source_epochs: int = 4,
        source_patience: int | None = 2,
        freeze: list[str] | None = None,
        zero_shot: bool = True,
        handover: Literal["last", "best", "average"] = "last",
        anchor: float = 0.0,
        reinit: float = 0.0,
        average_decay: float = 0.98,
    ):
        if not 0.0 < average_decay < 1.0:
            raise ValueError(f"DomainTransfer average_decay must be between 0 and 1, got {average_decay}")
        self.average_decay = average_decay
        if anchor < 0:
            raise ValueError(f"DomainTransfer anchor must be >= 0 (0: off), got {anchor}")
        if not 0.0 <= reinit <= 1.0:
            raise ValueError(f"DomainTransfer reinit must be between 0 (off) and 1 (a fresh model), got {reinit}")
        self.reinit = reinit
        self.source_epochs = source_epochs
        self.handover = handover
        self.anchor = anchor
        self.source_patience = source_patience
        self.freeze = list(freeze or [])
        self.zero_shot = zero_shot
        self.switch_epoch: int | None = None
        self.optimizer_phase: Phase = "source"
        self._no_sources = False  # a fit without source domains: on the target from its first epoch (setup)
        self.best_source: float | None = None
        self.wait = 0
        self.zero_shot_metrics: dict[str, float] = {}
        # The source epoch to hand over (handover="best"): its target validation NDCG@10, epoch and weights.
        self.best_target: float | None = None
        self.best_target_epoch: int | None = None
        self.best_weights: dict[str, torch.Tensor] | None = None
        # The running average of the source weights to hand over (handover="average"), by parameter name.
        self.average_weights: dict[str, torch.Tensor] | None = None
        self.average_step = 0  # the global step the average last took in
        # The trainable weights as handed over to the target (anchor > 0), by parameter name; and the same keyed by
        # id of the parameter, on its device, built at the first step of a fit (derived: never saved).
        self.anchor_weights: dict[str, torch.Tensor] | None = None
        self._anchors: dict[int, torch.Tensor] | None = None

    # ------------------------------------------------------------------ phase
    def phase_for_epoch(self, epoch: int) -> Phase:
        switch = self.source_epochs if self.switch_epoch is None else min(self.switch_epoch, self.source_epochs)
        return "target" if epoch >= switch else "source"

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._anchors = None
        if stage == "fit" and trainer.reload_dataloaders_every_n_epochs != 1:
            raise ValueError(
                "DomainTransfer swaps the training data between epochs: "
                "set Trainer(reload_dataloaders_every_n_epochs=1)"
            )
        sources = getattr(trainer.datamodule, "source_names", None)
        self._no_sources = stage == "fit" and not sources
        if self._no_sources and self.switch_epoch is None:  # e.g. --data.init_args.sources '[]'
            self.switch_epoch = 0
            if trainer.is_global_zero:
                log.info("no source domains: the fit trains on the target alone from the first epoch (at the "
                         "target's learning rate, model.target_lr)")  # fmt: skip
        if (
            stage == "fit"
            and sources
            and 0 < (trainer.max_epochs or 0) <= self.source_epochs
            and trainer.is_global_zero
        ):
            log.warning(
                "max_epochs %d <= source_epochs %d: unless the sources' validation stalls sooner (source_patience), "
                "this fit ends before the switch and never trains on the target",
                trainer.max_epochs, self.source_epochs,
            )  # fmt: skip

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Runs before ModelCheckpoint (Lightning orders checkpoint callbacks last), so the
        # checkpoint written at the end of the epoch already knows about an early switch.
        if trainer.sanity_checking or self.switch_epoch is not None:
            return
        if self.phase_for_epoch(trainer.current_epoch) != "source":
            return
        if self.handover == "best":
            self._keep_if_best(trainer, pl_module)
        if self.source_patience is None:
            return
        sources = [d for d in trainer.datamodule.source_names]
        values = [trainer.callback_metrics.get(f"val/{d}/ndcg@10") for d in sources]
        if any(v is None for v in values):
            return
        score = float(sum(float(v) for v in values) / len(values))
        if self.best_source is None or score > self.best_source:
            self.best_source, self.wait = score, 0
        else:
            self.wait += 1
        if self.wait >= self.source_patience:
            self.switch_epoch = trainer.current_epoch + 1
            log.info(
                "source validation NDCG@10 stalled at %.4f: switching to the target at epoch %d",
                self.best_source,
                self.switch_epoch,
            )

    @torch.no_grad()
    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # After each optimizer step of the source phase (a batch that only accumulates leaves global_step as it is).
        if self.handover != "average" or self.optimizer_phase != "source" or trainer.global_step <= self.average_step:
            return
        self.average_step = trainer.global_step
        weights = dict(pl_module.named_parameters())
        if self.average_weights is None:  # the first step's weights start the average, as AveragedModel's do
            self.average_weights = {n: p.detach().clone() for n, p in weights.items()}
            return
        names = list(self.average_weights)
        averages = [self.average_weights[n] for n in names]
        if averages and averages[0].device != weights[names[0]].device:  # resumed: the checkpoint's are on the CPU
            averages = [a.to(weights[n].device) for n, a in zip(names, averages, strict=True)]
            self.average_weights = dict(zip(names, averages, strict=True))
        torch._foreach_lerp_(averages, [weights[n] for n in names], 1 - self.average_decay)

    def _keep_if_best(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(f"val/{trainer.datamodule.target_name}/ndcg@10")
        if value is None or (self.best_target is not None and float(value) <= self.best_target):
            return
        self.best_target, self.best_target_epoch = float(value), trainer.current_epoch
        self.best_weights = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.phase_for_epoch(trainer.current_epoch) != "target" or self.optimizer_phase == "target":
            return
        if self.switch_epoch is None:
            self.switch_epoch = trainer.current_epoch
        if self.best_weights is not None and self.best_target_epoch != trainer.current_epoch - 1:
            pl_module.load_state_dict(self.best_weights)
            log.info(
                "handing over source epoch %d (target validation NDCG@10 %.4f), not the last one",
                self.best_target_epoch, self.best_target,
            )  # fmt: skip
        self.best_weights = None  # not needed any more: later checkpoints stay small
        if self.average_weights is not None:
            with torch.no_grad():
                for name, p in pl_module.named_parameters():
                    p.copy_(self.average_weights[name])
            log.info("handing over the running average of the source weights (about %.0f steps)",
                     1 / (1 - self.average_decay))  # fmt: skip
            self.average_weights = None
        self._save_handover(trainer, pl_module)
        # Without sources only a model started from trained weights (model.pretrained) has a zero-shot point.
        if self.zero_shot and (not self._no_sources or getattr(pl_module, "hparams", {}).get("pretrained")):
            self.zero_shot_metrics = self._evaluate_target(trainer, pl_module)
            for logger in trainer.loggers:
                logger.log_metrics(self.zero_shot_metrics, step=trainer.global_step)
            log.info("zero-shot on %s (the source-trained model, before fine-tuning): %s",
                     trainer.datamodule.target_name, describe_zero_shot(self.zero_shot_metrics))  # fmt: skip
        self._enter_target(pl_module)
        if self.reinit > 0:  # after freezing: frozen submodules keep the handed-over weights
            mix_with_fresh_init(pl_module, self.reinit, seed=global_seed() * 1_000_003 + trainer.current_epoch)
            log.info("a share of %g of a fresh initialisation mixed into the handed-over weights", self.reinit)
        if self.anchor > 0:
            self.anchor_weights = {n: p.detach().clone() for n, p in pl_module.named_parameters() if p.requires_grad}
            self._anchors = None
        trainer.strategy.setup_optimizers(trainer)
        if self._no_sources:
            return
        frozen = f", {', '.join(self.freeze)} frozen" if self.freeze else ""
        log.info(
            "epoch %d: switched from the sources to the target %s (new optimizer and scheduler%s)",
            trainer.current_epoch, trainer.datamodule.target_name, frozen,
        )  # fmt: skip

    @staticmethod
    def _save_handover(trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.loggers or not trainer.datamodule.source_names:  # no run folder, or nothing source-trained
            return
        path = Path(trainer.log_dir) / HANDOVER_FILE  # every rank asks: log_dir is broadcast from rank 0
        if trainer.is_global_zero:
            state = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}
            with atomic_path(path) as tmp:
                torch.save({"state_dict": state, "epoch": trainer.current_epoch}, tmp)
            log.info("the source-trained model as handed over: %s", path)

    def _enter_target(self, pl_module: L.LightningModule) -> None:
        for name in self.freeze:
            module = pl_module.get_submodule(name)
            module.requires_grad_(False)
        if isinstance(pl_module, PhaseAware):
            pl_module.on_transfer_phase("target")
        self.optimizer_phase = "target"

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self.anchor_weights or self.optimizer_phase != "target":
            return
        if self._anchors is None:  # once a fit: a resumed checkpoint loads them on the CPU
            named = dict(pl_module.named_parameters())
            self._anchors = {id(named[n]): w.to(named[n].device) for n, w in self.anchor_weights.items() if n in named}
        decay_towards(optimizer, self._anchors, self.anchor)

    @torch.no_grad()
    def _evaluate_target(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, float]:
        # Every rank evaluates the whole target splits: identical numbers, no sync needed.
        dm = trainer.datamodule
        was_training = pl_module.training
        pl_module.eval()
        out = {}
        for split, prefix in (("valid", "zeroshot"), ("test", "zeroshot_test")):
            cutoffs = getattr(pl_module, "hparams", {}).get("cutoffs", (10, 50))
            metric = RankingMetrics(cutoffs, sync_on_compute=False).to(pl_module.device)
            for batch in dm.target.view_loader(split):
                batch = pl_module.transfer_batch_to_device(batch, pl_module.device, 0)
                metric.update_ranks(pl_module.ranks(batch))
            out |= {f"{prefix}/{dm.target_name}/{k}": float(v) for k, v in metric.compute().items()}
        pl_module.train(was_training)
        return out

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict[str, Any]:
        return {
            "switch_epoch": self.switch_epoch,
            "optimizer_phase": self.optimizer_phase,
            "best_source": self.best_source,
            "wait": self.wait,
            "zero_shot_metrics": self.zero_shot_metrics,
            "freeze": self.freeze,
            "best_target": self.best_target,
            "best_target_epoch": self.best_target_epoch,
            "best_weights": self.best_weights,
            "anchor_weights": self.anchor_weights,
            "average_weights": None
            if self.average_weights is None
            else {n: w.to("cpu", copy=True) for n, w in self.average_weights.items()},
            "average_step": self.average_step,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.switch_epoch = state_dict["switch_epoch"]
        self.optimizer_phase = state_dict["optimizer_phase"]
        self.best_source = state_dict["best_source"]
        self.wait = state_dict["wait"]
        self.zero_shot_metrics = state_dict["zero_shot_metrics"]
        self.freeze = state_dict["freeze"]
        self.best_target = state_dict.get("best_target")
        self.best_target_epoch = state_dict.get("best_target_epoch")
        self.best_weights = state_dict.get("best_weights")
        self.anchor_weights = state_dict.get("anchor_weights")
        self.average_weights = state_dict.get("average_weights")
        self.average_step = state_dict.get("average_step", 0)
        self._anchors = None

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        # Called before load_state_dict and before the strategy builds optimizers: re-create the
        # target-phase parameter groups now, or the saved optimizer state would not fit.
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if state is None:
            return
        self.load_state_dict(state)
        if self.optimizer_phase == "target":
            self._enter_target(pl_module)


def describe_zero_shot(metrics: dict[str, float]) -> str:
    """``validation NDCG@10 0.1234, Recall@10 0.2345; test NDCG@10 ...`` from ``zeroshot*/<target>/*`` metrics."""
    parts = []
    for prefix, split in (("zeroshot/", "validation"), ("zeroshot_test/", "test")):
        values = {k.rsplit("/", 1)[1]: v for k, v in metrics.items() if k.startswith(prefix)}
        shown = [f"{label} {values[key]:.4f}" for key, label in (("ndcg@10", "NDCG@10"), ("recall@10", "Recall@10"))
                 if key in values]  # fmt: skip
        if shown:
            parts.append(f"{split} {', '.join(shown)}")
    return "; ".join(parts)


class TargetEarlyStopping(EarlyStopping):
    """Lightning's ``EarlyStopping``, counting only target-phase validations, and saying when it stops.

    It also skips the end of an epoch that a resumed run replays before any metric is logged
    (Lightning finishes the interrupted epoch's hooks first), instead of failing on a missing metric.

    Whether it stopped the fit is kept in the checkpoint: a run resumed from a checkpoint written after it stopped
    ends where the uninterrupted run ended, without training another epoch (Lightning does not checkpoint
    ``trainer.should_stop``). Under DDP the decision is reduced across ranks (any rank stops all), and the metric
    it watches is synced, so every rank stops at the same epoch.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stopped = False
        self._stop_after_replay = False

    def _should_skip_check(self, trainer: L.Trainer) -> bool:
        replayed = not trainer.callback_metrics
        return super()._should_skip_check(trainer) or replayed or current_phase(trainer) != "target"

    def _run_early_stopping_check(self, trainer: L.Trainer) -> None:
        was_stopping = trainer.should_stop
        super()._run_early_stopping_check(trainer)
        stopped_now = trainer.should_stop and not was_stopping
        self.stopped = self.stopped or stopped_now
        if stopped_now and self.stopped_epoch == trainer.current_epoch and trainer.is_global_zero:
            if self.wait_count >= self.patience:
                log.info(
                    "epoch %d: stopping early, %s has not improved for %d validations (best %.4f)",
                    trainer.current_epoch, self.monitor, self.wait_count, float(self.best_score),
                )  # fmt: skip
            else:
                log.info("epoch %d: stopping early: %s", trainer.current_epoch, self.stopping_reason_message)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "stopped": self.stopped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.stopped = bool(state_dict.get("stopped", False))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.stopped or trainer.ckpt_path is None:  # only a fit resumed from a checkpoint written after the stop
            return
        progress = trainer.fit_loop.epoch_progress.current
        if progress.processed >= progress.started:  # written once its epoch was over: stop before the next one
            trainer.should_stop = True
        else:  # written at the validation inside its epoch: let Lightning finish that epoch first, as it did
            self._stop_after_replay = True

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._stop_after_replay:
            trainer.should_stop, self._stop_after_replay = True, False
