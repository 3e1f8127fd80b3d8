"""DomainTransfer on its own, and whole fits: switch, zero-shot, exact resume in either phase."""

import logging
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback
from model_helpers import TinyTop

from rec_transfer.callbacks import DomainTransfer, LatestCheckpoint, TargetEarlyStopping, TargetWeightAveraging
from rec_transfer.data import DomainDataModule, TransferDataModule
from rec_transfer.models.components.history import HistoryBias
from rec_transfer.models.components.item_text import TrainableItemText
from rec_transfer.models.components.sequence_encoder import SequenceEncoder
from rec_transfer.models.optim import decay_towards, mix_with_fresh_init, reset_recursively
from rec_transfer.models.recommender import TransferRecommender
from rec_transfer.phase import current_phase
from rec_transfer.text import TextEncoderConfig
from rec_transfer.text.trainable import TokenStates, gather_tokens

SOURCE_EPOCHS, MAX_EPOCHS = 2, 4


# ---------------------------------------------------------------- the callback alone
def test_phase_follows_source_epochs():
    cb = DomainTransfer(source_epochs=3)
    assert [cb.phase_for_epoch(e) for e in range(5)] == ["source"] * 3 + ["target"] * 2


def test_early_switch_when_source_validation_stalls():
    cb = DomainTransfer(source_epochs=100, source_patience=2)
    trainer = SimpleNamespace(
        sanity_checking=False, current_epoch=0, callback_metrics={}, datamodule=SimpleNamespace(source_names=["a"])
    )
    for epoch, score in enumerate([0.1, 0.2, 0.15, 0.19]):
        trainer.current_epoch = epoch
        trainer.callback_metrics = {"val/a/ndcg@10": torch.tensor(score)}
        cb.on_validation_end(trainer, None)
    assert cb.switch_epoch == 4 and cb.phase_for_epoch(4) == "target" and cb.phase_for_epoch(3) == "source"


def test_state_roundtrip_refreezes_before_optimizers():
    cb = DomainTransfer(source_epochs=1, freeze=["encoder"])
    cb.switch_epoch, cb.optimizer_phase = 1, "target"
    checkpoint = {"callbacks": {cb.state_key: cb.state_dict()}}
    fresh = DomainTransfer(source_epochs=1, freeze=["encoder"])
    model = TransferRecommender(mode="id", hidden_size=16, layers=1, heads=1, max_len=5)
    fresh.on_load_checkpoint(None, model, checkpoint)
    assert fresh.optimizer_phase == "target" and fresh.switch_epoch == 1
    assert model.transfer_phase == "target"  # told through its hook, before optimizers are built
    assert not any(p.requires_grad for p in model.encoder.parameters())


def test_requires_dataloader_reload():
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs"):
        DomainTransfer().setup(SimpleNamespace(reload_dataloaders_every_n_epochs=0), None, "fit")


# ---------------------------------------------------------------- whole fits
@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def make_data(cache_dir, seed=0, rehearsal=0.0) -> TransferDataModule:
    def domain(name, users):
        return DomainDataModule(
            f"synthetic:{name}", synthetic={"num_users": users, "num_items": 30, "mean_length": 7},
            max_len=10, batch_size=32, cache_dir=str(cache_dir), seed=seed, text_encoder=TextEncoderConfig(),
        )  # fmt: skip

    sources = [domain("books", 80), domain("toys", 60)]
    return TransferDataModule(target=domain("posters", 40), sources=sources, rehearsal=rehearsal)


class Crash(Callback):
    """Simulates a kill in the middle of an epoch."""

    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise RuntimeError("simulated crash")


