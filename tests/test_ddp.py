"""Two CPU processes on gloo (``ddp_spawn``): a transfer fit, split training batches, exact sharded evaluation
and per-user test scores gathered on every rank.

Every rank records what it trained on and the (synced) validation metrics of each epoch; the checkpoint of each epoch
is then validated again in this single process, which must give the same numbers: evaluation users are split
``rank::world`` with no padding duplicates, and the metric sums are reduced exactly. Training matches one process too:
the same steps on the same rows, early stopping at the same epoch, and (without dropout, from the same start) the same
weights up to rounding.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from rec_transfer.callbacks import DomainTransfer, TargetEarlyStopping
from rec_transfer.data import DomainDataModule, TransferDataModule
from rec_transfer.data.batching import DomainBatchSampler
from rec_transfer.metrics import RankingMetrics
from rec_transfer.models.recommender import TransferRecommender
from rec_transfer.text import TextEncoderConfig

BATCH_SIZE = 16
EVAL_BATCH_SIZE = 7  # odd user counts and small eval batches: the two ranks run different numbers of eval batches
EPOCHS = 3  # epoch 0 on the sources, then the target until early stopping (patience 1, no validation improves by 1)


class RankRecorder(Callback):
    """Writes ``rank<N>.json``: every training batch (epoch, domain, users) and each epoch's validation metrics."""

    def __init__(self, folder: str):
        self.folder = folder
        self.batches: list[tuple[int, str, list[int]]] = []
        self.val: dict[int, dict[str, float]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append((trainer.current_epoch, batch["domain"], batch["user"].tolist()))

    def on_validation_end(self, trainer, pl_module):
        if trainer.sanity_checking:
            return
        # callback_metrics keep stale values of domains not validated this epoch (the sources after the switch).
        loaders = trainer.val_dataloaders if isinstance(trainer.val_dataloaders, list) else [trainer.val_dataloaders]
        prefixes = tuple(f"val/{dl.dataset.domain}/" for dl in loaders)
        metrics = trainer.callback_metrics.items()
        self.val[trainer.current_epoch] = {k: float(v) for k, v in metrics if k.startswith(prefixes)}

    def on_train_end(self, trainer, pl_module):
        out = {"world_size": trainer.world_size, "batches": self.batches, "val": self.val}
        out |= {"epochs": trainer.current_epoch, "should_stop": trainer.should_stop}
        Path(self.folder, f"rank{trainer.global_rank}.json").write_text(json.dumps(out))


class TestUsers(Callback):
    """Writes ``users<rank>.pt``: the model's per-user test scores as that rank holds them after a test."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_test_end(self, trainer, pl_module):
        torch.save(pl_module.test_user_scores, Path(self.folder, f"users{trainer.global_rank}.pt"))


def make_data(cache_dir: Path) -> TransferDataModule:
    # Uncentred vectors: the attention's key bias has a zero gradient in exact arithmetic (softmax ignores a shift),
    # so Adam turns its rounding noise into steps; with centred vectors that bias ends 7.5e-4 apart, the rest 1e-5.
    def domain(name: str, users: int) -> DomainDataModule:
        return DomainDataModule(
            f"synthetic:{name}", synthetic={"num_users": users, "num_items": 30, "mean_length": 7}, max_len=10,
            batch_size=BATCH_SIZE, eval_batch_size=EVAL_BATCH_SIZE, cache_dir=str(cache_dir),
            text_encoder=TextEncoderConfig(center=False),
        )  # fmt: skip

    return TransferDataModule(target=domain("posters", 43), sources=[domain("books", 81), domain("toys", 61)])


def trainer(devices: int, callbacks: list[Callback], **kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto", logger=False,
        enable_progress_bar=False, enable_model_summary=False, reload_dataloaders_every_n_epochs=1,
        use_distributed_sampler=False, callbacks=callbacks, **kwargs,
    )  # fmt: skip


def model() -> TransferRecommender:
    # No dropout: the ranks draw their own masks, so with it no two runs could be compared weight for weight.
    # Items ranked in chunks of 8 (of 26-30): evaluation goes through the chunked path, as a large catalogue's does.
    # No history offset: one offset unit is 10 / 0.07 logits, which turns the rounding differences of one against two
    # processes into Adam steps that leave one adaptor weight 1.8e-3 apart (the rest within 2e-4); the check here is
    # that DDP shards and weighs the steps exactly, and the offset is an ordinary parameter to it.
    return TransferRecommender(mode="text", hidden_size=16, layers=1, heads=2, max_len=10, lr=5e-3, dropout=0.0,
                               adaptor_dropout=0.0, item_chunk=8, history_bias=False)  # fmt: skip


class InitialWeights(Callback):
    """Saves the weights a fit starts from (``save``), or starts a fit from the saved ones: the item tower is built in
    ``setup``, from a random state that differs between spawned workers and this process."""

    def __init__(self, path: Path, save: bool):
        self.path, self.save = path, save

    def on_train_start(self, trainer, pl_module):
        if not self.save:
            pl_module.load_state_dict(torch.load(self.path, weights_only=True))
        elif trainer.is_global_zero:  # after DDP's broadcast of rank 0's weights: what every rank starts from
            torch.save(pl_module.state_dict(), self.path)


def callbacks(ckpt_dir: Path, *extra: Callback) -> list[Callback]:
    return [
        DomainTransfer(source_epochs=1),
        ModelCheckpoint(dirpath=ckpt_dir, filename="{epoch}", save_top_k=-1, save_last=True),
        TargetEarlyStopping(monitor="hp/val_ndcg@10", mode="max", patience=1, min_delta=1.0),
        *extra,
    ]


def test_ddp_fit_shards_batches_and_evaluates_exactly(tmp_path: Path) -> None:
    cache, ckpt_dir, records = tmp_path / "cache", tmp_path / "ckpt", tmp_path / "records"
    records.mkdir()
    warm = make_data(cache)  # processed domains and text vectors cached once here, not by both workers at once
    warm.prepare_data()
    warm.setup("fit")

    L.seed_everything(0)
    start = InitialWeights(tmp_path / "start.pt", save=True)
    fit = trainer(
        2, callbacks(ckpt_dir, RankRecorder(str(records)), start), max_epochs=EPOCHS + 3, num_sanity_val_steps=0
    )
    fit.fit(model(), datamodule=make_data(cache))
    assert (ckpt_dir / "last.ckpt").is_file()

    # The weights of one process trained on the same data: the same steps on the same rows, each step's gradient
    # the same (the ranks' mean losses weighted by their share of the step's targets), up to rounding.
    L.seed_everything(0)
    start = InitialWeights(tmp_path / "start.pt", save=False)
    one = trainer(1, callbacks(tmp_path / "ckpt-1", start), max_epochs=EPOCHS + 3, num_sanity_val_steps=0)
    single = model()
    one.fit(single, datamodule=make_data(cache))
    assert one.current_epoch == EPOCHS
    ddp_weights = torch.load(ckpt_dir / "last.ckpt", weights_only=True)["state_dict"]
    for key, value in single.state_dict().items():
        torch.testing.assert_close(ddp_weights[key], value, rtol=0, atol=5e-4, msg=key)  # unweighted: off by 0.04

    ranks = [json.loads((records / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(r["world_size"] == 2 for r in ranks)
    # Early stopping decided the same on both ranks: the first target validation sets the best, the next stops.
    assert [(r["epochs"], r["should_stop"]) for r in ranks] == [(EPOCHS, True)] * 2

    # Training: each step's batch split between the ranks, so an epoch has the steps of one process and sees every
    # example exactly once (no batch repeated to even out the ranks).
    expected_domains = {0: {"books", "toys"}, 1: {"posters"}, 2: {"posters"}}
    for epoch in range(EPOCHS):
        per_rank = [[(d, users) for e, d, users in r["batches"] if e == epoch] for r in ranks]
        phase = [warm.domains[name] for name in sorted(expected_domains[epoch])]
        single = DomainBatchSampler([m.view("train").lengths() for m in phase], BATCH_SIZE, epoch=epoch)
        assert len(per_rank[0]) == len(per_rank[1]) == len(single) > 0  # the steps of one process
        assert [d for d, _ in per_rank[0]] == [d for d, _ in per_rank[1]]  # both halves of a step: one domain
        assert {d for batches in per_rank for d, _ in batches} == expected_domains[epoch]
        for name in expected_domains[epoch]:
            want = Counter(warm.domains[name].view("train").users.tolist())
            got = Counter(u for batches in per_rank for d, users in batches if d == name for u in users)
            assert got == want, f"epoch {epoch}: {name} examples missed or repeated"

    # Evaluation: both ranks hold the same synced metrics, equal to one process validating the same weights.
    assert ranks[0]["val"] == ranks[1]["val"]
    for epoch, ddp_metrics in ranks[0]["val"].items():
        domains = {"posters", "books", "toys"} if int(epoch) == 0 else {"posters"}  # sources in the source phase
        per_domain = len(RankingMetrics().compute())  # every metric at each cut-off, and MRR
        assert {k.split("/")[1] for k in ddp_metrics} == domains and len(ddp_metrics) == per_domain * len(domains)
        single = trainer(1, [DomainTransfer(source_epochs=1)])
        out = single.validate(model(), datamodule=make_data(cache), ckpt_path=ckpt_dir / f"epoch={epoch}.ckpt")[0]
        for key, value in ddp_metrics.items():
            assert out[key] == pytest.approx(value, abs=1e-6), (epoch, key)

    # Testing: every rank gathers each target user's scores once, as one process testing the same weights has them.
    tested = trainer(2, [DomainTransfer(source_epochs=1), TestUsers(str(records))])
    tested.test(model(), datamodule=make_data(cache), ckpt_path=ckpt_dir / "last.ckpt")
    alone = model()
    trainer(1, [DomainTransfer(source_epochs=1)]).test(
        alone, datamodule=make_data(cache), ckpt_path=ckpt_dir / "last.ckpt"
    )
    want = alone.test_user_scores
    assert len(want["user"]) == len(warm.domains["posters"].view("test").users)
    for rank in range(2):
        got = torch.load(records / f"users{rank}.pt", weights_only=True)
        assert torch.equal(got["user"], want["user"]) and torch.equal(got["recall@10"], want["recall@10"])
        torch.testing.assert_close(got["ndcg@10"], want["ndcg@10"])


def test_the_command_line_fit_under_ddp_reports_once_and_as_one_process(tmp_path: Path) -> None:
    """``rec-transfer fit --trainer.strategy ddp``: Lightning starts the second rank as a new process running the same
    command, and every collective (``trainer.log_dir`` among them) must be reached by both ranks, or the fit hangs."""
    import os
    import subprocess
    import sys

    from cli_helpers import run_dir, tiny_quickstart

    config = tiny_quickstart(tmp_path)
    args = [sys.executable, "-m", "rec_transfer.cli", "fit", "--config", str(config), "--trainer.accelerator", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [*args, "--trainer.strategy", "ddp", "--trainer.devices", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("── result: ") == 1 and out.stderr.count("switched from the sources to the target") == 1
    assert "2 cpu device(s)" in out.stderr and "transfer − target only on the same" in out.stdout
    assert sorted(p.name for p in run_dir(tmp_path).parent.iterdir()) == ["version_0"]  # one folder for both ranks
    results = json.loads((run_dir(tmp_path) / "results.json").read_text())
    assert {"transfer", "zero_shot", "target_only", "comparison"} <= set(results)
    # Predict from the fit's weights into a new run folder: both ranks write there, rank 0's choice.
    ckpt = run_dir(tmp_path) / "checkpoints" / "last.ckpt"
    predict = [*args[:3], "predict", *args[4:], "--model.pretrained", str(ckpt)]
    out = subprocess.run(
        [*predict, "--trainer.strategy", "ddp", "--trainer.devices", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    written = sorted(run_dir(tmp_path, 1).iterdir())
    assert [p.name for p in written] == ["recommendations.jsonl.rank0", "recommendations.jsonl.rank1"]
    users = [json.loads(line)["user_id"] for p in written for line in p.read_text().splitlines()]
    target_users = int(re.search(r"posters: (\d+) users", out.stderr).group(1))
    assert len(users) == len(set(users)) == target_users  # each user once, across the ranks
    spawn = subprocess.run(
        [*args, "--trainer.strategy", "ddp_spawn", "--trainer.devices", "2"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert spawn.returncode == 2 and spawn.stderr.strip().splitlines()[-1].endswith("use --trainer.strategy ddp")
