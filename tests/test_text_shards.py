"""Tests for rec_transfer.text.shards: a large catalogue is encoded in shards cached as they finish, and resumes."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rec_transfer.text import cache as cache_module
from rec_transfer.text import cache_path, cached_item_vectors, text_cache_key
from rec_transfer.text import shards as shards_module
from rec_transfer.text.models import resolve_model
from rec_transfer.text.shards import shard_dir, shard_ranges

REPO_ROOT = Path(__file__).resolve().parents[1]
WORDS = "steel glass flask gloves lab digital scale beaker pipette magnetic stirrer safety goggles wrench".split()
# 39 texts of different lengths; shards of 8: five shards, the last one of 7.
TEXTS = [" ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(1 + i % 9)) + f" no {i}" for i in range(39)]
SHARD = 8


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny_bert_1layer")
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        TEXTS, trainers.WordPieceTrainer(vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[CLS]"])
    )
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A", special_tokens=[("[CLS]", 2)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]")
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def counting_loader(rows: list[int]):
    """``load_text_model`` that hooks every model it loads to append the size of each batch it runs to ``rows``."""
    real = cache_module.load_text_model

    def counting(name, *args, **kwargs):
        model, tokenizer, identity = real(name, *args, **kwargs)
        model.register_forward_hook(lambda m, a, k, out: rows.append(len(k["input_ids"])), with_kwargs=True)
        return model, tokenizer, identity

    return counting


@pytest.fixture
def seen(monkeypatch) -> list[int]:
    """Texts the language model is run on, batch by batch (a forward hook on every model the cache loads)."""
    rows: list[int] = []
    monkeypatch.setattr(cache_module, "load_text_model", counting_loader(rows))
    return rows


def _encode(texts, model, cache_dir, shard_size=SHARD):
    return cached_item_vectors(texts, model_name=model, cache_dir=cache_dir, shard_size=shard_size, progress=False)


def _key(texts, model) -> str:
    return text_cache_key(
        texts, identity=resolve_model(model).identity, pooling="mean", max_length=128, normalize=False
    )


def _kill_after_shard(monkeypatch, index: int) -> None:
    """Writing shard ``index`` is the last thing the run does: it dies (raises) right after."""
    real = shards_module.save_vectors

    def save_then_die(path, tensor, metadata):
        real(path, tensor, metadata)
        if metadata.get("shard") == str(index):
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(shards_module, "save_vectors", save_then_die)


def test_shard_ranges():
    assert shard_ranges(39, 8) == [(0, 8), (8, 16), (16, 24), (24, 32), (32, 39)]
    assert shard_ranges(8, 8) == [(0, 8)] and shard_ranges(0, 8) == []
    with pytest.raises(ValueError, match="shard_size"):
        shard_ranges(3, 0)


def test_killed_run_resumes_from_its_last_finished_shard(tiny_model, tmp_path, monkeypatch, seen):
    reference = _encode(TEXTS, tiny_model, tmp_path / "reference")
    assert sum(seen) == len(TEXTS)
    one_shard = _encode(TEXTS, tiny_model, tmp_path / "one_shard", shard_size=len(TEXTS))
    torch.testing.assert_close(reference, one_shard, atol=1e-5, rtol=1e-4)  # sharding changes only batching

    sizes: list[int] = []  # the texts each encoding call gets: never more than a shard
    real_encode = shards_module.encode_texts_sharded

    def recording(texts, *args, **kwargs):
        sizes.append(len(texts))
        return real_encode(texts, *args, **kwargs)

    monkeypatch.setattr(shards_module, "encode_texts_sharded", recording)
    seen.clear()
    with monkeypatch.context() as m:
        _kill_after_shard(m, 2)
        with pytest.raises(KeyboardInterrupt):
            _encode(TEXTS, tiny_model, tmp_path)
    path = cache_path(tmp_path, _key(TEXTS, tiny_model))
    assert not path.exists()
    assert sorted(p.name for p in shard_dir(path).iterdir()) == [f"0000{i}.safetensors" for i in range(3)]
    assert sum(seen) == 3 * SHARD and max(sizes) == SHARD

    seen.clear()
    resumed = _encode(TEXTS, tiny_model, tmp_path)
    assert sum(seen) == len(TEXTS) - 3 * SHARD  # only the two shards that were not finished
    assert torch.equal(resumed, reference)
    assert path.exists() and not shard_dir(path).exists()
    assert [p.name for p in (tmp_path / "text_vectors").iterdir()] == [path.name]
    seen.clear()
    assert torch.equal(_encode(TEXTS, tiny_model, tmp_path), reference) and seen == []  # a plain cache hit


def test_damaged_shard_is_encoded_again(tiny_model, tmp_path, monkeypatch, seen, caplog):
    reference = _encode(TEXTS, tiny_model, tmp_path / "reference")
    with monkeypatch.context() as m:
        _kill_after_shard(m, 2)
        with pytest.raises(KeyboardInterrupt):
            _encode(TEXTS, tiny_model, tmp_path)
    folder = shard_dir(cache_path(tmp_path, _key(TEXTS, tiny_model)))
    damaged = folder / "00001.safetensors"
    data = damaged.read_bytes()
    damaged.write_bytes(data[:-16] + bytes(16))  # same size, valid header: only the checksum notices
    (folder / ".00002.safetensors.x.tmp").write_bytes(b"partial")  # what a kill while writing leaves
    seen.clear()
    with caplog.at_level(logging.WARNING):
        resumed = _encode(TEXTS, tiny_model, tmp_path)
    assert "does not match (checksum)" in caplog.text
    assert sum(seen) == len(TEXTS) - 2 * SHARD  # shard 1 again, and shards 3 and 4
    assert torch.equal(resumed, reference)
    assert not folder.exists()


def test_shards_of_other_texts_or_sizes_are_not_reused(tiny_model, tmp_path, monkeypatch, seen):
    with monkeypatch.context() as m:
        _kill_after_shard(m, 1)
        with pytest.raises(KeyboardInterrupt):
            _encode(TEXTS, tiny_model, tmp_path)
    old = shard_dir(cache_path(tmp_path, _key(TEXTS, tiny_model)))
    assert len(list(old.iterdir())) == 2

    changed = [*TEXTS[:-1], TEXTS[-1] + " extra"]  # another catalogue: another key, another folder
    seen.clear()
    fresh = _encode(changed, tiny_model, tmp_path)
    assert sum(seen) == len(changed)
    torch.testing.assert_close(fresh, _encode(changed, tiny_model, tmp_path / "alone"))
    assert len(list(old.iterdir())) == 2  # the interrupted run's shards are left to it

    seen.clear()
    _encode(TEXTS, tiny_model, tmp_path, shard_size=10)  # the old shards cover other ranges: none fits
    assert sum(seen) == len(TEXTS)
    assert not old.exists()


@pytest.mark.slow
def test_resume_after_a_real_kill(tiny_model, tmp_path, seen):
    """SIGKILL while encoding (no exception handler runs): the next run resumes from the finished shards."""
    child = textwrap.dedent(
        f"""
        import sys, time
        from rec_transfer.text import cached_item_vectors, shards
        real = shards.save_vectors
        def save_and_report(path, tensor, metadata):
            real(path, tensor, metadata)
            if metadata.get("shard") == "1":
                print("shard 1 written", flush=True)
                time.sleep(600)
        shards.save_vectors = save_and_report
        cached_item_vectors({TEXTS!r}, model_name={tiny_model!r}, cache_dir={str(tmp_path)!r}, shard_size={SHARD},
                            progress=False)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == "shard 1 written"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    path = cache_path(tmp_path, _key(TEXTS, tiny_model))
    assert not path.exists() and len(list(shard_dir(path).iterdir())) == 2
    resumed = _encode(TEXTS, tiny_model, tmp_path)  # the dead run's lock is free again
    assert sum(seen) == len(TEXTS) - 2 * SHARD
    assert torch.equal(resumed, _encode(TEXTS, tiny_model, tmp_path / "reference"))


