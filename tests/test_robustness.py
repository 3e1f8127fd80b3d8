"""Nothing silently wrong: one section per item of issue 22, each probing as a careless or hostile user would.

1 safe loading, 2 no untrained evaluation, 3 checkpoint vs given hyperparameters, 4 resuming a finished fit,
5 data read right or refused, 6 faults (broken checkpoint, partial outputs, hung lock), 7 DDP batches,
8 names confined to their folder and unknown text models refused at once.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from cli_helpers import cli, tiny_quickstart
from lightning.pytorch.callbacks import Callback

from rec_transfer.callbacks.checkpoint import find_checkpoint
from rec_transfer.data import DomainDataModule
from rec_transfer.data.batching import DomainBatchSampler
from rec_transfer.data.errors import DataFormatError
from rec_transfer.data.formats import read_domain, read_recbole
from rec_transfer.models import hparams as hp
from rec_transfer.models.recommender import TransferRecommender
from rec_transfer.text.cache import _encoding_lock
from rec_transfer.text.models import resolve_model
from rec_transfer.utils.checkpoints import CheckpointError, NoCheckpoint, load_checkpoint

PACKAGE = Path(__file__).resolve().parents[1] / "rec_transfer"
SOURCE_EPOCHS = 1


def stopping_quickstart(root: Path, ckpt_dir: Path, max_epochs: int = 6) -> Path:
    """The tiny quickstart with early stopping that always fires at the second target validation (nothing improves
    by 1), so the fit ends after epoch 2 of ``max_epochs``; no target-only comparison."""
    path = tiny_quickstart(root, ckpt_dir)
    config = yaml.safe_load(path.read_text())
    config.update(compare_target_only=False, results_json=str(root / "results.json"))
    config["trainer"]["max_epochs"] = max_epochs
    for cb in config["trainer"]["callbacks"]:
        if cb["class_path"].endswith("TargetEarlyStopping"):
            cb["init_args"].update(patience=1, min_delta=1.0)
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def stopped(tmp_path_factory) -> SimpleNamespace:
    """A fit that early-stopped: its config, checkpoints and results."""
    root = tmp_path_factory.mktemp("stopped")
    config = stopping_quickstart(root, root / "ckpt")
    c = cli(root, "fit", "--config", config)
    results = json.loads((root / "results.json").read_text())
    return SimpleNamespace(root=root, config=config, ckpt=root / "ckpt", cli=c, results=results)


def copy_run(run: SimpleNamespace, tmp_path: Path) -> SimpleNamespace:
    """The run's checkpoints copied under ``tmp_path``, with a config pointing at the copy."""
    shutil.copytree(run.ckpt, tmp_path / "ckpt")
    config = yaml.safe_load(run.config.read_text())
    for cb in config["trainer"]["callbacks"]:
        if cb["class_path"].endswith("LatestCheckpoint"):
            cb["init_args"]["dirpath"] = str(tmp_path / "ckpt")
    config["results_json"] = str(tmp_path / "results.json")
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(tmp_path / "logs")
    path = tmp_path / "copy.yaml"
    path.write_text(yaml.safe_dump(config))
    return SimpleNamespace(root=tmp_path, config=path, ckpt=tmp_path / "ckpt")


# ---------------------------------------------------------------- 1: safe loading
class _Plant:
    """Unpickling it creates a file: what a crafted checkpoint does to a weights_only=False load."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def crafted_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"state_dict": {"encoder.w": torch.zeros(1)}, "hyper_parameters": {}, "x": _Plant(marker)}, path)
    return path


def test_pretrained_checkpoint_with_code_is_refused_and_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "planted"
    path = crafted_checkpoint(tmp_path / "evil.ckpt", marker)
    model = TransferRecommender(mode="id", hidden_size=16, layers=1, heads=1, max_len=5)
    with pytest.raises(CheckpointError, match="refused") as exc:
        model.load_pretrained(str(path))
    assert str(path) in str(exc.value) and not marker.exists()


def test_ckpt_path_with_code_is_refused_and_runs_nothing(stopped, tmp_path: Path) -> None:
    marker = tmp_path / "planted"
    path = crafted_checkpoint(tmp_path / "evil.ckpt", marker)
    with pytest.raises(CheckpointError, match="refused"):
        cli(tmp_path, "test", "--config", stopped.config, "--ckpt_path", path)
    assert not marker.exists()


def test_no_unsafe_load_left_in_the_package() -> None:
    offenders = [str(p) for p in PACKAGE.rglob("*.py") if "weights_only=False" in p.read_text()]
    assert offenders == []


def test_our_own_checkpoints_load_weights_only(stopped) -> None:
    for path in stopped.ckpt.glob("*.ckpt"):
        assert load_checkpoint(path)["state_dict"]


# ---------------------------------------------------------------- 2: no evaluation of an untrained model
@pytest.mark.parametrize("subcommand", ["validate", "test", "predict"])
def test_evaluation_without_a_checkpoint_is_an_error(subcommand: str, tmp_path: Path) -> None:
    config = stopping_quickstart(tmp_path, tmp_path / "no-checkpoints")
    with pytest.raises(FileNotFoundError, match="last"):
        cli(tmp_path, subcommand, "--config", config, "--ckpt_path", "last")
    with pytest.raises(NoCheckpoint, match="needs trained weights"):
        cli(tmp_path, subcommand, "--config", config)
    assert not (tmp_path / "logs").exists() and not (tmp_path / "no-checkpoints").exists()  # nothing ran


# ---------------------------------------------------------------- 3: checkpoint vs given hyperparameters
def test_every_model_argument_has_a_checkpoint_policy() -> None:
    import inspect

    arguments = set(inspect.signature(TransferRecommender.__init__).parameters) - {"self"}
    sets = [hp.FIXED_BY_WEIGHTS, hp.EVALUATION, hp.TRAINING]
    assert set().union(*sets) == arguments
    assert sum(len(s) for s in sets) == len(arguments)  # each in exactly one


def test_checkpoint_hparams_apply_or_refuse_per_key() -> None:
    saved = {"hidden_size": 32, "layers": 2, "top_k": 10, "target_lr": None, "lr": 1e-3, "cutoffs": (10, 50)}
    hparams, applied = hp.checkpoint_hparams(saved, {"top_k": 3, "target_lr": 0.5, "layers": 2, "cutoffs": [10, 50]})
    # history_bias, text_write_back: the values of checkpoints written before the options (hp.SINCE): their weights
    # lack the offset, and their banks were never written back
    since = {"history_bias": False, "text_write_back": False}
    assert hparams == {"hidden_size": 32, "layers": 2, "top_k": 3, "target_lr": 0.5, "lr": 1e-3, **since,
                       "cutoffs": [10, 50]}  # fmt: skip
    assert applied == {"top_k": (10, 3), "target_lr": (None, 0.5)}  # a list given for a tuple is the same cut-offs
    with pytest.raises(ValueError, match=r"hidden_size: checkpoint 32, given 64; layers: checkpoint 2, given 3"):
        hp.checkpoint_hparams(saved, {"hidden_size": 64, "layers": 3, "top_k": 3})


def test_prediction_settings_from_the_command_line_apply(stopped, tmp_path: Path) -> None:
    out = tmp_path / "recs.jsonl"
    writer = {"class_path": "rec_transfer.callbacks.RecommendationWriter", "init_args": {"output": str(out)}}
    c = cli(
        stopped.root, "predict", "--config", stopped.config, "--ckpt_path", stopped.ckpt / "last.ckpt",
        "--model.top_k", "3", f"--trainer.callbacks+={json.dumps(writer)}",
    )  # fmt: skip
    assert c.model.hparams.top_k == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and all(len(r["items"]) == 3 for r in rows)


def test_architecture_that_differs_from_the_checkpoint_is_refused(stopped) -> None:
    # The tiny run has hidden_size 16; 64 is the default, given explicitly here.
    for ckpt in ("last", stopped.ckpt / "last.ckpt"):
        with pytest.raises(ValueError, match=r"hidden_size: checkpoint 16, given 64"):
            cli(stopped.root, "test", "--config", stopped.config, "--ckpt_path", ckpt, "--model.hidden_size", "64")


def test_an_id_table_trained_on_other_items_is_refused_in_one_message(tmp_path: Path) -> None:
    def id_model(ids: str) -> TransferRecommender:  # one item per letter
        model = TransferRecommender(mode="id", hidden_size=16, layers=1, heads=2, max_len=5)
        items = SimpleNamespace(catalogue_digest=lambda: ids)  # Domain.catalogue_digest stands for the item ids
        shop = SimpleNamespace(
            num_items=len(ids), centred_items=len(ids), item_text=None, item_popularity=None, domain=items
        )
        model.add_domains(SimpleNamespace(domains={"shop": shop}))
        return model

    def resumes(model: TransferRecommender, path: Path, checkpoint: dict) -> None:
        model._trainer = SimpleNamespace(ckpt_path=str(path))  # --ckpt_path: Lightning calls the hook, then loads
        model.on_load_checkpoint(checkpoint)

    trained, path = id_model("abcde"), tmp_path / "trained.ckpt"
    checkpoint = {"state_dict": trained.state_dict()}
    trained.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    id_model("abcde").load_pretrained(str(path))  # the same items: loads (--model.pretrained)
    resumes(id_model("abcde"), path, checkpoint)
    for ids, why in [("abcdefg", "5 items, the data has 7"), ("abcdx", "other items than the data's")]:
        message = f"checkpoint {path}: its item IDs of 'shop' were trained on {why}"
        with pytest.raises(CheckpointError, match=re.escape(message)):
            id_model(ids).load_pretrained(str(path))
        with pytest.raises(CheckpointError, match=re.escape(message)):
            resumes(id_model(ids), path, checkpoint)


def test_resume_applies_new_learning_rates(tmp_path: Path) -> None:
    config = stopping_quickstart(tmp_path, tmp_path / "ckpt", max_epochs=2)  # stops by max_epochs, in the target
    cli(tmp_path, "fit", "--config", config, "--test_after_fit", "false")
    c = cli(
        tmp_path, "fit", "--config", config, "--ckpt_path", "last", "--trainer.max_epochs", "3",
        "--model.target_lr", "0.5", "--model.weight_decay", "0.01", "--test_after_fit", "false",
    )  # fmt: skip
    assert c.trainer.current_epoch == 3
    groups = c.trainer.optimizers[0].param_groups  # the text adaptor's (the quickstart's scale: 2), then the rest
    assert [g["lr"] for g in groups] == pytest.approx([1.0, 0.5])
    assert all(g["weight_decay"] == pytest.approx(0.01) for g in groups)
    saved = yaml.safe_load((Path(c.trainer.logger.log_dir) / "hparams.yaml").read_text())
    assert saved["target_lr"] == 0.5 and saved["weight_decay"] == 0.01
    assert load_checkpoint(tmp_path / "ckpt" / "last.ckpt")["hyper_parameters"]["target_lr"] == 0.5


def test_the_baseline_says_it_stopped_early_as_the_transfer_does(tmp_path: Path) -> None:
    config = stopping_quickstart(tmp_path, tmp_path / "ckpt")
    cli(tmp_path, "fit", "--config", config, "--compare_target_only", "true")
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["stopped_early"] is True
    # Read before its test restores the best checkpoint, which was written before the stop.
    assert results["target_only_run"]["stopped_early"] is True and results["target_only_run"]["epochs"] == 2


# ---------------------------------------------------------------- 4: a finished fit resumes to the same end
@pytest.mark.parametrize("ended_by", ["early_stopping", "max_epochs"])
def test_resuming_a_finished_fit_trains_nothing_and_reports_the_same(stopped, tmp_path: Path, ended_by: str) -> None:
    first = stopped.results
    assert first["epochs"] == SOURCE_EPOCHS + 2 < yaml.safe_load(stopped.config.read_text())["trainer"]["max_epochs"]
    run = copy_run(stopped, tmp_path)
    args = ["--trainer.max_epochs", str(first["epochs"])] if ended_by == "max_epochs" else []
    c = cli(tmp_path, "fit", "--config", run.config, "--ckpt_path", "last", *args)
    assert c.trainer.global_step == stopped.cli.trainer.global_step  # not one step trained
    again = json.loads((tmp_path / "results.json").read_text())
    for key in ("epochs", "val_history", "mean_train_epoch_seconds", "zero_shot", "transfer"):
        assert again[key] == first[key], key
    # The clock covers the whole fit, the part before the checkpoint included.
    assert again["fit_seconds"] >= first["val_history"][-1]["seconds"]


# ---------------------------------------------------------------- 5: data read right, or refused
def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines))
    return path


def recbole_folder(folder: Path, users: int = 6, items: int = 4) -> Path:
    inter = ["user_id:token\titem_id:token\ttimestamp:float"]
    inter += [f"u{u}\ti{(u + k) % items}\t{k}" for u in range(users) for k in range(4)]
    write(folder / f"{folder.name}.inter", inter)
    write(
        folder / f"{folder.name}.item", ["item_id:token\ttitle:token_seq", *[f"i{i}\titem {i}" for i in range(items)]]
    )
    return folder


def test_folder_with_two_formats_is_refused_naming_the_files(tmp_path: Path) -> None:
    folder = recbole_folder(tmp_path / "mix")
    for split in ("train", "valid", "test"):
        write(folder / f"mix.{split}.inter", ["user_id:token\titem_id_list:token_seq\titem_id:token", "u0\ti0\ti1"])
    write(folder / "mix.text", ["item_id:token\ttext:token_seq", "i0\tzero", "i1\tone"])
    with pytest.raises(DataFormatError, match="several formats") as exc:
        read_domain(folder, cache_dir=tmp_path / "cache")
    assert all(name in str(exc.value) for name in ("mix.inter", "mix.item", "mix.train.inter", "mix.text"))
    assert len(set(read_domain(folder, format="recbole", cache_dir=tmp_path / "cache").interactions["user_id"])) == 6


def test_same_size_edit_with_mtime_restored_is_read_again(tmp_path: Path) -> None:
    folder = recbole_folder(tmp_path / "shop")

    def users() -> list[str]:
        dm = DomainDataModule(str(folder), cache_dir=str(tmp_path / "cache"), max_history=None)
        dm.prepare_data()
        dm.setup()
        return sorted(dm.domain.sequences["user_id"])

    assert users() == [f"u{u}" for u in range(6)]
    inter = folder / "shop.inter"
    stat = inter.stat()
    inter.write_text(inter.read_text().replace("u5\t", "u9\t"))  # same size
    os.utime(inter, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert inter.stat().st_size == stat.st_size and inter.stat().st_mtime_ns == stat.st_mtime_ns
    assert users() == [*[f"u{u}" for u in range(5)], "u9"]


@pytest.mark.parametrize("damage", ["meta_json", "truncated_table", "flipped_bit"])
def test_corrupt_processed_domain_is_rebuilt(tmp_path: Path, damage: str, caplog) -> None:
    def module() -> DomainDataModule:
        dm = DomainDataModule("synthetic:books", synthetic={"num_users": 30, "num_items": 20}, cache_dir=str(tmp_path))
        dm.prepare_data()
        return dm

    good = module()
    good.setup()
    expected = good.domain.sequences.data.column("items").to_pylist()
    folder = good._domain_dir
    table = next((folder / "sequences").glob("*.arrow"))
    if damage == "meta_json":
        (folder / "meta.json").write_text('{"name": "bo')
    elif damage == "truncated_table":
        table.write_bytes(table.read_bytes()[:-100])
    else:
        data = bytearray(table.read_bytes())
        data[len(data) // 2] ^= 0x01
        table.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        again = module()
    assert "rebuilding" in caplog.text
    again.setup()
    assert again.domain.sequences.data.column("items").to_pylist() == expected


def test_bad_utf8_names_its_own_line(tmp_path: Path) -> None:
    lines = ["user_id:token\titem_id:token\ttimestamp:float"] + [
        f"user{n:05d}\titem{n % 7}\t{n}" for n in range(2, 500)
    ]
    path = tmp_path / "big" / "big.inter"
    data = "".join(line + "\n" for line in lines).encode()
    start = data.index(b"user00400")  # line 400: 8 KiB past the start, beyond the first block a decoder reads
    data = data[:start] + b"\xff" + data[start + 1 :]
    path.parent.mkdir()
    path.write_bytes(data)
    write(path.parent / "big.item", ["item_id:token\ttitle:token_seq", *[f"item{i}\tt" for i in range(7)]])
    with pytest.raises(DataFormatError) as exc:
        read_recbole(path.parent, cache_dir=tmp_path / "cache")
    assert exc.value.line == 400 and "UTF-8" in str(exc.value)
    gz = path.parent / "gz" / "gz.inter"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(data))
    shutil.copy(path.parent / "big.item", gz.parent / "gz.item")
    with pytest.raises(DataFormatError) as exc:
        read_recbole(gz.parent, cache_dir=tmp_path / "cache")
    assert exc.value.line == 400


def test_a_field_named_twice_in_a_header_is_refused(tmp_path: Path) -> None:
    folder = recbole_folder(tmp_path / "dup")
    write(folder / "dup.inter", ["user_id:token\titem_id:token\titem_id:token\ttimestamp:float", "u\ti0\ti1\t3"])
    with pytest.raises(DataFormatError, match=r"item_id in columns \[2, 3\]") as exc:
        read_recbole(folder, cache_dir=tmp_path / "cache")
    assert exc.value.line == 1


def test_ids_lose_surrounding_spaces_and_empty_ids_are_refused(tmp_path: Path, caplog) -> None:
    folder = recbole_folder(tmp_path / "sp")
    write(folder / "sp.inter", ["user_id:token\titem_id:token", "u1\ti0", "u1 \ti1", " u1\ti2 "])
    with caplog.at_level(logging.WARNING):
        domain = read_recbole(folder, cache_dir=tmp_path / "cache")
    assert domain.interactions["user_id"] == ["u1"] * 3 and domain.interactions["item_id"] == ["i0", "i1", "i2"]
    assert domain.counts["ids_with_spaces"] == 3 and "removed spaces around 3 ids" in caplog.text
    write(folder / "sp.inter", ["user_id:token\titem_id:token", "u1\ti0", "\ti1"])
    with pytest.raises(DataFormatError, match="empty user_id") as exc:
        read_recbole(folder, cache_dir=tmp_path / "cache")
    assert exc.value.line == 3


# ---------------------------------------------------------------- 6: faults
def test_truncated_last_checkpoint_falls_back_to_the_newest_whole_one(stopped, tmp_path: Path, caplog) -> None:
    run = copy_run(stopped, tmp_path)
    last = run.ckpt / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    others = [p for p in run.ckpt.glob("*.ckpt") if p != last]
    with caplog.at_level(logging.WARNING):
        found = find_checkpoint("last", [run.ckpt])
    assert found in others and "falling back" in caplog.text and "last.ckpt" in caplog.text
    c = cli(tmp_path, "test", "--config", run.config, "--ckpt_path", "last")
    assert c.trainer.ckpt_path == str(found)
    for path in others:
        path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="nothing whole|no whole checkpoint") as exc:
        find_checkpoint("last", [run.ckpt])
    assert "last.ckpt" in str(exc.value)
    with pytest.raises(CheckpointError, match="truncated"):
        cli(tmp_path, "test", "--config", run.config, "--ckpt_path", last)  # a named file is refused, no fallback


def test_a_checkpoint_killed_while_written_leaves_the_previous_one(tmp_path: Path) -> None:
    from rec_transfer.callbacks import LatestCheckpoint

    def save(filepath, weights_only=False):  # what an interrupted write leaves: half a file
        Path(filepath).write_bytes(b"PK half a checkpoint")
        raise KeyboardInterrupt

    callback = LatestCheckpoint(dirpath=tmp_path)
    trainer = SimpleNamespace(save_checkpoint=save, global_step=3, is_global_zero=True, loggers=[])
    (tmp_path / "last.ckpt").write_bytes(b"previous")
    with pytest.raises(KeyboardInterrupt):
        callback._save_checkpoint(trainer, str(tmp_path / "last.ckpt"))
    assert (tmp_path / "last.ckpt").read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["last.ckpt"]
    trainer.save_checkpoint = lambda filepath, weights_only=False: Path(filepath).write_bytes(b"new")
    callback._save_checkpoint(trainer, str(tmp_path / "last.ckpt"))
    assert (tmp_path / "last.ckpt").read_bytes() == b"new"


class CrashOnPredictBatch(Callback):
    """Raises after the recommendation writer has written the first batch: a predict killed half-way."""

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 1:
            raise RuntimeError("killed while predicting")


def test_interrupted_predict_leaves_no_partial_file(stopped, tmp_path: Path) -> None:
    out = tmp_path / "recs.jsonl"
    out.write_text("previous\n")
    writer = {"class_path": "rec_transfer.callbacks.RecommendationWriter", "init_args": {"output": str(out)}}
    crash = {"class_path": f"{__name__}.CrashOnPredictBatch"}
    with pytest.raises(RuntimeError, match="killed while predicting"):
        cli(
            stopped.root, "predict", "--config", stopped.config, "--ckpt_path", "last",
            "--data.init_args.target.init_args.eval_batch_size", "8",
            f"--trainer.callbacks+={json.dumps(writer)}", f"--trainer.callbacks+={json.dumps(crash)}",
        )  # fmt: skip
    assert out.read_text() == "previous\n" and os.listdir(tmp_path) == ["recs.jsonl"]


def test_results_json_is_written_atomically(stopped, tmp_path: Path, monkeypatch) -> None:
    import rec_transfer.runs as runs_module

    written = []
    monkeypatch.setattr(runs_module, "atomic_write", lambda path, data: written.append((str(path), json.loads(data))))
    run = copy_run(stopped, tmp_path)
    cli(tmp_path, "fit", "--config", run.config, "--ckpt_path", "last")
    assert [path for path, _ in written] == [str(tmp_path / "results.json")] and not (
        tmp_path / "results.json"
    ).exists()


def test_a_hung_lock_holder_times_out_naming_the_lock(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "key.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys, time; from pathlib import Path; from rec_transfer.text.cache import _encoding_lock\n"
            "with _encoding_lock(Path(sys.argv[1]), 5):\n    print('held', flush=True); time.sleep(120)"
        ), str(lock)],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(PACKAGE.parent)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.perf_counter()
        with pytest.raises(TimeoutError) as exc, _encoding_lock(lock, 5, timeout=0.5):
            pass
        assert time.perf_counter() - start < 5
        assert (
            str(lock) in str(exc.value) and f"pid {holder.pid}" in str(exc.value) and "lock_timeout" in str(exc.value)
        )
    finally:
        holder.kill()
        holder.wait()
    with _encoding_lock(lock, 5, timeout=5):  # a dead holder's lock is free at once
        pass


# ---------------------------------------------------------------- 7: DDP batches
@pytest.mark.parametrize("rows", [[130], [130, 65], [129, 65], [64]])
def test_ddp_batches_split_each_step_between_ranks(rows: list[int], monkeypatch) -> None:
    import rec_transfer.data.batching as batching

    lengths = [np.full(n, 5) for n in rows]
    single = DomainBatchSampler(lengths, 64, epoch=3)
    steps = list(single)
    per_rank = []
    for rank in range(2):
        monkeypatch.setattr(batching, "dist_info", lambda rank=rank: (rank, 2))
        sampler = DomainBatchSampler(lengths, 64, epoch=3)
        per_rank.append(list(sampler))
        assert len(sampler) == len(per_rank[-1])
    assert len(per_rank[0]) == len(per_rank[1])  # the same number of steps on both ranks
    assert all(a and b for a, b in zip(*per_rank, strict=True))  # no rank without rows at any step
    assert sorted(i for batches in per_rank for b in batches for i in b) == list(range(sum(rows)))  # each row once
    merged = sum(n % 64 == 1 for n in rows)  # a domain's last batch of one row joins the one before it
    assert len(per_rank[0]) == len(steps) - merged  # the steps of one process
    if not merged:
        assert [sorted(a + b) for a, b in zip(*per_rank, strict=True)] == [sorted(s) for s in steps]


def test_ddp_refuses_a_domain_with_fewer_rows_than_processes(monkeypatch) -> None:
    import rec_transfer.data.batching as batching

    monkeypatch.setattr(batching, "dist_info", lambda: (0, 2))
    with pytest.raises(ValueError, match="1 training rows: fewer than the 2 processes"):
        list(DomainBatchSampler([np.full(100, 5), np.full(1, 5)], 64))


# ---------------------------------------------------------------- 8: names and model names
@pytest.mark.parametrize("path, name", [("synthetic:../../escaped", None), ("data/shop", "../escaped"), ("x", "a/b")])
def test_domain_names_cannot_leave_their_folder(tmp_path: Path, path: str, name: str | None) -> None:
    with pytest.raises(ValueError, match="cannot name a file"):
        DomainDataModule(path, name=name, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="cannot name a file"):
        read_domain(tmp_path, name="../escaped")
    assert list(tmp_path.iterdir()) == []


def test_unknown_text_model_fails_at_once_offline_naming_it() -> None:
    resolve_model("minilm")  # imports done: time the failure alone
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as exc:
        resolve_model("no-such-text-model")
    assert time.perf_counter() - start < 3
    assert str(exc.value).startswith("text model 'no-such-text-model'") and "minilm" in str(exc.value)
    with pytest.raises(FileNotFoundError, match=r"^text model 'minilmm' \(did you mean 'minilm'\?\)"):
        resolve_model("minilmm")
    with pytest.raises(FileNotFoundError, match=r"^text model './no/such/folder': no such local file"):
        resolve_model("./no/such/folder")


def test_unknown_text_model_without_network_fails_at_once(monkeypatch) -> None:
    import huggingface_hub
    from huggingface_hub import constants

    def unreachable(self, repo_id, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError, match=r"^text model 'no-such-text-model': .*cannot be reached"):
        resolve_model("no-such-text-model")
    assert time.perf_counter() - start < 3


def test_pickle_of_plant_really_plants(tmp_path: Path) -> None:
    # The crafted checkpoint above is a real threat: plain unpickling creates the file.
    marker = tmp_path / "planted"
    pickle.loads(pickle.dumps(_Plant(marker))).close()
    assert marker.exists()
