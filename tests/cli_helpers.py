"""Runs of the command line on tiny SYNTHETIC domains, shared by the CLI tests (``conftest.py`` holds one fit)."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rec_transfer.cli import build_cli

REPO = Path(__file__).resolve().parents[1]
TENSORBOARD = "lightning.pytorch.loggers.TensorBoardLogger"
TARGET, SOURCES = "posters", ("books", "toys")
TINY = {
    # The target has many items for its users: some appear only as held-out (valid/test) items, never in training.
    "posters": {"num_users": 40, "num_items": 300, "mean_length": 5},
    "books": {"num_users": 80, "num_items": 30, "mean_length": 7},
    "toys": {"num_users": 60, "num_items": 30, "mean_length": 7},
}


def callback(config: dict, name: str) -> dict:
    return next(c for c in config["trainer"]["callbacks"] if c["class_path"].endswith(f".{name}"))


def tiny_quickstart(root: Path, ckpt_dir: Path | None = None, name: str = "quickstart") -> Path:
    """``configs/quickstart.yaml`` shrunk to seconds, writing only under ``root``: ``root/<name>.yaml``, so its runs
    log to ``root/logs/<name>/version_N/`` (checkpoints inside, or in ``ckpt_dir`` if given)."""
    config = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    config["trainer"].update(max_epochs=2, log_every_n_steps=1, enable_progress_bar=False)
    config["trainer"]["logger"] = {"class_path": TENSORBOARD, "init_args": {"save_dir": str(root / "logs")}}
    callback(config, "DomainTransfer")["init_args"]["source_epochs"] = 1
    if ckpt_dir is not None:
        config["trainer"]["callbacks"].append(
            {"class_path": "rec_transfer.callbacks.LatestCheckpoint",
             "init_args": {"dirpath": str(ckpt_dir), "monitor": "hp/val_ndcg@10", "mode": "max", "save_last": True}}
        )  # fmt: skip
    config["model"].update(hidden_size=16, layers=1, heads=2)
    data = config["data"]["init_args"]
    data["max_len"] = 10
    for args in [data["target"], *data["sources"]]:
        domain = args["path"].removeprefix("synthetic:")
        args.update(synthetic=TINY[domain], batch_size=32, cache_dir=str(root.parent / "cache"))
    assert [d["path"] for d in data["sources"]] == [f"synthetic:{s}" for s in SOURCES]
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def shop_with_new_items(folder: Path) -> Path:
    """A RecBole domain ``folder``: 8 users with 4 of 6 posters each, and two new items in the item file (``n0``,
    ``n1``) that nobody has interacted with yet."""
    folder.mkdir(parents=True)
    inter = [f"u{u}\ti{(u + k) % 6}\t{k}" for u in range(8) for k in range(4)]
    (folder / f"{folder.name}.inter").write_text("\n".join(["user_id:token\titem_id:token\ttimestamp:float", *inter]))
    items = [f"i{i}\tposter of mountains {i}" for i in range(6)] + ["n0\tnew mountain poster", "n1\tnew sea poster"]
    (folder / f"{folder.name}.item").write_text("\n".join(["item_id:token\ttitle:token_seq", *items]) + "\n")
    return folder


def run_dir(root: Path, version: int = 0, name: str = "quickstart") -> Path:
    """The log folder of a run of ``tiny_quickstart(root, name=name)``."""
    return root / "logs" / name / f"version_{version}"


class Lines(logging.Handler):
    """Collects the messages of the ``rec_transfer`` loggers."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def cli(root: Path, *args: str):
    """Runs a subcommand with ``root`` as working directory, so nothing lands in the repository."""
    with contextlib.chdir(root), mock.patch.object(sys, "argv", ["rec-transfer"]):  # not pytest's arguments
        return build_cli([str(a) for a in args])


def cli_output(root: Path, *args: str) -> SimpleNamespace:
    """``cli`` with what it printed (``stdout``) and logged (``log``, the ``rec_transfer`` lines)."""
    lines, out = Lines(), io.StringIO()
    logger = logging.getLogger("rec_transfer")
    logger.addHandler(lines)
    try:
        with contextlib.redirect_stdout(out):
            result = cli(root, *args)
    finally:
        logger.removeHandler(lines)
    return SimpleNamespace(cli=result, stdout=out.getvalue(), log=lines.lines)


def fit_run(root: Path, *args: str) -> SimpleNamespace:
    """A fit of ``tiny_quickstart(root)``: the CLI object, its run folder, best checkpoint and output."""
    config = tiny_quickstart(root)
    done = cli_output(root, "fit", "--config", config, *args)
    ckpt = next(cb for cb in done.cli.trainer.callbacks if isinstance(cb, ModelCheckpoint))
    return SimpleNamespace(
        root=root, config=config, dir=run_dir(root), cli=done.cli, best=Path(ckpt.best_model_path), ckpt=ckpt,
        stdout=done.stdout, log=done.log,
    )  # fmt: skip


def read_scalars(log_dir: Path, recursive: bool = False) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag in the TensorBoard event files of ``log_dir`` (and below, if ``recursive``): (step, value)."""
    values: dict[str, list[tuple[int, float]]] = {}
    for events in sorted((log_dir.rglob if recursive else log_dir.glob)("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            values.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return values


class CrashTargetOnly(Callback):
    """Simulates a kill in the target-only baseline of a fit, once: at ``epoch``'s first step, if ``marker`` exists
    (it is removed, so the resumed run goes through)."""

    def __init__(self, marker: str, epoch: int = 1):
        self.marker, self.epoch = Path(marker), epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        baseline = not getattr(trainer.datamodule, "sources", None)
        if baseline and trainer.current_epoch == self.epoch and batch_idx == 0 and self.marker.exists():
            self.marker.unlink()
            raise RuntimeError("simulated crash in the target-only baseline")


class CtrlC(Callback):
    """Ctrl-C at the first step of ``epoch`` (0: before any checkpoint)."""

    def __init__(self, epoch: int = 1):
        self.epoch = epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt
