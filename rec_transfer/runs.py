"""Where a run writes, and how a later command finds it again: run names, version folders, ``--ckpt_path last|best``.

A run of ``configs/NAME.yaml`` logs to ``<save_dir>/NAME/version_N/`` (TensorBoard events, ``config.yaml``,
``results.json``, ``test_users.pt``) and checkpoints to ``version_N/checkpoints/``; every new fit gets the next
``N``. The logger's ``name`` defaults to the config file's name, so a copied config writes under its own.
``--ckpt_path last`` (or ``best``) finds the newest version that holds a ``last.ckpt`` (the best checkpoint is the
one it records); a command given a checkpoint of a run logs into that run's folder (a resumed fit continues there).
These functions work on the parsed config, before anything is instantiated.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from rec_transfer.callbacks.checkpoint import find_checkpoint
from rec_transfer.utils.checkpoints import CheckpointError, NoCheckpoint, load_checkpoint
from rec_transfer.utils.files import atomic_path, atomic_write

LAST = "last.ckpt"
# Logger names that nobody chose: the CLI's default and the loggers' own.
UNNAMED = (None, "", "default", "lightning_logs")
DEFAULT_SAVE_DIR = "lightning_logs"  # the CLI's logger's, relative to the working directory
VERSION = re.compile(r"^version_(\d+)$")


def _init_args(spec: Any) -> Namespace | None:
    """``init_args`` of a ``{class_path, init_args}`` entry of the parsed config; None for anything else."""
    return spec.get("init_args") if isinstance(spec, Namespace) and "class_path" in spec else None


def config_stem(config: Namespace) -> str | None:
    """The name of the (last) ``--config`` file, without its suffix."""
    files = config.get("config") or []
    return Path(str(files[-1])).stem if files else None


def root_runs(config: Namespace) -> None:
    """Puts the default logger's ``lightning_logs`` under the trainer's ``default_root_dir`` when one is given, where
    Lightning's own default logger writes."""
    trainer = config.get("trainer", Namespace())
    args, root = _init_args(trainer.get("logger")), trainer.get("default_root_dir")
    if args is not None and root and args.get("save_dir") == DEFAULT_SAVE_DIR:
        args.save_dir = str(Path(root) / DEFAULT_SAVE_DIR)


def name_run(config: Namespace) -> None:
    """Gives an unnamed logger the config file's name, and turns TensorBoard's placeholder ``hp_metric`` off."""
    args = _init_args(config.get("trainer", Namespace()).get("logger"))
    if args is None:
        return
    if "name" in args and args.get("name") in UNNAMED and config_stem(config):
        args.name = config_stem(config)
    if "default_hp_metric" in args:
        args.default_hp_metric = False  # a -1 written at step 0; the hparams tab gets real metrics instead


def checkpoint_dirs(config: Namespace) -> list[Path]:
    """Folders where this config's runs keep checkpoints, newest first.

    An explicit ``dirpath`` of a checkpoint callback is the one folder. Otherwise the logger's version folders
    (``<save_dir>/<name>/version_N/checkpoints``), or ``<default_root_dir>/checkpoints`` without a logger.
    """
    trainer = config.get("trainer", Namespace())
    for cb in trainer.get("callbacks") or []:
        args = _init_args(cb)
        if args is not None and "Checkpoint" in cb.class_path and args.get("dirpath"):
            return [Path(args.dirpath)]
    logger = _init_args(trainer.get("logger"))
    if logger is None or "save_dir" not in logger:
        return [Path(trainer.get("default_root_dir") or ".") / "checkpoints"]
    root = _run_root(logger)
    if logger.get("version") is not None:
        version = logger.version if isinstance(logger.version, str) else f"version_{logger.version}"
        return [root / version / "checkpoints"]
    return [p / "checkpoints" for _, p in sorted(_versions(root), reverse=True)]


def _run_root(logger: Namespace) -> Path:
    """Where a logger's version folders are: ``<save_dir>/<name>``."""
    return Path(logger.save_dir) / str(logger.get("name") or "")


def _versions(root: Path) -> list[tuple[int, Path]]:
    """``(N, folder)`` of every ``version_N`` folder in ``root``."""
    return [(int(m.group(1)), p) for p in root.glob("version_*") if (m := VERSION.match(p.name))]


