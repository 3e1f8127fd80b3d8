"""The callbacks every command-line fit runs with, besides those its config names."""

from __future__ import annotations

import logging

from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint

from rec_transfer.callbacks.checkpoint import LatestCheckpoint
from rec_transfer.callbacks.domain_transfer import DomainTransfer
from rec_transfer.callbacks.fit_timer import FitTimer
from rec_transfer.callbacks.progress import MONITOR, EpochProgress
from rec_transfer.callbacks.tensorboard import TensorBoardHparams
from rec_transfer.callbacks.weight_averaging import AVERAGING_CALLBACKS, TargetWeightAveraging

log = logging.getLogger(__name__)


def default_callbacks(
    configured: list[Callback], transfer: bool, logger: bool = True, checkpointing: bool = True
) -> list[Callback]:
    """New instances of what a run needs and ``configured`` lacks.

    Always ``FitTimer``, ``EpochProgress`` and ``TensorBoardHparams``; Lightning's ``LearningRateMonitor`` with a
    logger. A ``LatestCheckpoint`` keeping the best target validation NDCG@10 and ``last.ckpt`` if no checkpoint
    callback is configured (and checkpointing is on). If the data has source domains: a ``DomainTransfer`` with
    its defaults if nothing switches from them (without it they would never be trained on), and a
    ``TargetWeightAveraging`` with its defaults if no weight averaging is configured (the default recipe averages
    the target phase's weights; ``decay: 0`` in a config turns it off).

    Args:
        configured: the config's callbacks.
        transfer: whether the data has source domains.
        logger: whether the trainer has a logger.
        checkpointing: the trainer's ``enable_checkpointing``.
    """
    out: list[Callback] = [FitTimer(), EpochProgress(), TensorBoardHparams()]
    if logger:
        out.append(LearningRateMonitor())
    if checkpointing and not any(isinstance(c, ModelCheckpoint) for c in configured):
        out.append(LatestCheckpoint(monitor=MONITOR, mode="max", save_last=True))
    if transfer and not any(isinstance(c, DomainTransfer) for c in configured):
        default = DomainTransfer()
        log.info(
            "the data has source domains and the config no DomainTransfer: %d source epochs", default.source_epochs
        )
        out.append(default)
    if transfer and not any(isinstance(c, AVERAGING_CALLBACKS) for c in configured):
        average = TargetWeightAveraging()
        log.info("the target phase's weights are averaged (TargetWeightAveraging, decay %s)", average.decay)
        out.append(average)
    return out
