"""``rec-transfer fit|validate|test|predict --config configs/X.yaml`` on LightningCLI."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import yaml
from jsonargparse import Namespace
from lightning.pytorch.callbacks import BasePredictionWriter, EarlyStopping, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher

from rec_transfer.baseline import target_only_config
from rec_transfer.callbacks import DomainTransfer, EpochProgress, FitTimer, RecommendationWriter, default_callbacks
from rec_transfer.callbacks.domain_transfer import HANDOVER_FILE
from rec_transfer.callbacks.prediction_writer import predict_without_logger
from rec_transfer.console import quiet_output
from rec_transfer.data.transfer import TransferDataModule
from rec_transfer.metrics import paired_comparison
from rec_transfer.models.hparams import checkpoint_hparams
from rec_transfer.models.recommender import TransferRecommender
from rec_transfer.runs import (
    DEFAULT_SAVE_DIR,
    fit_finished,
    follow_checkpoint,
    merge_results,
    name_run,
    nest_logger,
    read_results,
    read_user_scores,
    release_unused_versions,
    requested_checkpoint,
    reserve_version,
    resolve_checkpoint,
    root_runs,
    write_results,
    write_user_scores,
)
from rec_transfer.summary import format_summary
from rec_transfer.user_errors import ConfigError, check_yaml, refused_setting, said_in_one_line
from rec_transfer.utils.checkpoints import CheckpointError
from rec_transfer.utils.files import atomic_write

log = logging.getLogger("rec_transfer")

TRAINER_DEFAULTS = {
    # The transfer swaps training data between epochs; batches are sharded by our own sampler.
    "reload_dataloaders_every_n_epochs": 1,
    "use_distributed_sampler": False,
    "enable_model_summary": False,  # a table of every submodule; the start line gives the parameter count
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": DEFAULT_SAVE_DIR, "name": "default", "default_hp_metric": False},
    },
}


def _checkpoint_callback(trainer: L.Trainer) -> ModelCheckpoint | None:
    return next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)


class _Parser(LightningArgumentParser):
    """``--print_config`` prints the config as parsed, before ``prepare_config`` names the run: the printed logger
    gets the name and folder the run will use."""

    def dump(self, cfg: Namespace, *args: Any, **kwargs: Any) -> str:
        if isinstance(cfg, Namespace):
            cfg = cfg.clone()
            name_run(cfg)
            root_runs(cfg)
        if "skip_none" in kwargs:  # Lightning 2.6 still passes jsonargparse's old name for it (a warning per fit)
            kwargs["skip_unset"] = kwargs.pop("skip_none")
        return super().dump(cfg, *args, **kwargs)


class RecTransferCLI(LightningCLI):
    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:  # how the classes here refuse a setting (a TypeError would be a bug: traceback)
            sub = self.config.get("subcommand")
            files = [str(c) for c in (self.config[sub] if sub else self.config).get("config") or []]
            raise refused_setting(err, files) from err

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
            help="after fit, train the same model on the target alone (same seed) and print both test results",
        )
        parser.add_argument(
            "--results_json",
            type=str | None,
            default=None,
            help="where fit writes its results (default: results.json in the run's log folder); a resumed fit "
            "merges into it",
        )
        # The data decides the history length; the model reads it (max_len is set once, under data).
        parser.link_arguments("data", "model.max_len", compute_fn=_data_max_len, apply_on="instantiate")

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        self._args = args  # to tell the values a user gave from the defaults (_given_model_args)
        subcommand = self.config.get("subcommand")
        prepare_config(self.config[subcommand] if subcommand else self.config)
        if subcommand == "fit":
            reserve_version(self.config[subcommand])
        if subcommand not in (None, "fit"):  # config.yaml in the log folder records how a model was trained
            self.save_config_callback = None
            # An evaluation needs the checkpoint's weights, not its training callbacks' states (a transfer's, say).
            warnings.filterwarnings("ignore", message="Be aware that when using `ckpt_path`, callbacks used")

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> L.Trainer:
        config["callbacks"] = _with_defaults(config, transfer=self._has_sources())
        if self.subcommand == "predict" and not any(isinstance(c, BasePredictionWriter) for c in config["callbacks"]):
            config["callbacks"].append(RecommendationWriter())  # else predict would compute and write nothing
        return super()._instantiate_trainer(config, callbacks)

    def _sub(self, key: str):
        return self.config[self.subcommand].get(key)

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
        (validate, test and predict need one, or ``model.pretrained``: ``requested_checkpoint``), and
        ``checkpoint_hparams`` decides per key: values that the weights fix are refused when they differ, the others
        given by the user are applied.
        """
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        config = self.config[subcommand]
        if config.get("weights_only") is False:
            raise ConfigError("--weights_only false: checkpoints are only loaded weights-only here (no pickled code)")
        found = requested_checkpoint(config, subcommand)
        if found is None:
            return
        path, state = found
        config["ckpt_path"] = str(path)
        saved = dict(state.get("hyper_parameters") or {})
        saved.pop("_instantiator", None)
        if not saved:
            return
        try:
            hparams, applied = checkpoint_hparams(saved, self._given_model_args(subcommand))
        except ValueError as err:  # settings the weights fix, given other values
            raise CheckpointError(path, str(err)) from None
        for key, (old, new) in sorted(applied.items()):
            log.info("model.%s: %r as given, over the checkpoint's %r", key, new, old)
        self.config = self.parser.parse_object({subcommand: {"model": hparams}}, self.config)

    def before_fit(self) -> None:
        if isinstance(getattr(self.trainer.strategy, "launcher", None), _MultiProcessingLauncher):
            raise ConfigError(
                f"--trainer.strategy {self._sub('trainer.strategy')}: its processes keep the trained state, which the "
                "fit's test, results and summary need here: use --trainer.strategy ddp"
            )
        if self._sub("ckpt_path"):
            log.info("resuming from %s", self._sub("ckpt_path"))
            # It writes on into its own run folder (and its baseline's): that they hold checkpoints is no news.
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        domains = getattr(self.datamodule, "domains", {})
        if any(getattr(m.text_encoder, "train_layers", 0) for m in domains.values()):
            # The language model's trained top layers stay in eval mode on purpose (dropout off: TextTop).
            warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")

    def before_predict(self) -> None:
        if predict_without_logger(self.trainer):  # checkpoints are not saved: their folder moving is no news
            warnings.filterwarnings("ignore", message="The dirpath has changed from")

    def after_fit(self) -> None:
        trainer = self.trainer
        path = Path(self._sub("results_json") or Path(trainer.log_dir or trainer.default_root_dir) / "results.json")
        # A resumed fit adds to what the interrupted one wrote, e.g. a target-only result that had finished.
        previous = trainer.strategy.broadcast(read_results(path) if self._sub("ckpt_path") else {})
        timer = next(c for c in trainer.callbacks if isinstance(c, FitTimer))
        new = fit_results(trainer, timer.fit_seconds)
        results = merge_results(previous, new, trained=bool(timer.train_epoch_seconds))
        results["run"]["results_json"] = str(path)
        results.pop("comparison", None)  # an interrupted fit's, of a test this one may redo
        tested = None
        if self._sub("test_after_fit"):
            results["transfer" if self._has_sources() else "target_only"], tested = self._test(trainer, self.model)
        self._write(path, results)
        if self._sub("compare_target_only") and self._has_sources():
            if "target_only" in previous and fit_finished(previous.get("target_only_run"), trainer.max_epochs):
                log.info("target-only baseline: already finished, read back from %s", path)
                baseline = read_user_scores(Path(trainer.log_dir, "target_only")) if trainer.log_dir else None
            else:
                results["target_only"], results["target_only_run"], baseline = self._fit_target_only(trainer.log_dir)
            if tested is not None and baseline is not None:
                comparison = paired_comparison(tested, baseline)
                results["comparison"] = {"a": "transfer", "b": "target_only", "split": "test", **comparison}
            self._write(path, results)
        if trainer.is_global_zero:
            print("\n" + format_summary(results) + "\n", flush=True)

    def _write(self, path: Path, results: dict) -> None:
        if self.trainer.is_global_zero:
            write_results(path, results)

    def _has_sources(self) -> bool:
        return isinstance(self.datamodule, TransferDataModule) and bool(self.datamodule.sources)

    def _test(self, trainer: L.Trainer, model: L.LightningModule, datamodule=None) -> tuple[dict[str, float], Any]:
        """The test metrics of the fit's best checkpoint, and each test user's scores (None where the test ran in
        other processes, as with ``ddp_spawn``), also written beside the fit's logs."""
        ckpt = _checkpoint_callback(trainer)
        ckpt_path = "best" if ckpt is not None and ckpt.best_model_path else None
        if trainer.is_global_zero:
            what = f"the best checkpoint ({ckpt.best_model_path})" if ckpt_path else "the final weights"
            log.info("testing %s on %s", what, (datamodule or self.datamodule).target_name)
        model.test_user_scores = None
        out = trainer.test(model, datamodule=datamodule or self.datamodule, ckpt_path=ckpt_path, verbose=False)
        users = model.test_user_scores  # set by the model's test of the target (see on_test_epoch_end)
        log_dir = trainer.log_dir  # every rank: a broadcast under DDP
        if users is not None and trainer.is_global_zero and log_dir:
            write_user_scores(log_dir, users)
        return {k: round(float(v), 5) for k, v in out[0].items()}, users

    def _fit_target_only(self, log_dir: str | None) -> tuple[dict[str, float], dict[str, Any], Any]:
        """Fits and tests this run's :func:`target_only_config` in this process: the baseline transfer must beat.

        It starts from the run's seed, as a run of that config on its own would, so its numbers do not depend on
        what ran before it (an interrupted and resumed fit gets the same). Its logs and checkpoints go to
        ``target_only/`` inside the run's folder; a resumed fit continues an interrupted baseline from there.
        """
        cfg = target_only_config(self.config[self.subcommand])
        cfg.pop("ckpt_path", None)
        nested = log_dir is not None and nest_logger(cfg, log_dir, "target_only")
        seed = self._sub("seed_everything")
        if seed is not None and seed is not False:
            L.seed_everything(seed, workers=True, verbose=False)
        parser = self._parser(self.subcommand)
        parsed = parser.parse_object(cfg)
        # Lightning's instantiator gives the model and data module the hyperparameters of self.config_dump, which
        # holds the transfer run's config: the baseline's own, for as long as its classes are built.
        dump, self.config_dump = (
            self.config_dump,
            yaml.safe_load(parser.dump(parsed, skip_link_targets=False, skip_none=False, format="yaml")),
        )
        try:
            init = parser.instantiate_classes(parsed)
        finally:
            self.config_dump = dump
        trainer = L.Trainer(**{**init["trainer"], "callbacks": _with_defaults(init["trainer"], transfer=False)})
        last = Path(log_dir, "target_only", "checkpoints", "last.ckpt") if nested else None
        resume = str(last) if last is not None and self._sub("ckpt_path") and last.is_file() else None
        baseline_dir = trainer.log_dir if trainer.loggers else None  # every rank: a broadcast under DDP
        if trainer.is_global_zero:
            log.info(
                "target-only baseline (the same model and seed, no sources, learning rate %g: model.target_lr)%s%s",
                init["model"].hparams.lr,
                f" in {baseline_dir}" if baseline_dir else "",
                ", resumed from its last checkpoint" if resume else "",
            )
            if baseline_dir:  # how the baseline was configured, beside its logs
                atomic_write(Path(baseline_dir) / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
        trainer.fit(init["model"], datamodule=init["data"], ckpt_path=resume)
        fitted = fit_results(trainer)  # before the test restores the best checkpoint's callback states
        test, users = self._test(trainer, init["model"], init["data"])
        return test, fitted, users


def prepare_config(config: Namespace) -> None:
    """What the parsed config of a subcommand needs before anything is built: the run's name after the config file
    and its folder under ``default_root_dir`` if given, ``--ckpt_path last|best`` resolved (a resumed fit continues
    in its own version folder), no language model for ID-only models, and per-epoch lines instead of a progress bar
    when the output is not a terminal."""
    name_run(config)
    root_runs(config)
    resolve_checkpoint(config)
    follow_checkpoint(config)
    model, data = config.get("model"), config.get("data")
    if model is not None and model.get("mode") == "id" and data is not None:
        args = data.get("init_args") or Namespace()
        for domain in [args.get("target"), *(args.get("sources") or [])]:
            if isinstance(domain, Namespace) and (domain.get("init_args") or Namespace()).get("catalogue") == "all":
                raise ConfigError(
                    f"{domain.init_args.get('path')}: catalogue: all ranks items without interactions by their text, "
                    "which model.mode id does not read: use model.mode text or text+id, or the default catalogue"
                )
            if isinstance(domain, Namespace) and "text_encoder" in (domain.get("init_args") or Namespace()):
                domain.init_args.text_encoder = None  # an ID-only model reads no text: encode none
    trainer = config.get("trainer")
    if trainer is not None and trainer.get("enable_progress_bar") is None and not sys.stdout.isatty():
        trainer.enable_progress_bar = False  # a file or pipe would get only the bar's last frame, at the end


def fit_results(trainer: L.Trainer, seconds: float | None = None) -> dict[str, Any]:
    """What a finished fit wrote to ``results.json``, before testing: time, best validation, where things are."""
    timer = next((c for c in trainer.callbacks if isinstance(c, FitTimer)), None)
    progress = next((c for c in trainer.callbacks if isinstance(c, EpochProgress)), None)
    best = progress.best if progress else None
    stopper = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
    ckpt = _checkpoint_callback(trainer)
    dm = trainer.datamodule
    epoch_s = timer.train_epoch_seconds if timer else []
    results: dict[str, Any] = {
        "target": dm.target_name,
        "sources": list(getattr(dm, "source_names", [])),
        "epochs": trainer.current_epoch,
        "mean_train_epoch_seconds": round(sum(epoch_s) / max(1, len(epoch_s)), 3),
        "val_history": timer.val_history if timer else [],
        "best_validation": best and {"epoch": best["epoch"], "ndcg@10": round(best["ndcg@10"], 5)},  # as val_history
        "stopped_early": bool(stopper and stopper.stopped_epoch),
        "run": {
            "log_dir": trainer.log_dir if trainer.loggers else None,
            "best_checkpoint": ckpt.best_model_path if ckpt else None,
            "last_checkpoint": ckpt.last_model_path if ckpt else None,
        },
    }
    log_dir = results["run"]["log_dir"]  # read once: under DDP each trainer.log_dir is a broadcast
    handover = Path(log_dir, HANDOVER_FILE) if log_dir is not None else None
    if handover is not None and handover.is_file():
        results["run"]["handover"] = str(handover)
    if seconds is not None:
        results = {"fit_seconds": round(seconds, 2), **results}
    transfer = next((c for c in trainer.callbacks if isinstance(c, DomainTransfer)), None)
    if transfer is not None:  # the first target epoch, None where the fit ended on the sources
        results["switch_epoch"] = transfer.switch_epoch
    if transfer is not None and transfer.zero_shot_metrics:  # read before testing reloads callback state
        results["zero_shot"] = {k: round(v, 5) for k, v in transfer.zero_shot_metrics.items()}
    return results


def _with_defaults(trainer_config: Mapping[str, Any], transfer: bool) -> list:
    configured = list(trainer_config.get("callbacks") or [])
    return configured + default_callbacks(
        configured,
        transfer=transfer,
        logger=trainer_config.get("logger") is not False,
        checkpointing=trainer_config.get("enable_checkpointing") is not False,
    )


def _data_max_len(data: L.LightningDataModule) -> int:
    return data.max_len


def build_cli(args: list[str] | None = None, run: bool = True) -> RecTransferCLI:
    """The CLI object (``run=False``: parse and instantiate only, no subcommand), for tests and notebooks."""
    quiet_output()
    return RecTransferCLI(
        TransferRecommender,
        L.LightningDataModule,
        subclass_mode_data=True,
        trainer_defaults=TRAINER_DEFAULTS,  # callbacks every run needs: default_callbacks
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,  # the model builds its own optimizer (and the transfer rebuilds it)
        parser_class=_Parser,
        args=args,
        run=run,
    )


def main(args: list[str] | None = None, run: bool = True) -> None:
    # The console script calls sys.exit(main()): returning the CLI object would print it and exit with status 1.
    try:
        with said_in_one_line():
            check_yaml(sys.argv[1:] if args is None else args)
            build_cli(args, run)
    finally:
        release_unused_versions()


if __name__ == "__main__":
    main()