def best_of(last: Path) -> Path | None:
    """The best checkpoint that ``last`` records (its checkpoint callback's ``best_model_path``), in its folder."""
    state = load_checkpoint(last)
    for key, value in state.get("callbacks", {}).items():
        if "Checkpoint" in key and isinstance(value, dict) and value.get("best_model_path"):
            # Looked up beside last.ckpt: the run folder may have moved since it was written.
            return last.parent / Path(value["best_model_path"]).name
    return None


def resolve_checkpoint(config: Namespace) -> None:
    """Turns ``--ckpt_path last`` / ``best`` into the file of this config's latest run, or fails saying where it
    looked."""
    which = config.get("ckpt_path")
    if which not in ("last", "best"):
        return
    dirs = checkpoint_dirs(config)
    found = next((d for d in dirs if (d / LAST).is_file()), None)
    if found is None:
        where = ", ".join(str(d) for d in dirs[:3]) or f"{dirs_hint(config)} (no run folder yet)"
        # `best` is read from the run's last.ckpt (its checkpoint callback records which epoch was best).
        what = "no run of this config to take the best checkpoint of" if which == "best" else "no run of this config"
        raise NoCheckpoint(
            f"--ckpt_path {which}: {what}: no {LAST} in {where}. Fit this config first (without --ckpt_path), or "
            "give a checkpoint file (the checkpoint callback needs save_last: true)"
        )
    path = find_checkpoint("last", [found])  # an unreadable last.ckpt falls back to the newest whole one
    if which == "best":
        path = best_of(path)
        if path is None or not path.is_file():
            raise NoCheckpoint(
                f"--ckpt_path best: {found / LAST} records no best checkpoint that still exists ({path}); the "
                "checkpoint callback needs a monitor (e.g. hp/val_ndcg@10)"
            )
    config.ckpt_path = str(path)


def requested_checkpoint(config: Namespace, subcommand: str) -> tuple[Path, dict[str, Any]] | None:
    """The whole checkpoint file ``--ckpt_path`` names (``last`` and ``best`` are files by now: ``resolve_checkpoint``)
    and its content, loaded weights-only; None for a subcommand that runs without one (a new fit, weights from
    ``model.pretrained``) and for Lightning's ``hpc``.

    Raises:
        NoCheckpoint: validate, test or predict with neither ``--ckpt_path`` nor ``model.pretrained``, or no such file.
        CheckpointError: not a whole checkpoint, or one of weights only (``handover.ckpt``), which has no run to resume.
    """
    requested = config.get("ckpt_path")
    if requested is None:
        if subcommand == "fit" or (config.get("model") or Namespace()).get("pretrained"):
            return None
        raise NoCheckpoint(
            f"{subcommand} needs trained weights: pass --ckpt_path with a checkpoint file (or last / best: of this "
            "config's latest run), or --model.pretrained with a file of weights such as a run's handover.ckpt"
        )
    if str(requested) == "hpc":
        return None  # Lightning resolves it (and raises when there is none)
    path = find_checkpoint(requested, ())
    state = load_checkpoint(path)
    if "pytorch-lightning_version" not in state:
        raise CheckpointError(
            path, "holds model weights without a run's state (as handover.ckpt): give it as --model.pretrained"
        )
    return path, state


RESERVED: list[Path] = []  # version folders this process claimed, for release_unused_versions


def reserve_version(config: Namespace) -> None:
    """Claims the next free ``version_N`` of a new fit's logger by creating the folder: ``mkdir`` fails for all but one
    process, so fits started together never share a folder (Lightning's logger only looks for the next free number).
    Under DDP only rank 0 claims; the others log nothing and are given rank 0's folder."""
    logger = _init_args(config.get("trainer", Namespace()).get("logger"))
    if config.get("ckpt_path") or logger is None or logger.get("version") is not None or "save_dir" not in logger:
        return
    if rank_zero_only.rank != 0:
        return
    root = _run_root(logger)
    root.mkdir(parents=True, exist_ok=True)
    number = max((n for n, _ in _versions(root)), default=-1) + 1
    while True:
        try:
            (root / f"version_{number}").mkdir()
            break
        except FileExistsError:
            number += 1
    logger.version = number
    RESERVED.append(root / f"version_{number}")


