from rec_transfer.callbacks.checkpoint import LatestCheckpoint
from rec_transfer.callbacks.domain_transfer import DomainTransfer, TargetEarlyStopping
from rec_transfer.callbacks.fit_timer import FitTimer
from rec_transfer.callbacks.prediction_writer import RecommendationWriter

__all__ = ["DomainTransfer", "FitTimer", "LatestCheckpoint", "RecommendationWriter", "TargetEarlyStopping"]
