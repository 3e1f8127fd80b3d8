"""What the command line prints while it works: our own lines, one each, and none of the libraries' chatter."""

from __future__ import annotations

import logging
import sys
import warnings

from lightning.pytorch.utilities.rank_zero import rank_zero_only


class _PlainInfo(logging.Formatter):
    """Information as bare lines (they tell the story of a run); warnings and errors keep their level and origin."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno == logging.INFO and not record.exc_info:
            return record.getMessage()
        return f"{record.levelname} {record.name}: {super().format(record)}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time, so a progress bar that redirects it prints our lines above
    itself instead of through itself."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def quiet_output() -> None:
    """One line per stage: our own INFO lines, none of Lightning's (device lines, tips, seeds, restore notes: the
    start line and the summary say what matters), and no upstream deprecation we can do nothing about."""
    root = logging.getLogger()
    if not root.handlers:
        handler = _StderrHandler()
        handler.setFormatter(_PlainInfo())
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    # Also under a root logger that someone set to WARNING; under DDP each process says it once, rank 0 for all.
    logging.getLogger("rec_transfer").setLevel(logging.INFO if rank_zero_only.rank == 0 else logging.WARNING)
    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # torch deprecated LeafSpec; Lightning 2.6's pytree helper still builds one at every step.
    warnings.filterwarnings(
        "ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning
    )
    # Lightning counts log_every_n_steps across epochs, so a small domain's loss is still logged; the per-epoch line
    # and the epoch-level curves do not depend on it.
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")