def fit(
    cache_dir,
    ckpt_dir,
    crash=None,
    ckpt_path=None,
    freeze=("encoder",),
    mode="text",
    extra=(),
    rehearsal=0.0,
    model_args=None,
    **transfer,
):
    L.seed_everything(0)
    model = TransferRecommender(
        mode=mode, hidden_size=16, layers=1, heads=2, max_len=10, lr=5e-3, target_lr=1e-3, target_warmup_steps=4,
        **(model_args or {}),
    )  # fmt: skip
    callbacks = [
        DomainTransfer(**{"source_epochs": SOURCE_EPOCHS, "freeze": list(freeze), **transfer}),
        *extra,
        LatestCheckpoint(dirpath=ckpt_dir, monitor="hp/val_ndcg@10", mode="max", save_last=True),
        TargetEarlyStopping(monitor="hp/val_ndcg@10", mode="max", patience=10),
    ]
    if crash:
        callbacks.append(Crash(*crash))
    trainer = L.Trainer(
        max_epochs=MAX_EPOCHS, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
        enable_model_summary=False, reload_dataloaders_every_n_epochs=1, use_distributed_sampler=False,
        callbacks=callbacks, num_sanity_val_steps=0,
    )  # fmt: skip
    data = make_data(cache_dir, rehearsal=rehearsal)
    trainer.fit(model, datamodule=data, ckpt_path=ckpt_path)
    return trainer, model, data


def assert_resumes_exactly(cache_dir, folder, reference, crash, **fit_args) -> None:
    """A fit killed at ``crash`` (epoch, batch) and resumed from its ``last.ckpt`` ends with ``reference``'s weights."""
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(cache_dir, folder, crash=crash, **fit_args)
    _, resumed, _ = fit(cache_dir, folder, ckpt_path="last", **fit_args)
    for key, value in reference.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=1e-6, msg=key)


@pytest.fixture(scope="module")
def uninterrupted(cache_dir, tmp_path_factory):
    return fit(cache_dir, tmp_path_factory.mktemp("full"))


def test_switch_freezes_and_logs_zero_shot(uninterrupted):
    trainer, model, _ = uninterrupted
    transfer = next(c for c in trainer.callbacks if isinstance(c, DomainTransfer))
    assert transfer.switch_epoch == SOURCE_EPOCHS and transfer.optimizer_phase == "target"
    assert set(transfer.zero_shot_metrics) >= {"zeroshot/posters/ndcg@10", "zeroshot/posters/recall@10"}
    assert not any(p.requires_grad for p in model.encoder.parameters())
    opt_params = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not opt_params & {id(p) for p in model.encoder.parameters()}  # the optimizer was rebuilt
    # target_lr, the text adaptor at twice it (the model's default target_lr_scale: the recipe's)
    assert [g["lr"] for g in trainer.optimizers[0].param_groups] == pytest.approx([2e-3, 1e-3])
    # The target optimizer warms up over target_warmup_steps (the source one had none: warmup_steps 0).
    warmup = trainer.lr_scheduler_configs[0].scheduler.lr_lambdas[0]
    assert [warmup(step) for step in (0, 3, 9)] == pytest.approx([0.25, 1.0, 1.0])


def test_id_pretraining_leaves_the_target_text_only_when_its_ids_are_frozen(cache_dir, tmp_path):
    # IDs learn on the sources; frozen at their zero start, the target's item table is the adapted text alone.
    _, model, _ = fit(cache_dir, tmp_path, freeze=("encoder", "item_tower.id_embeddings"), mode="text+id")
    ids = model.item_tower.id_embeddings
    assert all(ids[source].weight.abs().sum() > 0 for source in ("books", "toys"))
    assert torch.count_nonzero(ids["posters"].weight) == 0
    assert all(p.requires_grad for p in model.item_tower.adaptor.parameters())  # what the target trains


@pytest.mark.parametrize("crash", [(1, 1), (3, 1)], ids=["killed-in-source-phase", "killed-in-target-phase"])
def test_resume_matches_uninterrupted(cache_dir, tmp_path, uninterrupted, crash):
    _, full, _ = uninterrupted
    ckpt_dir = tmp_path / "ckpt"
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit(cache_dir, ckpt_dir, crash=crash)
    last = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    assert last["epoch"] == crash[0] - 1  # the latest finished epoch, improving or not
    trainer, resumed, _ = fit(cache_dir, ckpt_dir, ckpt_path="last")
    assert trainer.current_epoch == MAX_EPOCHS
    full_state, resumed_state = full.state_dict(), resumed.state_dict()
    assert full_state.keys() == resumed_state.keys()
    for key, value in full_state.items():
        torch.testing.assert_close(resumed_state[key], value, rtol=0, atol=1e-6, msg=key)


class TargetValidations(Callback):
    """Every target validation NDCG@10 of the fit, by epoch."""

    def __init__(self):
        self.values = {}

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.values[trainer.current_epoch] = float(trainer.callback_metrics["val/posters/ndcg@10"])


@pytest.mark.parametrize("crash", [None, (1, 1)], ids=["uninterrupted", "killed-in-source-phase"])
def test_handover_best_starts_the_target_from_the_source_epoch_validation_picked(cache_dir, tmp_path, crash):
    seen = TargetValidations()
    transfer = {"handover": "best", "source_epochs": 3}
    trainer, reference, _ = fit(cache_dir, tmp_path / "full", extra=[seen], **transfer)
    zero_shot = next(c for c in trainer.callbacks if isinstance(c, DomainTransfer)).zero_shot_metrics
    source = {epoch: seen.values[epoch] for epoch in range(3)}
    # The zero-shot evaluation at the switch scores the handed-over weights: those of the best source epoch.
    assert zero_shot["zeroshot/posters/ndcg@10"] == pytest.approx(max(source.values()), abs=1e-6)
    if crash is None:
        return
    assert_resumes_exactly(cache_dir, tmp_path / "ckpt", reference, crash, **transfer)


def test_anchor_keeps_the_target_phase_near_the_handed_over_weights_and_resumes_exactly(
    cache_dir, tmp_path, uninterrupted
):
    _, free, _ = uninterrupted
    trainer, anchored, _ = fit(cache_dir, tmp_path / "full", anchor=500.0)
    start = next(c for c in trainer.callbacks if isinstance(c, DomainTransfer)).anchor_weights
    assert start and all(not n.startswith("encoder.") for n in start)  # the frozen encoder needs no anchor

    def distance(model):
        weights = dict(model.named_parameters())
        return sum(float((weights[n] - w).pow(2).sum()) for n, w in start.items()) ** 0.5

    # Both runs are the same until the switch; after it, the anchored one stays nearer (its last Adam step, not
    # pulled back yet, is most of the distance left: about lr × sqrt(weights)).
    assert 0 < distance(anchored) < 0.7 * distance(free)
    assert_resumes_exactly(cache_dir, tmp_path / "ckpt", anchored, (3, 1), anchor=500.0)


class TrainedDomains(Callback):
    """The domains of every training batch, by epoch."""

    def __init__(self):
        self.domains = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.domains.setdefault(trainer.current_epoch, []).append(batch["domain"])


def test_rehearsal_trains_on_the_sources_after_the_switch_and_resumes_exactly(cache_dir, tmp_path):
    seen = TrainedDomains()
    _, rehearsed, _ = fit(cache_dir, tmp_path / "full", extra=[seen], rehearsal=1.0)
    target_epochs = [d for epoch, d in seen.domains.items() if epoch >= SOURCE_EPOCHS]
    assert target_epochs
    for domains in target_epochs:  # as many source batches as target batches, each source some of them
        assert set(domains) == {"posters", "books", "toys"}
        assert domains.count("posters") == len(domains) - domains.count("posters")
    assert_resumes_exactly(cache_dir, tmp_path / "ckpt", rehearsed, (3, 1), rehearsal=1.0)


