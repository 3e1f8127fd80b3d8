"""``rec-transfer fit|validate|test|predict --config configs/X.yaml`` on LightningCLI."""

from __future__ import annotations

import copy
import importlib
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
from jsonargparse import Namespace
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from rec_transfer.callbacks import DomainTransfer, FitTimer
from rec_transfer.callbacks.checkpoint import find_checkpoint
from rec_transfer.data.transfer import TransferDataModule
from rec_transfer.models.hparams import checkpoint_hparams
from rec_transfer.models.recommender import TransferRecommender
from rec_transfer.utils.checkpoints import load_checkpoint
from rec_transfer.utils.files import atomic_write

log = logging.getLogger(__name__)

TRAINER_DEFAULTS = {
    # The transfer swaps training data between epochs; batches are sharded by our own sampler.
    "reload_dataloaders_every_n_epochs": 1,
    "use_distributed_sampler": False,
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": "lightning_logs", "name": "default", "default_hp_metric": False},
    },
}


def target_only_config(config: Mapping[str, Any] | Namespace) -> dict[str, Any]:
    """The target-only version of a transfer config: the baseline that transfer must beat.

    The same model, target domain and trainer settings, without the source domains, the ``DomainTransfer``
    callback that switches from them and ``model.target_lr`` (the learning rate after that switch). Checkpoint
    folders, the logger's run name and ``results_json`` get a ``-target_only`` suffix, so both runs can write side
    by side. ``--compare_target_only`` fits it after the transfer; the benchmarks' text target-only variant is it.

    Args:
        config: a ``fit`` config: a parsed YAML file or the CLI's namespace (left unchanged).
    """
    cfg = copy.deepcopy(config.as_dict() if isinstance(config, Namespace) else dict(config))
    for key in ("config", "compare_target_only"):  # the files the CLI read; the comparison itself
        cfg.pop(key, None)
    cfg.get("model", {}).pop("target_lr", None)
    cfg.get("data", {}).get("init_args", {}).pop("sources", None)
    trainer = cfg.setdefault("trainer", {})
    trainer["callbacks"] = [cb for cb in trainer.get("callbacks") or [] if not _is_transfer(cb["class_path"])]
    for cb in trainer["callbacks"]:
        if cb.get("init_args", {}).get("dirpath"):  # checkpoints
            cb["init_args"]["dirpath"] += "-target_only"
    logger = trainer.get("logger")
    if isinstance(logger, dict) and logger.get("init_args", {}).get("name"):
        logger["init_args"]["name"] += "-target_only"
    if cfg.get("results_json"):
        path = Path(cfg["results_json"])
        cfg["results_json"] = str(path.with_name(f"{path.stem}-target_only{path.suffix}"))
    return cfg


def _is_transfer(class_path: str) -> bool:
    """Whether a callback's class path names ``DomainTransfer`` (or a subclass of it)."""
    return _names_subclass(class_path, DomainTransfer)


def _names_subclass(class_path: str, base: type) -> bool:
    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return name == base.__name__
    return isinstance(cls, type) and issubclass(cls, base)


def _checkpoint_dirs(config: Namespace) -> list[str]:
    """The fixed ``dirpath`` of every ``ModelCheckpoint`` in a subcommand's config: where ``last`` is looked for."""
    dirs = []
    for cb in config.get("trainer.callbacks") or []:
        if isinstance(cb, ModelCheckpoint) and cb.dirpath:
            dirs.append(cb.dirpath)
        elif isinstance(cb, Namespace) and _names_subclass(cb.get("class_path", ""), ModelCheckpoint):
            if cb.get("init_args.dirpath"):
                dirs.append(cb.get("init_args.dirpath"))
    return dirs


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

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        self._args = args  # to tell the values a user gave from the defaults (_given_model_args)

    def _given_model_args(self, subcommand: str) -> dict[str, Any]:
        """The model arguments the user set, in config files or on the command line (not the defaults)."""
        args = self._args
        if isinstance(args, dict | Namespace):
            given = self.parser.parse_object(args, defaults=False)
        else:
            given = self.parser.parse_args(sys.argv[1:] if args is None else args, defaults=False)
        model = given.get(f"{subcommand}.model")
        return model.as_dict() if isinstance(model, Namespace) else dict(model or {})

    def _parse_ckpt_path(self) -> None:
        """Resolves ``--ckpt_path`` to one whole checkpoint file, and lays its hyperparameters under the user's.

        Lightning warns and goes on with an untrained model when ``last`` finds nothing, and lets a checkpoint's
        hyperparameters replace whatever the user gave. Here a missing checkpoint is an error in every subcommand
        (validate, test and predict need one), and ``checkpoint_hparams`` decides per key: values that the weights
        fix are refused when they differ, the others given by the user are applied.
        """
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        requested = config.get("ckpt_path")
        if config.get("weights_only") is False:
            raise ValueError("--weights_only false: checkpoints are only loaded weights-only here (no pickled code)")
        if requested is None:
            if subcommand != "fit":
                raise ValueError(
                    f"{subcommand} needs trained weights: pass --ckpt_path with a checkpoint file, or --ckpt_path last "
                    "for the last checkpoint of the config's run"
                )
            return
        if str(requested) in ("best", "hpc"):
            return  # Lightning resolves these (and raises when there is none)
        path = find_checkpoint(requested, _checkpoint_dirs(config))
        config["ckpt_path"] = str(path)
        saved = dict(load_checkpoint(path).get("hyper_parameters") or {})
        saved.pop("_instantiator", None)
        if not saved:
            return
        hparams, applied = checkpoint_hparams(saved, self._given_model_args(subcommand))
        for key, (old, new) in sorted(applied.items()):
            log.info("model.%s: %r as given, over the checkpoint's %r", key, new, old)
        self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def after_fit(self) -> None:
        timer = next(c for c in self.trainer.callbacks if isinstance(c, FitTimer))
        epoch_s = timer.train_epoch_seconds
        results: dict = {
            "fit_seconds": round(timer.fit_seconds, 2),
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
            atomic_write(self._sub("results_json"), json.dumps(results, indent=2))

    def _has_sources(self) -> bool:
        return isinstance(self.datamodule, TransferDataModule) and bool(self.datamodule.sources)

    def _test(self, trainer: L.Trainer, model: L.LightningModule, datamodule=None) -> dict[str, float]:
        ckpt = _checkpoint_callback(trainer)
        ckpt_path = "best" if ckpt is not None and ckpt.best_model_path else None
        out = trainer.test(model, datamodule=datamodule or self.datamodule, ckpt_path=ckpt_path, verbose=False)
        return {k: round(float(v), 5) for k, v in out[0].items()}

    def _fit_target_only(self) -> dict[str, float]:
        """Fits and tests this run's :func:`target_only_config` in this process: the baseline transfer must beat."""
        parser = self._parser(self.subcommand)
        init = parser.instantiate_classes(parser.parse_object(target_only_config(self.config[self.subcommand])))
        trainer = L.Trainer(**init["trainer"])
        trainer.fit(init["model"], datamodule=init["data"])
        return self._test(trainer, init["model"], init["data"])

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