def _resume_worker(rank: int, world: int, init_file: str, model: str, cache_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        rows: list[int] = []
        cache_module.load_text_model = counting_loader(rows)
        vectors = _encode(TEXTS, model, cache_dir)
        torch.save({"vectors": vectors, "seen": sum(rows)}, Path(cache_dir) / f"rank{rank}.pt")
        dist.barrier()  # both ranks done before either tears gloo down (a rank left alone aborted once in CI)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_resume_under_ddp(tiny_model, tmp_path, monkeypatch):
    """Two gloo ranks finish a catalogue a single process started: each encodes its share of the missing shards."""
    reference = _encode(TEXTS, tiny_model, tmp_path / "reference")
    with monkeypatch.context() as m:
        _kill_after_shard(m, 1)
        with pytest.raises(KeyboardInterrupt):
            _encode(TEXTS, tiny_model, tmp_path)
    mp.start_processes(
        _resume_worker, args=(2, str(tmp_path / "init"), tiny_model, str(tmp_path)), nprocs=2, start_method="spawn"
    )
    results = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    assert sum(r["seen"] for r in results) == len(TEXTS) - 2 * SHARD  # every missing text once, across the ranks
    assert all(r["seen"] > 0 for r in results)
    for r in results:
        torch.testing.assert_close(r["vectors"], reference, atol=1e-5, rtol=1e-4)
    path = cache_path(tmp_path, _key(TEXTS, tiny_model))
    assert path.exists() and not shard_dir(path).exists()
    torch.testing.assert_close(_encode(TEXTS, tiny_model, tmp_path), reference, atol=1e-5, rtol=1e-4)