def test_contrast_trains_on_the_source_batches_only_and_resumes_exactly(cache_dir, tmp_path, monkeypatch):
    seen, contrasted = TrainedDomains(), []
    plain = TransferRecommender.contrast_loss

    def recording(self, batch):
        contrasted.append(batch["domain"])
        return plain(self, batch)

    monkeypatch.setattr(TransferRecommender, "contrast_loss", recording)
    args = {"freeze": [], "model_args": {"contrast_weight": 0.5}}
    _, model, _ = fit(cache_dir, tmp_path / "full", extra=[seen], **args)
    source_batches = [d for epoch, domains in seen.domains.items() if epoch < SOURCE_EPOCHS for d in domains]
    assert contrasted == source_batches and set(contrasted) == {"books", "toys"}
    _, without, _ = fit(cache_dir, tmp_path / "without", freeze=[])
    assert not torch.equal(model.encoder.positions.weight, without.encoder.positions.weight)
    assert_resumes_exactly(cache_dir, tmp_path / "ckpt", model, (1, 1), **args)


def test_decay_towards_moves_each_weight_lr_times_strength_of_the_way_to_its_anchor():
    moving, still = torch.nn.Parameter(torch.tensor([1.0, 3.0])), torch.nn.Parameter(torch.tensor([5.0]))
    moving.grad, still.grad = torch.zeros(2), None  # a parameter without a gradient is left alone, as AdamW does
    optimizer = torch.optim.AdamW([{"params": [moving, still], "lr": 0.1}])
    decay_towards(optimizer, {id(moving): torch.tensor([0.0, 1.0]), id(still): torch.tensor([0.0])}, strength=2.0)
    assert moving.tolist() == pytest.approx([0.8, 2.6]) and still.tolist() == [5.0]


