"""A fit's model from Python (a notebook, a service): the items to recommend after any history of item ids."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import yaml

from rec_transfer.cli import build_cli
from rec_transfer.data.batching import collate
from rec_transfer.runs import LAST, best_of
from rec_transfer.utils.checkpoints import NoCheckpoint


def configured_cli(config: str | Path, extra: Sequence[str] = ()):
    """The CLI of ``config`` (a run folder's ``config.yaml`` too), parsed and built but not run, its data module
    prepared and set up for every split. ``extra``: command-line arguments over the config's."""
    settings = yaml.safe_load(Path(config).read_text())
    for key in ("ckpt_path", "weights_only"):  # a fit's own, in its config.yaml; no subcommand takes them here
        settings.pop(key, None)
    with warnings.catch_warnings():  # the caller's command line is not this one: Lightning would warn of both
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
        cli = build_cli(["--config", json.dumps(settings), *extra], run=False)
    cli.datamodule.prepare_data()
    cli.datamodule.setup("fit")
    return cli


class Recommender:
    """A trained model over its target's items.

    Example::

        rec = Recommender.from_run("lightning_logs/my_transfer/version_0")  # its best checkpoint
        rec.recommend(["item-12", "item-7"], k=10)  # [{"item_id", "text", "score"}, ...], best first

    Args:
        checkpoint: a checkpoint of a fit (its weights are loaded).
        config: the config the model was trained with (a run folder's ``config.yaml``).
        extra: command-line arguments over the config's, e.g. ``["--data.init_args.data_root", "/data"]`` or
            ``["--data.init_args.target.init_args.catalogue", "all"]`` to rank new items by their text.
    """

    def __init__(self, checkpoint: str | Path, config: str | Path, extra: Sequence[str] = ()):
        # The target alone: the sources are not needed to recommend (nor read and encoded).
        cli = configured_cli(config, ["--data.init_args.sources", "[]", "--trainer.logger", "false", *extra])
        self.model, data = cli.model, cli.datamodule
        self.model.add_domains(data)
        self.model.load_pretrained(str(checkpoint))
        self.model.hparams.exclude_history = True  # recommend() leaves the history out by its batch, per call
        self.model.eval()
        self.domain = data.target_name
        self.items = data.target.domain.items
        self.max_len = data.target.max_len
        self._index = {item: i for i, item in enumerate(self.items["item_id"], start=1)}

    @classmethod
    def from_run(cls, run: str | Path, extra: Sequence[str] = ()) -> Recommender:
        """The best checkpoint of run folder ``run`` (``lightning_logs/<config>/version_N``) with its config; or
        ``run`` a checkpoint file of a run folder (``version_N/checkpoints/X.ckpt``)."""
        run = Path(run)
        if run.is_file():
            folder = run.parent.parent if run.parent.name == "checkpoints" else run.parent
            return cls(run, folder / "config.yaml", extra)
        last = run / "checkpoints" / LAST
        if not last.is_file():
            raise NoCheckpoint(f"{run}: no {LAST} in its checkpoints/: not the folder of a fit that saved one")
        best = best_of(last)
        if best is None or not best.is_file():
            raise NoCheckpoint(f"{last} records no best checkpoint that still exists ({best})")
        return cls(best, run / "config.yaml", extra)

    def recommend(self, history: Sequence[str], k: int = 10, exclude_history: bool = True) -> list[dict]:
        """The ``k`` best items after ``history`` (item ids, oldest first; may be empty), each with its text and
        score, best first; without the history's items unless ``exclude_history`` is false.

        Raises:
            KeyError: an item of ``history`` is not in the target's items.
            TypeError: ``history`` is one string, not a list of item ids.
        """
        if isinstance(history, str):
            raise TypeError(f"history is a list of item ids, oldest first: [{history!r}], not {history!r}")
        unknown = [item for item in history if item not in self._index]
        if unknown:
            raise KeyError(f"not among the {len(self._index)} items of {self.domain!r}: {unknown[:5]}")
        items = np.array([self._index[item] for item in history], dtype=np.int64)
        batch = collate([(self.domain, 0, items[-self.max_len :], 0, items)])
        if not exclude_history:
            batch.pop("history")
        with torch.no_grad():
            scores, ids = self.model.recommend(batch, k)
        kept = [(i, s) for i, s in zip(ids[0].tolist(), scores[0].tolist(), strict=True) if s != float("-inf")]
        rows = self.items[[i - 1 for i, _ in kept]]
        return [
            {"item_id": item, "text": text, "score": score}
            for item, text, (_, score) in zip(rows["item_id"], rows["text"], kept, strict=True)
        ]
