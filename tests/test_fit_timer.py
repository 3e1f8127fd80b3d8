"""FitTimer on its own: what enters the validation history and the epoch times."""

from types import SimpleNamespace

import torch

from rec_transfer.callbacks import FitTimer


def loader(domain: str) -> SimpleNamespace:
    return SimpleNamespace(dataset=SimpleNamespace(domain=domain))


def test_history_holds_fit_validations_of_the_target_only() -> None:
    timer = FitTimer()
    trainer = SimpleNamespace(
        sanity_checking=True, current_epoch=0, datamodule=SimpleNamespace(target_name="posters"),
        val_dataloaders=[loader("posters"), loader("books")],
        callback_metrics={"val/posters/ndcg@10": torch.tensor(0.1)},
    )  # fmt: skip
    timer.on_validation_end(trainer, None)  # before the fit: not part of it
    timer.on_fit_start(trainer, None)
    timer.on_validation_end(trainer, None)  # the sanity check
    trainer.sanity_checking = False
    timer.on_validation_end(trainer, None)
    trainer.current_epoch, trainer.val_dataloaders = 1, [loader("books")]  # a stale target value must not count
    timer.on_validation_end(trainer, None)
    trainer.current_epoch, trainer.val_dataloaders = 2, loader("posters")
    trainer.callback_metrics = {"val/posters/ndcg@10": torch.tensor(0.25)}
    timer.on_validation_end(trainer, None)
    timer.on_fit_end(trainer, None)
    timer.on_validation_end(trainer, None)  # a validate call after the fit
    assert [(h["epoch"], h["ndcg@10"]) for h in timer.val_history] == [(0, 0.1), (2, 0.25)]
    assert timer.val_history[0]["seconds"] <= timer.val_history[1]["seconds"]


def test_epoch_seconds_skip_an_epoch_finished_before_a_restart() -> None:
    timer = FitTimer()
    logged = {}
    module = SimpleNamespace(log=lambda key, value, **kwargs: logged.update({key: value}))
    timer.on_train_epoch_end(None, module)  # resumed mid-run: this epoch started before the restart
    assert timer.train_epoch_seconds == [] and not logged
    timer.on_train_epoch_start(None, module)
    timer.on_train_batch_end(None, module, None, None, 0)
    timer.on_train_epoch_end(None, module)
    assert len(timer.train_epoch_seconds) == 1 and logged["time/train_epoch_s"] == timer.train_epoch_seconds[0] >= 0