class SwitchWeights(Callback):
    """The weights at the end of the last source epoch and at the first target step."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == SOURCE_EPOCHS - 1:
            self.handed_over = {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == SOURCE_EPOCHS and batch_idx == 0:
            self.first_step = {n: p.detach().clone() for n, p in pl_module.named_parameters()}


def test_reinit_mixes_a_fresh_model_into_the_unfrozen_weights_at_the_switch_and_resumes_exactly(cache_dir, tmp_path):
    seen = SwitchWeights()
    _, mixed, _ = fit(cache_dir, tmp_path / "full", extra=[seen], reinit=0.5)
    changed = {n for n, w in seen.handed_over.items() if not torch.equal(w, seen.first_step[n])}
    assert changed and not any(n.startswith("encoder.") for n in changed)  # the frozen encoder is kept
    assert "scorer.history_bias.weight" in changed  # halfway back to its start, 0
    torch.testing.assert_close(
        seen.first_step["scorer.history_bias.weight"], 0.5 * seen.handed_over["scorer.history_bias.weight"]
    )
    assert_resumes_exactly(cache_dir, tmp_path / "ckpt", mixed, (3, 1), reinit=0.5)


class Pretrained(torch.nn.Linear):
    pretrained_weights = True


def test_mix_with_fresh_init_keeps_frozen_and_pretrained_weights_and_the_random_state():
    torch.manual_seed(0)
    model = torch.nn.ModuleDict(
        {"encoder": SequenceEncoder(16, 1, 2, 0.0, 10), "bias": HistoryBias(0.07), "text": Pretrained(4, 4)}
    )
    model["encoder"].norm.requires_grad_(False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # "trained": every weight 1 away from any initialisation
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = torch.get_rng_state()
    mix_with_fresh_init(model, 0.25, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    after = dict(model.named_parameters())
    for name in ("encoder.norm.weight", "encoder.norm.bias", "text.weight", "text.bias"):
        assert torch.equal(after[name], before[name]), name
    torch.testing.assert_close(after["bias.weight"], 0.75 * before["bias.weight"])  # the offset starts at 0
    # The fresh part is the model's own initialisation (SASRec's N(0, 0.02), drawn with the seed), not PyTorch's.
    fresh = SequenceEncoder(16, 1, 2, 0.0, 10)
    torch.manual_seed(7)
    reset_recursively(fresh)
    for name, p in fresh.named_parameters():
        if not name.startswith("norm."):
            torch.testing.assert_close(after[f"encoder.{name}"], 0.75 * before[f"encoder.{name}"] + 0.25 * p, msg=name)
    assert 0.01 < float(fresh.layers.layers[0].linear1.weight.std()) < 0.03
    assert 0.01 < float(fresh.positions.weight.std()) < 0.03


class SourceAverage(Callback):
    """An exponential moving average of the weights over the source steps, kept here, independently of
    DomainTransfer's, and the weights at the first target step."""

    def __init__(self, decay: float):
        self.decay, self.average = decay, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch >= SOURCE_EPOCHS:
            return
        weights = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
        if self.average is None:
            self.average = weights
        else:
            self.average = {n: self.decay * a + (1 - self.decay) * weights[n] for n, a in self.average.items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == SOURCE_EPOCHS and batch_idx == 0:
            self.first_step = {n: p.detach().clone() for n, p in pl_module.named_parameters()}


@pytest.mark.parametrize("crash", [None, (1, 1)], ids=["uninterrupted", "killed-in-source-phase"])
def test_handover_average_starts_the_target_from_the_running_average_of_the_source_weights(cache_dir, tmp_path, crash):
    seen = SourceAverage(decay=0.9)
    transfer = {"handover": "average", "average_decay": 0.9, "freeze": []}
    _, reference, _ = fit(cache_dir, tmp_path / "full", extra=[seen], **transfer)
    assert seen.average is not None
    for name, value in seen.average.items():
        torch.testing.assert_close(seen.first_step[name], value, rtol=0, atol=1e-6, msg=name)
    last = SwitchWeights()  # and the average is not the last source step's weights
    fit(cache_dir, tmp_path / "last", extra=[last], freeze=[])
    offset = "scorer.history_bias.weight"
    assert not torch.allclose(last.first_step[offset], seen.first_step[offset])
    if crash is None:
        return
    assert_resumes_exactly(cache_dir, tmp_path / "ckpt", reference, crash, **transfer)


def test_average_decay_must_be_a_share():
    with pytest.raises(ValueError, match="average_decay must be between 0 and 1"):
        DomainTransfer(average_decay=1.0)


def test_reinit_must_be_a_share():
    with pytest.raises(ValueError, match="reinit must be between 0"):
        DomainTransfer(reinit=1.5)


def test_anchor_must_not_be_negative():
    with pytest.raises(ValueError, match="anchor must be >= 0"):
        DomainTransfer(anchor=-1.0)


class TargetSteps(Callback):
    """The weights after every target-phase optimizer step (the trained ones: recorded outside validation)."""

    def __init__(self):
        self.steps = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if current_phase(trainer) == "target":
            self.steps.append({n: p.detach().clone() for n, p in pl_module.named_parameters()})


def test_weight_averaging_averages_the_target_steps_only_and_resumes_exactly(cache_dir, tmp_path, caplog):
    decay, steps = 0.5, TargetSteps()
    with caplog.at_level(logging.INFO, logger="rec_transfer.callbacks.weight_averaging"):
        trainer, averaged, _ = fit(cache_dir, tmp_path / "full", extra=[TargetWeightAveraging(decay), steps])
    # The run says how long the average is, in steps and in the target's epochs.
    horizon = f"over about 2 steps, {2 / trainer.num_training_batches:.1f} epochs"
    assert [r.getMessage() for r in caplog.records if "averaging" in r.getMessage()] == [
        f"averaging the target weights {horizon}"
    ]
    # The fit ends on the running average of the target steps' weights, started at the first target step.
    assert len(steps.steps) > 2
    ema = steps.steps[0]
    for weights in steps.steps[1:]:
        ema = {n: decay * ema[n] + (1 - decay) * w for n, w in weights.items()}
    for name, param in averaged.named_parameters():
        torch.testing.assert_close(param.detach(), ema[name], rtol=0, atol=1e-6, msg=name)
    last = torch.load(tmp_path / "full" / "last.ckpt", weights_only=True)
    assert {"current_model_state", "averaging_state"} <= set(last)  # the average is state_dict, as tested
    # Killed in either phase and resumed: the same average and the same trained weights.
    for crash in ((1, 1), (3, 1)):
        ckpt_dir = tmp_path / f"ckpt{crash[0]}"
        with pytest.raises(RuntimeError, match="simulated crash"):
            fit(cache_dir, ckpt_dir, crash=crash, extra=[TargetWeightAveraging(decay)])
        written = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
        assert ("averaging_state" in written) == (crash[0] > SOURCE_EPOCHS)  # no average in the source phase
        _, resumed, _ = fit(cache_dir, ckpt_dir, ckpt_path="last", extra=[TargetWeightAveraging(decay)])
        for key, value in averaged.state_dict().items():
            torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=1e-6, msg=f"{crash}: {key}")
    resumed_last = torch.load(ckpt_dir / "last.ckpt", weights_only=True)
    for key, value in last["current_model_state"].items():
        torch.testing.assert_close(resumed_last["current_model_state"][key], value, rtol=0, atol=1e-6, msg=key)


