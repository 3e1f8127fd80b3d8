from rec_transfer.callbacks.checkpoint import LatestCheckpoint
from rec_transfer.callbacks.defaults import default_callbacks
from rec_transfer.callbacks.domain_transfer import DomainTransfer, TargetEarlyStopping
from rec_transfer.callbacks.fit_timer import FitTimer
from rec_transfer.callbacks.prediction_writer import RecommendationWriter
from rec_transfer.callbacks.progress import EpochProgress
from rec_transfer.callbacks.tensorboard import TensorBoardHparams
from rec_transfer.callbacks.weight_averaging import TargetWeightAveraging

__all__ = [
    "DomainTransfer",
    "EpochProgress",
    "FitTimer",
    "LatestCheckpoint",
    "RecommendationWriter",
    "TargetEarlyStopping",
    "TargetWeightAveraging",
    "TensorBoardHparams",
    "default_callbacks",
]
