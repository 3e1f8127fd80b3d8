"""Inputs of the scale benchmark: a synthetic domain of any size as RecBole atomic files, and a tiny text encoder.

``write_synthetic_domain`` draws every interaction at once with numpy (the package's ``rec_transfer.data.synthetic``
loops in Python per interaction: fine for tests, hours for millions) and writes ``<name>.inter`` and ``<name>.item``,
so the benchmark reads them through the package's own reader and preprocessing. Users follow topic transitions (a
topic is usually followed by itself or the next one) and popular items within a topic, so that a model can learn
something; every item is used at least once, so the processed domain keeps the whole catalogue.

``write_tiny_encoder`` saves a randomly initialised one-layer BERT (hidden 32) with a small WordPiece tokenizer
trained on the texts: cheap enough to encode a million texts on a CPU through the real encoding path
(``cached_item_vectors`` with its shards), where MiniLM would take an hour.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from rec_transfer.utils.files import atomic_dir

_SYLLABLES = "ka lo mi re su ta ne vo ri pa da ze ku mo li fa".split()
_ADJECTIVES = "classic deluxe mini vintage modern giant compact heavy duty portable digital premium".split()
_NOUNS = "kit set pack tool case unit device holder adapter refill".split()
# The settings as JSON; only a complete folder holds it. Not *.json: a folder with JSON files reads as Amazon data.
_MARKER = "rec_transfer_synthetic.settings"


def _words(rng: np.random.Generator, count: int) -> list[str]:
    """``count`` distinct pseudo-words of 2-3 syllables."""
    words: dict[str, None] = {}
    while len(words) < count:
        parts = rng.choice(_SYLLABLES, size=int(rng.integers(2, 4)))
        words["".join(parts)] = None
    return list(words)


def _with_prefix(prefix: str, values: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.cast(pa.array(values), pa.string()), "")


def _write_tsv(path: Path, header: str, table: pa.Table) -> None:
    with path.open("wb") as f:
        f.write(f"{header}\n".encode())
        options = pa_csv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
        pa_csv.write_csv(table, f, options)


def synthetic_interactions(
    num_items: int, num_users: int, num_interactions: int, seed: int = 0, topics: int = 64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """User, item and position in the user's history of every interaction (grouped by user, in time order).

    History lengths are the mean ``num_interactions / num_users`` plus or minus up to 10 (never under 3) and add up to
    ``num_interactions`` exactly; every item 0..num_items-1 occurs at least once.
    """
    if num_interactions < 3 * num_users or num_interactions < num_items:
        raise ValueError(f"{num_interactions} interactions cannot give {num_users} users 3 each and use every item")
    rng = np.random.default_rng(seed)
    mean = num_interactions // num_users
    lengths = np.full(num_users, mean)
    lengths[: num_interactions % num_users] += 1
    # Zero-sum noise: what one user of a pair gains, the other loses.
    half, spread = num_users // 2, min(10, mean - 3)
    pairs = rng.permutation(num_users)[: 2 * half].reshape(2, half)
    noise = rng.integers(-spread, spread + 1, half)
    lengths[pairs[0]] += noise
    lengths[pairs[1]] -= noise
    user = np.repeat(np.arange(num_users), lengths)
    starts = np.cumsum(lengths) - lengths
    position = np.arange(num_interactions) - np.repeat(starts, lengths)
    # Topic walk: stay (15%), move to the next topic (70%) or jump anywhere (15%).
    r = rng.random(num_interactions)
    step = np.where(r < 0.15, 0, np.where(r < 0.85, 1, rng.integers(0, topics, num_interactions)))
    step[starts] = 0
    walk = np.cumsum(step)
    topic = (rng.integers(0, topics, num_users)[user] + walk - walk[starts][user]) % topics
    # Items of topic k are k, k + topics, ...; the first ones are the popular ones (P(rank < x) = (x / n)^(1/3)).
    per_topic = (num_items - np.arange(topics) + topics - 1) // topics  # (topics,)
    rank = np.minimum((per_topic[topic] * rng.random(num_interactions) ** 3).astype(np.int64), per_topic[topic] - 1)
    item = topic + topics * rank
    item[rng.choice(num_interactions, size=num_items, replace=False)] = rng.permutation(num_items)  # all used
    return user, item, position


def synthetic_texts(num_items: int, seed: int = 0, topics: int = 64) -> list[str]:
    """One title per item: words of its topic (``item % topics``), an adjective, a noun and a model number."""
    rng = np.random.default_rng([seed, 1])
    vocab = np.array(_words(rng, topics * 6)).reshape(topics, 6)
    topic = np.arange(num_items) % topics
    first, second = rng.integers(0, 6, num_items), rng.integers(0, 6, num_items)
    adjective = np.array(_ADJECTIVES)[rng.integers(0, len(_ADJECTIVES), num_items)]
    noun = np.array(_NOUNS)[rng.integers(0, len(_NOUNS), num_items)]
    number = rng.integers(1, 10_000, num_items)
    return [
        f"{a} {w1} {w2} {n} {k}"
        for a, w1, w2, n, k in zip(
            adjective.tolist(),
            vocab[topic, first].tolist(),
            vocab[topic, second].tolist(),
            noun.tolist(),
            number.tolist(),
            strict=True,
        )
    ]


def write_synthetic_domain(
    folder: str | Path, num_items: int, num_users: int, num_interactions: int, seed: int = 0
) -> Path:
    """Writes ``<folder>/<folder name>.inter`` and ``.item`` (RecBole atomic files), unless already there.

    Returns:
        The folder.
    """
    folder = Path(folder)
    settings = {"items": num_items, "users": num_users, "interactions": num_interactions, "seed": seed}
    marker = folder / _MARKER
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return folder
    if folder.exists():
        shutil.rmtree(folder)  # of other settings
    with atomic_dir(folder, marker=_MARKER) as tmp:
        user, item, position = synthetic_interactions(num_items, num_users, num_interactions, seed)
        columns = {"u": _with_prefix("u", user), "i": _with_prefix("i", item), "t": pc.cast(position, pa.string())}
        del user, item, position
        _write_tsv(tmp / f"{folder.name}.inter", "user_id:token\titem_id:token\ttimestamp:float", pa.table(columns))
        del columns
        items = pa.table({"i": _with_prefix("i", np.arange(num_items)), "text": synthetic_texts(num_items, seed)})
        _write_tsv(tmp / f"{folder.name}.item", "item_id:token\ttext:token_seq", items)
        (tmp / _MARKER).write_text(json.dumps(settings))
    return folder


def write_tiny_encoder(folder: str | Path, texts: list[str], hidden: int = 32, vocab_size: int = 1000) -> Path:
    """A random one-layer BERT of width ``hidden`` and a WordPiece tokenizer trained on ``texts``, saved to ``folder``
    (unless already there). Loadable by name: ``text_encoder.model_name: <folder>``."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        return folder
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]"
    )
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    with atomic_dir(folder, marker="tokenizer.json") as tmp:
        BertModel(config).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return folder
