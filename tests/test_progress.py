"""EpochProgress on its own: the best target validation it reports is the one the checkpoint callback keeps."""

import logging
from types import SimpleNamespace

import torch
from lightning.pytorch.trainer.states import TrainerFn

from rec_transfer.callbacks.progress import MONITOR, EpochProgress


def validate(progress: EpochProgress, epoch: int, value: float) -> SimpleNamespace:
    metrics = {MONITOR: torch.tensor(value, dtype=torch.float64)}
    trainer = SimpleNamespace(
        state=SimpleNamespace(fn=TrainerFn.FITTING), sanity_checking=False, current_epoch=epoch,
        datamodule=SimpleNamespace(target_name="posters"),
        val_dataloaders=[SimpleNamespace(dataset=SimpleNamespace(domain="posters"))],
        callback_metrics=metrics | {"val/posters/ndcg@10": metrics[MONITOR]},
        progress_bar_callback=None, is_global_zero=True, callbacks=[], max_epochs=10,
    )  # fmt: skip
    progress.on_validation_end(trainer, None)
    return trainer


def test_a_later_score_just_below_the_best_does_not_take_its_place() -> None:
    progress = EpochProgress()
    validate(progress, 0, 0.062804)
    validate(progress, 1, 0.062802)  # above the best rounded to 5 decimals (0.06280), below the best itself
    validate(progress, 2, 0.062804)  # a tie: the checkpoint callback and early stopping keep the first
    assert progress.best == {"epoch": 0, "ndcg@10": 0.062804}
    resumed = EpochProgress()
    resumed.load_state_dict(progress.state_dict())
    validate(resumed, 3, 0.062803)
    assert resumed.best == {"epoch": 0, "ndcg@10": 0.062804}
    validate(resumed, 4, 0.062806)
    assert resumed.best == {"epoch": 4, "ndcg@10": 0.062806}


def test_the_epoch_line_shows_the_best_as_exactly_as_the_current_score(caplog) -> None:
    progress = EpochProgress()
    progress.on_train_epoch_start(None, None)
    progress.on_train_batch_end(None, None, torch.tensor(2.0), None, 0)
    trainer = validate(progress, 0, 0.059552)  # 0.0596 to 4 decimals; rounded to 5 first (0.05955), 0.0595
    with caplog.at_level(logging.INFO, logger="rec_transfer.callbacks.progress"):
        progress.on_train_epoch_end(trainer, None)
    assert "val NDCG@10 posters 0.0596 (best 0.0596 at epoch 0)" in caplog.text


def test_a_resume_on_another_number_of_processes_is_said(caplog) -> None:
    def fit_start(progress: EpochProgress, world_size: int) -> None:
        data = SimpleNamespace(target_name="posters", source_names=[], hparams=SimpleNamespace())
        trainer = SimpleNamespace(
            world_size=world_size, is_global_zero=True, loggers=[], datamodule=data, max_epochs=3, num_devices=1,
            accelerator=SimpleNamespace(), precision="32-true",
        )  # fmt: skip
        progress.on_fit_start(trainer, torch.nn.Linear(2, 2))

    first = EpochProgress()
    fit_start(first, 1)
    resumed = EpochProgress()
    resumed.load_state_dict(first.state_dict())
    with caplog.at_level(logging.WARNING, logger="rec_transfer.callbacks.progress"):
        fit_start(resumed, 1)
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # the same processes: nothing said
        fit_start(resumed, 2)
    assert "resumed on 2 process(es), trained so far on 1: batches are now split otherwise" in caplog.text
