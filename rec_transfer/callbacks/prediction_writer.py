"""Writes top-K recommendations (raw item ids, texts, scores) as JSON lines."""

from __future__ import annotations

import json
import logging
from contextlib import ExitStack
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter

from rec_transfer.utils.files import atomic_path

log = logging.getLogger(__name__)

DEFAULT_NAME = "recommendations.jsonl"


class RecommendationWriter(BasePredictionWriter):
    """One JSON object per user: ``{"domain", "user_id", "items": [{"item_id", "text", "score"}]}``.

    The file appears whole or not at all: lines go to a temporary file beside it, renamed onto ``output`` when
    prediction ends; a failed or killed prediction leaves the previous file (if any) as it was.

    Args:
        output: the JSONL file (default: ``recommendations.jsonl`` in ``folder``, else in the run's log folder, or in
            the working folder without a logger); under DDP each rank writes ``<output>.rank<N>``.

    Attributes:
        folder: where the default file goes, if set (rank 0's under DDP): the run folder, where predict runs without
            its logger (the CLI sets it).
    """

    def __init__(self, output: str | None = None):
        super().__init__(write_interval="batch")
        self.output = output
        self._file = None
        self._users = 0
        self._pending = ExitStack()
        self.folder: str | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Collectives under DDP: every rank asks, and rank 0's answer holds.
        folder = trainer.strategy.broadcast(self.folder) if self.folder is not None else trainer.log_dir
        output = Path(self.output) if self.output else Path(folder or ".") / DEFAULT_NAME
        path = output if trainer.world_size == 1 else output.with_name(f"{output.name}.rank{trainer.global_rank}")
        self._users = 0
        self._pending = ExitStack()  # closes the file, then renames it onto its path (or drops it on an error)
        self._file = self._pending.enter_context(self._pending.enter_context(atomic_path(path)).open("w"))
        self._path = path

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        domain = trainer.datamodule.domains[prediction["domain"]].domain
        users = domain.user_ids(prediction["user"].tolist())
        items_table = domain.items
        for user, items, scores in zip(users, prediction["items"].tolist(), prediction["scores"].tolist(), strict=True):
            kept = [(i, s) for i, s in zip(items, scores, strict=True) if s != float("-inf")]  # fewer left than K
            items, scores = [i for i, _ in kept], [s for _, s in kept]
            rows = items_table[[i - 1 for i in items]]
            recs = [
                {"item_id": iid, "text": text, "score": round(float(s), 5)}
                for iid, text, s in zip(rows["item_id"], rows["text"], scores, strict=True)
            ]
            self._file.write(json.dumps({"domain": prediction["domain"], "user_id": user, "items": recs}) + "\n")
            self._users += 1

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._pending.close()
        log.info("wrote the recommendations of %d users to %s", self._users, self._path.resolve())

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._pending.__exit__(type(exception), exception, exception.__traceback__)


def predict_without_logger(trainer: L.Trainer) -> bool:
    """Drops ``trainer``'s logger for predict, which logs nothing (Lightning would open it at setup and leave an empty
    TensorBoard events file in the run folder), after handing the run folder to its ``RecommendationWriter``s. False,
    and the logger kept, if another prediction writer may need it."""
    writers = [c for c in trainer.callbacks if isinstance(c, BasePredictionWriter)]
    if not all(isinstance(w, RecommendationWriter) for w in writers):
        return False
    for writer in writers:
        writer.folder = trainer.log_dir or trainer.default_root_dir
    trainer.logger = None
    return True
