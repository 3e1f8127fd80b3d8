"""A trained model and its data, from a fit's config and one of its checkpoints: for benchmarks that look inside."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rec_transfer.serving import configured_cli
from rec_transfer.utils.checkpoints import load_checkpoint


def configured(config: str | Path, data_root: str | None = None, extra: Sequence[str] = ()):
    """``rec_transfer.serving.configured_cli`` of ``config`` with the data under ``data_root`` if given."""
    return configured_cli(config, [*extra, *(["--data.init_args.data_root", data_root] if data_root else [])])


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