def test_weight_averaging_with_decay_0_is_off(cache_dir, tmp_path, uninterrupted):
    # decay 0 is how a config turns off the averaging a fit with sources gets by default: the plain fit, no copy.
    off = TargetWeightAveraging(0.0)
    _, model, _ = fit(cache_dir, tmp_path, extra=[off])
    assert off._average_model is None
    for key, value in uninterrupted[1].state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)
    assert "averaging_state" not in torch.load(tmp_path / "last.ckpt", weights_only=True)


def test_weight_averaging_tests_the_checkpoint_average_after_the_fit(cache_dir, tmp_path):
    trainer, model, data = fit(cache_dir, tmp_path, extra=[TargetWeightAveraging(0.5)])
    last = torch.load(tmp_path / "last.ckpt", weights_only=True)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    trainer.test(model, datamodule=data, ckpt_path=str(tmp_path / "last.ckpt"), verbose=False)
    # The average is tested, not the trained weights Lightning's callback would load over it after a fit.
    assert any(not torch.equal(last["state_dict"][k], v) for k, v in last["current_model_state"].items())
    for key, value in last["state_dict"].items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0, msg=key)


def test_weight_averaging_shares_buffers_and_keeps_language_model_banks_in_step_with_the_weights():
    torch.manual_seed(0)
    text = TrainableItemText(TinyTop(4))
    text.add_domain("d", TokenStates(torch.randn(7, 4), torch.tensor([0, 0, 2, 3, 5, 7])))
    module = L.LightningModule()
    module.text = text
    cb = TargetWeightAveraging(decay=0.5)
    cb._start_average(module)
    cb._average_model.update_parameters(module)  # the first update: the average is these weights
    averaged = {n: p.detach().clone() for n, p in text.named_parameters()}
    with torch.no_grad():
        text.top.lin.weight.add_(1.0)  # a training step: the trained weights leave the average
    trained = {n: p.detach().clone() for n, p in text.named_parameters()}
    # The average's copy holds the same buffers, not copies of them (token states, banks).
    copy = cb._average_model.module.text
    assert all(copy.get_buffer(n) is b for n, b in text.named_buffers())

    def vectors(weights, training):
        text.train(training)
        with torch.set_grad_enabled(training):
            rows = text("d")
        top_weights = {k.removeprefix("top."): v for k, v in weights.items()}
        tokens = gather_tokens(text.values_d, text.offsets_d, torch.arange(1, 5))
        expected = torch.func.functional_call(text.top, top_weights, tokens)
        torch.testing.assert_close(rows[1:].detach(), expected)

    cb.on_validation_epoch_start(None, module)  # swapped in: validation scores the average's item vectors
    vectors(averaged, training=False)
    cb.on_validation_epoch_end(None, module)  # swapped back: the next epoch trains against the trained weights'
    text.new_epoch()
    vectors(trained, training=True)
    cb.on_train_end(None, module)  # the fit ends on the average, and so do the vectors it is tested with
    vectors(averaged, training=False)
    with pytest.raises(ValueError, match="decay must be in"):
        TargetWeightAveraging(decay=1.0)


