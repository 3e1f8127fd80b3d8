"""A trained model and its data, from a fit's config and one of its checkpoints: for benchmarks that look inside."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import yaml

from rec_transfer.cli import build_cli
from rec_transfer.utils.checkpoints import load_checkpoint


def configured(config: str | Path, data_root: str | None = None, extra: Sequence[str] = ()):
    """The CLI of ``config`` (a run folder's ``config.yaml`` too), not run, its data module prepared and set up for
    every split."""
    settings = yaml.safe_load(Path(config).read_text())
    for key in ("ckpt_path", "weights_only"):  # a run folder's config.yaml names the fit's own
        settings.pop(key, None)
    cli_args = ["--config", json.dumps(settings), *extra]
    cli_args += ["--data.init_args.data_root", data_root] if data_root else []
    with warnings.catch_warnings():  # the benchmark's own command line is not the fit's: Lightning warns of both
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = build_cli(cli_args, run=False)
    cli.datamodule.prepare_data()
    cli.datamodule.setup("fit")
    return cli


def trained_model(config: str | Path, ckpt: str | Path, data_root: str | None = None, extra: Sequence[str] = ()):
    """``(model, data, checkpoint)``: the model of ``config`` with the weights of ``ckpt``, in eval mode, and the
    config's data module, set up for every split. ``config`` may be a run folder's ``config.yaml``."""
    cli = configured(config, data_root, extra)
    model, data = cli.model, cli.datamodule
    model.add_domains(data)  # what the model's setup() does under a Trainer
    checkpoint = load_checkpoint(ckpt)
    model.prepare_for(checkpoint, ckpt)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), data, checkpoint