def release_unused_versions() -> None:
    """Removes the folders ``reserve_version`` claimed that are still empty (the fit stopped before writing), and
    the run name's folder above one if nothing else is in it (the config's first fit)."""
    while RESERVED:
        folder = RESERVED.pop()
        for empty in (folder, folder.parent):
            try:
                empty.rmdir()
            except OSError:  # not empty: the run's folder, or the name's other runs
                break


def follow_checkpoint(config: Namespace) -> None:
    """Logs into the version folder of the run whose checkpoint ``--ckpt_path`` names, if it is one of this config's:
    a resumed fit continues its run, and ``test``/``validate``/``predict`` add no new version folder."""
    path = config.get("ckpt_path")
    logger = _init_args(config.get("trainer", Namespace()).get("logger"))
    if not path or logger is None or logger.get("version") is not None or "save_dir" not in logger:
        return
    folder = Path(path).resolve().parent
    root = _run_root(logger).resolve()
    match = VERSION.match(folder.parent.name)
    if folder.name == "checkpoints" and match and folder.parent.parent == root:
        logger.version = int(match.group(1))


def dirs_hint(config: Namespace) -> str:
    logger = _init_args(config.get("trainer", Namespace()).get("logger"))
    if logger is not None and "save_dir" in logger:
        return str(_run_root(logger) / "version_*" / "checkpoints")
    return "checkpoints"


def nest_logger(config: dict[str, Any], log_dir: str | Path, name: str) -> bool:
    """Points a (dict) config's logger at ``<log_dir>/<name>/`` (no version folder): a run inside another run's
    folder, such as the target-only baseline. False if its logger takes no ``save_dir``/``name``/``version``."""
    logger = config.get("trainer", {}).get("logger")
    args = logger.get("init_args") if isinstance(logger, dict) else None
    if args is None or not {"save_dir", "name", "version"} <= args.keys():
        return False
    args.update(save_dir=str(log_dir), name=name, version="")
    return True


# What a fit measures while it trains: a resumed fit that had nothing left to train keeps the earlier values.
FIT_RECORD = ("fit_seconds", "mean_train_epoch_seconds", "val_history")


def merge_results(previous: Mapping[str, Any], new: Mapping[str, Any], trained: bool) -> dict[str, Any]:
    """``results.json`` after a resumed fit: what the interrupted run wrote, updated with what this one measured.

    Args:
        previous: the earlier ``results.json`` (empty for a new run).
        new: this fit's results.
        trained: whether this fit ran any training epoch; if not, the earlier fit record stands.
    """
    merged = {**previous, **new}
    if not trained:
        merged |= {k: previous[k] for k in FIT_RECORD if k in previous}
    return merged


def fit_finished(run: Mapping[str, Any] | None, max_epochs: int | None) -> bool:
    """Whether a fit (its results: ``stopped_early``, ``epochs``) would train no further under ``max_epochs``: a
    resumed fit given more epochs than its target-only baseline had extends that baseline too."""
    if not run:
        return False
    return bool(run.get("stopped_early")) or (max_epochs is not None and 0 <= max_epochs <= (run.get("epochs") or 0))


def read_results(path: str | Path) -> dict[str, Any]:
    """An earlier ``results.json``; empty if there is none."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else {}


def write_results(path: str | Path, results: Mapping[str, Any]) -> None:
    atomic_write(path, json.dumps(results, indent=2) + "\n")


# Each test user's NDCG@10 and Recall@10 (``UserScores``), beside results.json: what a resumed fit compares with.
USER_SCORES = "test_users.pt"


def write_user_scores(folder: str | Path, scores: Mapping[str, torch.Tensor]) -> None:
    with atomic_path(Path(folder) / USER_SCORES) as tmp:
        torch.save(dict(scores), tmp)


def read_user_scores(folder: str | Path) -> dict[str, torch.Tensor] | None:
    """What ``write_user_scores`` wrote to ``folder``; None if it wrote nothing there."""
    path = Path(folder) / USER_SCORES
    return torch.load(path, weights_only=True) if path.is_file() else None