def finetune_from(cache_dir, pretrained, logger=False, **model_args):
    """A target-only run that starts from ``pretrained`` weights, frozen encoder, zero-shot first."""
    L.seed_everything(1)
    args = dict(mode="text", hidden_size=16, layers=1, heads=2, max_len=10, lr=5e-3) | model_args
    model = TransferRecommender(**args, pretrained=str(pretrained))
    trainer = L.Trainer(
        max_epochs=1, accelerator="cpu", devices=1, logger=logger, enable_progress_bar=False,
        enable_model_summary=False, reload_dataloaders_every_n_epochs=1, use_distributed_sampler=False,
        callbacks=[DomainTransfer(source_epochs=0, freeze=["encoder"])], num_sanity_val_steps=0,
        enable_checkpointing=False,
    )  # fmt: skip
    data = make_data(cache_dir)
    trainer.fit(model, datamodule=TransferDataModule(target=data.target, sources=[]))
    return trainer, model


def test_finetune_from_pretrained_weights(cache_dir, tmp_path, uninterrupted):
    source_trainer, pretrained, _ = uninterrupted
    source_trainer.save_checkpoint(tmp_path / "pre.ckpt")
    trainer, model = finetune_from(cache_dir, tmp_path / "pre.ckpt")
    # The frozen encoder is exactly the pre-trained one; the adaptor started from it and moved on.
    for key, value in pretrained.encoder.state_dict().items():
        torch.testing.assert_close(model.encoder.state_dict()[key], value, rtol=0, atol=0, msg=key)
    transfer = trainer.callbacks[0]
    assert {"zeroshot/posters/ndcg@10", "zeroshot_test/posters/ndcg@10"} <= set(transfer.zero_shot_metrics)
    # Zero-shot here = the pre-trained model as it was saved, evaluated on the target.
    expected = DomainTransfer()._evaluate_target(SimpleNamespace(datamodule=trainer.datamodule), pretrained)
    assert transfer.zero_shot_metrics == pytest.approx(expected, abs=1e-6)


def test_pretrained_must_fit_the_model(cache_dir, tmp_path, uninterrupted):
    uninterrupted[0].save_checkpoint(tmp_path / "pre.ckpt")
    with pytest.raises(ValueError, match="does not fit this model"):
        finetune_from(cache_dir, tmp_path / "pre.ckpt", hidden_size=32)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        finetune_from(cache_dir, tmp_path / "missing.ckpt")


def test_handover_file_is_the_zero_shot_model_and_starts_another_run(cache_dir, tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    from rec_transfer.callbacks.domain_transfer import HANDOVER_FILE

    L.seed_everything(0)
    data = make_data(cache_dir)
    model = TransferRecommender(mode="text", hidden_size=16, layers=1, heads=2, max_len=data.hparams.max_len, lr=5e-3)
    trainer = L.Trainer(
        max_epochs=SOURCE_EPOCHS + 1, accelerator="cpu", devices=1, logger=CSVLogger(tmp_path),
        enable_progress_bar=False, enable_model_summary=False, reload_dataloaders_every_n_epochs=1,
        use_distributed_sampler=False,
        callbacks=[DomainTransfer(source_epochs=SOURCE_EPOCHS, freeze=["encoder"])], num_sanity_val_steps=0,
        enable_checkpointing=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    handover = tmp_path / "lightning_logs" / "version_0" / HANDOVER_FILE
    assert Path(trainer.log_dir) / HANDOVER_FILE == handover and handover.is_file()
    zero_shot = trainer.callbacks[0].zero_shot_metrics
    # A run started from the file evaluates, before its first step, exactly as the model at the switch did.
    restarted, _ = finetune_from(cache_dir, handover, CSVLogger(tmp_path / "restart"), max_len=data.hparams.max_len)
    assert restarted.callbacks[0].zero_shot_metrics == pytest.approx(zero_shot, abs=1e-6)
    assert not (Path(restarted.log_dir) / HANDOVER_FILE).exists()  # without sources nothing was source-trained
