"""EpochProgress on its own: the best target validation it reports is the one the checkpoint callback keeps."""

from types import SimpleNamespace

import torch
from lightning.pytorch.trainer.states import TrainerFn

from rec_transfer.callbacks.progress import MONITOR, EpochProgress


def validate(progress: EpochProgress, epoch: int, value: float) -> None:
    trainer = SimpleNamespace(
        state=SimpleNamespace(fn=TrainerFn.FITTING), sanity_checking=False, current_epoch=epoch,
        datamodule=SimpleNamespace(target_name="posters"),
        val_dataloaders=[SimpleNamespace(dataset=SimpleNamespace(domain="posters"))],
        callback_metrics={MONITOR: torch.tensor(value, dtype=torch.float64)},
    )  # fmt: skip
    progress.on_validation_end(trainer, None)


def test_a_later_score_just_below_the_best_does_not_take_its_place() -> None:
    progress = EpochProgress()
    validate(progress, 0, 0.062804)
    validate(progress, 1, 0.062802)  # above the best rounded to 5 decimals (0.06280), below the best itself
    validate(progress, 2, 0.062804)  # a tie: the checkpoint callback and early stopping keep the first
    assert progress.best == {"epoch": 0, "ndcg@10": 0.0628}
    resumed = EpochProgress()
    resumed.load_state_dict(progress.state_dict())
    validate(resumed, 3, 0.062803)
    assert resumed.best == {"epoch": 0, "ndcg@10": 0.0628}
    validate(resumed, 4, 0.062806)
    assert resumed.best == {"epoch": 4, "ndcg@10": 0.06281}
