"""``rec-transfer fit|validate|test|predict --config configs/X.yaml`` on LightningCLI."""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from rec_transfer.callbacks import DomainTransfer, FitTimer, LatestCheckpoint, TargetEarlyStopping
from rec_transfer.data.transfer import TransferDataModule
from rec_transfer.models.recommender import TransferRecommender

TRAINER_DEFAULTS = {
    # The transfer swaps training data between epochs; batches are sharded by our own sampler.
    "reload_dataloaders_every_n_epochs": 1,
    "use_distributed_sampler": False,
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "lightning_logs", "name": "default", "default_hp_metric": False},
    },
}


def _checkpoint_callback(trainer: L.Trainer) -> ModelCheckpoint | None:
    return next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)


class RecTransferCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="after fit, test the best checkpoint on the target (the protocol of the papers)",
        )
        parser.add_argument(
            "--compare_target_only",
            type=bool,
            default=False,
            help="after fit, train the same model on the target alone and print both test results",
        )
        parser.add_argument(
            "--results_json",
            type=str | None,
            default=None,
            help="write the final test metrics (and the target-only comparison) to this JSON file",
        )

    def _sub(self, key: str):
        return self.config[self.subcommand].get(key)

    def before_fit(self) -> None:
        self._fit_start = time.perf_counter()
        # Lightning only warns when "last" finds nothing and then trains from scratch; a user who
        # asked to resume should hear that nothing was found.
        if self._sub("ckpt_path") == "last":
            ckpt = _checkpoint_callback(self.trainer)
            last = Path(ckpt.dirpath) / f"{ckpt.CHECKPOINT_NAME_LAST}.ckpt" if ckpt and ckpt.dirpath else None
            if last is None or not last.exists():
                raise FileNotFoundError(
                    f"--ckpt_path last: no last checkpoint at {last} (ModelCheckpoint needs a fixed dirpath "
                    "and save_last: true); drop --ckpt_path to start a new run"
                )

    def after_fit(self) -> None:
        timer = next(c for c in self.trainer.callbacks if isinstance(c, FitTimer))
        epoch_s = timer.train_epoch_seconds
        results: dict = {
            "fit_seconds": round(time.perf_counter() - self._fit_start, 2),
            "epochs": self.trainer.current_epoch,
            "mean_train_epoch_seconds": round(sum(epoch_s) / max(1, len(epoch_s)), 3),
            "val_history": timer.val_history,
        }
        transfer = next((c for c in self.trainer.callbacks if isinstance(c, DomainTransfer)), None)
        if transfer is not None and transfer.zero_shot_metrics:  # read before testing reloads callback state
            results["zero_shot"] = {k: round(v, 5) for k, v in transfer.zero_shot_metrics.items()}
        if self._sub("test_after_fit"):
            results["transfer" if self._has_sources() else "target_only"] = self._test(self.trainer, self.model)
        if self._sub("compare_target_only") and self._has_sources():
            results["target_only"] = self._fit_target_only()
            self._print_comparison(results)
        if self._sub("results_json") and self.trainer.is_global_zero:
            Path(self._sub("results_json")).parent.mkdir(parents=True, exist_ok=True)
            Path(self._sub("results_json")).write_text(json.dumps(results, indent=2))

    def _has_sources(self) -> bool:
        return isinstance(self.datamodule, TransferDataModule) and bool(self.datamodule.sources)

    def _test(self, trainer: L.Trainer, model: L.LightningModule, datamodule=None) -> dict[str, float]:
        ckpt = _checkpoint_callback(trainer)
        ckpt_path = "best" if ckpt is not None and ckpt.best_model_path else None
        out = trainer.test(model, datamodule=datamodule or self.datamodule, ckpt_path=ckpt_path, verbose=False)
        return {k: round(float(v), 5) for k, v in out[0].items()}

    def _fit_target_only(self) -> dict[str, float]:
        """The same model and trainer settings, trained on the target alone: the baseline transfer must beat."""
        dm = TransferDataModule(target=self.datamodule.target, sources=[])
        init_args = {k: v for k, v in self.model.hparams.items() if not k.startswith("_")}  # drop CLI bookkeeping
        model = TransferRecommender(**copy.deepcopy(init_args))
        src = self.trainer
        early = next((c for c in src.callbacks if isinstance(c, TargetEarlyStopping)), None)
        ckpt = _checkpoint_callback(src)
        callbacks = []
        if ckpt is not None:
            callbacks.append(
                LatestCheckpoint(
                    dirpath=f"{ckpt.dirpath}-target_only", monitor=ckpt.monitor, mode=ckpt.mode, save_last=True
                )
            )
        if early is not None:
            callbacks.append(TargetEarlyStopping(monitor=early.monitor, patience=early.patience, mode=early.mode))
        logger = src.logger
        if logger is not None:
            logger = type(logger)(save_dir=logger.save_dir, name=f"{logger.name}-target_only", default_hp_metric=False)
        trainer = L.Trainer(
            max_epochs=src.max_epochs,
            accelerator=src.accelerator,
            devices=src.num_devices,
            precision=src.precision,
            logger=logger,
            callbacks=callbacks,
            reload_dataloaders_every_n_epochs=1,
            use_distributed_sampler=False,
            enable_progress_bar=src.progress_bar_callback is not None,
            enable_model_summary=False,
            check_val_every_n_epoch=src.check_val_every_n_epoch,
            log_every_n_steps=src.log_every_n_steps,
        )
        trainer.fit(model, datamodule=dm)
        return self._test(trainer, model, dm)

    def _print_comparison(self, results: dict) -> None:
        if not self.trainer.is_global_zero:
            return
        target = self.datamodule.target_name
        rows = [f"test/{target}/{m}" for m in ("ndcg@10", "recall@10", "ndcg@50", "recall@50")]
        print(f"\n{'metric':<28}{'transfer':>12}{'target only':>14}")
        for r in rows:
            transfer, alone = results["transfer"].get(r, float("nan")), results["target_only"].get(r, float("nan"))
            print(f"{r:<28}{transfer:>12.4f}{alone:>14.4f}")
        gain = results["transfer"][rows[0]] - results["target_only"][rows[0]]
        print(f"transfer {'beats' if gain > 0 else 'does NOT beat'} target-only on NDCG@10 by {gain:+.4f}\n")


def build_cli(args: list[str] | None = None, run: bool = True) -> RecTransferCLI:
    """The CLI object (``run=False``: parse and instantiate only, no subcommand), for tests and notebooks."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return RecTransferCLI(
        TransferRecommender,
        L.LightningDataModule,
        subclass_mode_data=True,
        trainer_defaults={**TRAINER_DEFAULTS, "callbacks": [FitTimer()]},  # in every run, whatever the config says
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # the model builds its own optimizer (and the transfer rebuilds it)
        args=args,
        run=run,
    )


def main(args: list[str] | None = None, run: bool = True) -> None:
    # The console script calls sys.exit(main()): returning the CLI object would print it and exit with status 1.
    build_cli(args, run)


if __name__ == "__main__":
    main()
