"""``DomainDataModule``: one domain's loaders, item texts and item vectors."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from rec_transfer.data.batching import DomainBatchSampler, SequenceView, Split, collate, window_stride
from rec_transfer.data.domain import Domain, PreprocessConfig, preprocess
from rec_transfer.data.errors import DataFormatError
from rec_transfer.data.formats import read_domain
from rec_transfer.data.synthetic import synthetic_domain
from rec_transfer.text import TextEncoderConfig
from rec_transfer.text.whitening import VectorShape
from rec_transfer.utils.distributed import dist_info
from rec_transfer.utils.files import file_digest, safe_name

log = logging.getLogger(__name__)

SYNTHETIC = "synthetic:"
DEFAULT_MAX_LEN = 50
# What a domain's items are encoded with unless its config says otherwise: the README's "MiniLM by default".
DEFAULT_TEXT_ENCODER = TextEncoderConfig()
T = TypeVar("T")
# Bump when what a processed domain holds changes meaning, so old ones are not reused (2: checksums, clean ids;
# 3: the short users, for predict).
DOMAIN_CACHE_VERSION = 3


def default_domain_name(path: str) -> str:
    """A domain's name where its config gives none: ``Office`` for ``amazon/Office``, ``posters`` for
    ``synthetic:posters``."""
    return path[len(SYNTHETIC) :] if path.startswith(SYNTHETIC) else Path(path).name


def _source_fingerprint(path: str, extra: dict) -> str:
    """What the processed domain depends on: every input file's name and content (sha256; see ``file_digest`` for
    the cost), or the generator's settings."""
    parts = [f"v{DOMAIN_CACHE_VERSION}", path, json.dumps(extra, sort_keys=True, default=str)]
    if not path.startswith(SYNTHETIC):
        p = Path(path)
        files = sorted(p.iterdir()) if p.is_dir() else [p]
        parts += [f"{f.name}:{file_digest(f)}" for f in files if f.is_file()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:20]


class DomainDataModule(L.LightningDataModule):
    """One domain: interactions and item texts, split leave-one-out, served as padded batches.

    Args:
        path: a domain folder (RecBole atomic files, UniSRec files, or Amazon JSON lines), or
            ``"synthetic:<name>"`` for a SYNTHETIC domain from ``rec_transfer.data.synthetic``.
        name: the domain's name in metric names; defaults to the folder's (or synthetic) name.
        format: the files' format; ``auto`` detects it from the folder.
        kcore: iterative k-core filter (``None``: none).
        max_history: keep each user's latest interactions only.
        text_template: item text from the item table's fields, e.g. ``"{title}. {brand}"``;
            ``None`` joins every text field.
        catalogue: the items ranked: those in the interactions (default, the published protocol), or ``"all"``
            the item table's items with text, those without interactions too (new items, by their text).
        max_len: longest history the model sees (``None``: the ``TransferDataModule``'s ``max_len``, which the model
            reads too; alone: ``DEFAULT_MAX_LEN``).
        train_stride: training windows over histories longer than ``max_len`` step back this many
            targets at a time, and each trains its last ``train_stride`` targets (``SequenceView``).
            ``None``: ``max_len``, windows that do not overlap. Smaller: more context for every
            target (at least ``max_len - train_stride`` items) and more work; it matters only on
            histories longer than ``max_len``, not on histories capped at ``max_len``.
        train_users: train on the histories of this fraction of the users only (a fixed sample drawn with ``seed``);
            validation and test still cover every user. A data-poor version of the domain, to measure what transfer
            gives a small target. ``None``: every user.
        batch_size: training rows per batch; trained together with other domains, each batch holds
            rows of one domain, as many as that domain's ``batch_size``.
        length_pool: ``1`` (default): plain random training batches, each a sample of the whole
            domain. ``N > 1``: rows are sorted by length inside shuffled pools of ``N`` batches, so
            a batch holds histories of similar length (less padding when ``pack`` is off, but
            batches that are less random, which can cost accuracy).
        pack: pack several short histories into each row of ``max_len`` tokens, with attention
            kept inside each history (the same result as unpacked rows, with a fraction of the
            padding, so faster epochs). Off: each row is one padded history.
        eval_batch_size: users per validation/test/predict batch.
        num_workers: DataLoader worker processes.
        text_encoder: language model that turns item texts into vectors (a ``TextEncoderConfig`` or the same keys as a
            dict); default MiniLM. ``None``: no texts are encoded (ID-only models; the command line drops the encoder
            itself when ``model.mode`` is ``id``).
        cache_dir: processed domains and text vectors are cached here, keyed by content.
        seed: shuffling seed (the order depends only on seed and epoch).
        synthetic: options for ``synthetic_domain`` (``num_users``, ``num_items``, ``mean_length``, ``seed``).
    """

    def __init__(
        self,
        path: str,
        name: str | None = None,
        format: Literal["auto", "recbole", "unisrec", "amazon"] = "auto",
        kcore: int | None = None,
        max_history: int | None = 50,
        text_template: str | None = None,
        catalogue: Literal["interactions", "all"] = "interactions",
        max_len: int | None = None,
        train_stride: int | None = None,
        train_users: float | None = None,
        batch_size: int = 256,
        length_pool: int = 1,
        pack: bool = True,
        eval_batch_size: int = 512,
        num_workers: int = 0,
        text_encoder: TextEncoderConfig | dict[str, Any] | None = DEFAULT_TEXT_ENCODER,
        cache_dir: str = ".cache/rec_transfer",
        seed: int = 0,
        synthetic: dict[str, float] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        # Plain attributes, not self.hparams: under LightningCLI a nested data module's hparams
        # are overwritten by those of the outer TransferDataModule.
        self.path = str(path)
        self.format, self.num_workers, self.seed = format, num_workers, seed
        self.max_len_given = max_len is not None  # else the TransferDataModule's max_len applies
        self._stride = train_stride
        self.max_len = DEFAULT_MAX_LEN if max_len is None else max_len
        self.batch_size, self.eval_batch_size, self.synthetic = batch_size, eval_batch_size, synthetic
        if length_pool < 1:
            raise ValueError(f"length_pool must be >= 1, got {length_pool}")
        if train_users is not None and not 0 < train_users <= 1:
            raise ValueError(f"train_users is a fraction of the users, in (0, 1], got {train_users}")
        self.train_users = train_users
        self.length_pool, self.pack = length_pool, pack
        # The name is in cache folders and file names.
        self.name = safe_name(default_domain_name(self.path) if name is None else name, "domain name")
        self.preprocess_config = PreprocessConfig(
            kcore=kcore, max_history=max_history, text_template=text_template, catalogue=catalogue
        )
        self.text_encoder = TextEncoderConfig(**text_encoder) if isinstance(text_encoder, dict) else text_encoder
        self.cache_dir = Path(cache_dir)
        self.domain: Domain | None = None
        self.item_vectors: torch.Tensor | None = None
        self.item_tokens = None  # TokenStates when the text encoder's top layers train
        self.vector_shape: VectorShape | None = None  # how item_vectors were centred (and whitened)
        self._domain_key: tuple[str, Path] | None = None  # (inputs, folder) of the processed domain

    @property
    def max_len(self) -> int:
        return self._max_len

    @max_len.setter
    def max_len(self, value: int) -> None:
        self.train_stride = window_stride(self._stride, value)  # checked here: a bad config fails at once
        self._max_len = value

    # ------------------------------------------------------------------ data preparation
    @property
    def _domain_dir(self) -> Path:
        extra = {"format": self.format, "name": self.name, "synthetic": self.synthetic}
        inputs = json.dumps([self.path, str(self.cache_dir), extra, asdict(self.preprocess_config)], default=str)
        if self._domain_key is None or self._domain_key[0] != inputs:  # the files are hashed once per process
            key = _source_fingerprint(self.path, {**extra, **asdict(self.preprocess_config)})
            self._domain_key = (inputs, self.cache_dir / "domains" / f"{self.name}-{key}")
        return self._domain_key[1]

    def _read_raw(self):
        if self.path.startswith(SYNTHETIC):
            opts = dict(self.synthetic or {})
            ints = {k: int(v) for k, v in opts.items() if k in ("num_users", "num_items", "seed")}
            return synthetic_domain(self.path[len(SYNTHETIC) :], **{**opts, **ints})
        return read_domain(self.path, format=self.format, name=self.name, cache_dir=self.cache_dir / "raw")

    def prepare_data(self) -> None:
        """Reads and preprocesses the domain once (rank 0); later runs load the cached result, or rebuild it if it
        is unreadable or does not match its checksums."""
        folder = self._domain_dir
        if (folder / "meta.json").exists():
            try:
                Domain.load(folder)
                return
            except ValueError as e:
                log.warning("%s: rebuilding it", e)
                aside = folder.with_name(f".{folder.name}.broken-{os.getpid()}")
                folder.rename(aside)  # one rename, so no reader sees it half-deleted
                shutil.rmtree(aside, ignore_errors=True)
        log.info("%s: reading and preprocessing %s (once; cached in %s)", self.name, self.path, folder)
        preprocess(self._read_raw(), self.preprocess_config).save(folder)

    def setup(self, stage: str | None = None) -> None:
        if self.domain is not None:
            return
        if not (self._domain_dir / "meta.json").exists():
            raise FileNotFoundError(
                f"domain {self.name!r} is not prepared at {self._domain_dir}: call prepare_data() first "
                "(on several nodes, cache_dir must be shared or prepare_data_per_node left on)"
            )
        self.domain = Domain.load(self._domain_dir)
        self._flat = self.domain.flat()
        self._trained = self._training_users()
        texts = self.domain.texts() if self.text_encoder is not None else []
        if len(texts) > 1 and texts.count(texts[0]) == len(texts):
            raise DataFormatError(
                self.path,
                f"every item's text is {texts[0]!r}: a text model cannot tell the items apart; check the item "
                "file's text fields and text_template, or train item IDs instead (model.mode id)",
            )
        if self.text_encoder is not None and self.text_encoder.train_layers:
            tokens = self.text_encoder.item_token_states(texts, cache_dir=self.cache_dir)
            self.item_tokens = tokens.with_padding_item()
        elif self.text_encoder is not None:
            # Texts are already rendered by the domain's template, so the cache key covers it.
            vectors, self.vector_shape = self.text_encoder.shaped_item_vectors(
                texts, cache_dir=self.cache_dir, fit_rows=self.centred_items
            )
            # Row 0 is the padding item.
            self.item_vectors = torch.cat([torch.zeros(1, vectors.shape[1]), vectors.float()])
        self.item_train_counts = self._train_counts()
        d, encoder = self.domain, self.text_encoder
        if encoder is None:
            items = "items as IDs (no text)"
        elif self.item_tokens is not None:
            items = f"item texts through {encoder.model_name}, its top {encoder.train_layers} layers trained"
        else:
            items = f"item texts as {encoder.model_name} vectors ({self.item_vectors.shape[1]}-d)"
        if dist_info()[0] == 0:
            log.info("%s: %d users, %d items, %d interactions; %s", self.name, d.num_users, d.num_items,
                     d.num_interactions, items)  # fmt: skip
            if self.train_users is not None:
                log.info("%s: training on the histories of %d of its %d users (train_users %g), testing on all",
                         self.name, self._trained.sum(), d.num_users, self.train_users)  # fmt: skip

    def _training_users(self) -> np.ndarray:
        """(num_users,) bool: the users whose histories train (``train_users``); every user without it."""
        n = len(self._flat[0]) - 1
        if self.train_users is None:
            return np.ones(n, dtype=bool)
        trained = np.zeros(n, dtype=bool)
        trained[np.random.default_rng(self.seed).permutation(n)[: max(1, round(self.train_users * n))]] = True
        return trained

    def _train_counts(self) -> torch.Tensor:
        """(num_items + 1,) int64: how often each item is a training target (s_2 … s_{n-2} of every trained
        history)."""
        offsets, values = self._flat
        position = np.arange(len(values)) - np.repeat(offsets[:-1], np.diff(offsets))
        length = np.repeat(np.diff(offsets), np.diff(offsets))
        train = (position >= 1) & (position < length - 2) & np.repeat(self._trained, np.diff(offsets))
        return torch.from_numpy(np.bincount(values[train], minlength=self.num_items + 1).astype(np.int64))

    @property
    def item_popularity(self) -> torch.Tensor:
        """(num_items + 1,) float64: each item's share of the training targets (the sampled loss corrects for it)."""
        counts = self.item_train_counts.double()
        return counts / max(counts.sum().item(), 1.0)

    @property
    def item_text(self):
        """What the model's text source needs: (num_items + 1, D) vectors, token states, or None (ID-only)."""
        return self.item_tokens if self.item_tokens is not None else self.item_vectors

    @property
    def centred_items(self) -> int:
        """How many items (the first rows) the text centre and whitening are fitted on: those with kept interactions,
        so that items ranked by their text alone (``catalogue: all``) do not move the others."""
        assert self.domain is not None, "call prepare_data() and setup() first"
        return self.domain.num_items - self.domain.counts.get("items_by_text_only", 0)

    # ------------------------------------------------------------------ what the model needs
    @property
    def domains(self) -> dict[str, DomainDataModule]:
        return {self.name: self}

    @property
    def target_name(self) -> str:
        return self.name

    @property
    def source_names(self) -> list[str]:
        return []

    @property
    def num_items(self) -> int:
        assert self.domain is not None, "call prepare_data() and setup() first"
        return self.domain.num_items

    # ------------------------------------------------------------------ loaders
    def view(self, split: Split) -> SequenceView:
        assert self.domain is not None, "call prepare_data() and setup() first"
        flat = self.domain.flat(short_users=True) if split == "predict" else self._flat
        view = SequenceView(self.name, *flat, split=split, max_len=self.max_len, stride=self.train_stride)
        return view.rows(self._trained[view.users]) if split == "train" and self.train_users is not None else view

    def _epoch(self) -> int:
        return self.trainer.current_epoch if self.trainer is not None else 0

    @property
    def collate_fn(self) -> Callable[[list[tuple]], dict]:
        return partial(collate, pack_to=self.max_len if self.pack else None)

    def train_dataloader(self) -> DataLoader:
        return make_train_loader([self], self._epoch())

    def eval_dataloader(self, split: Split) -> DataLoader:
        """Users ``rank::world`` of the split, in order: an exact partition under DDP."""
        return self.view_loader(split, shard=True)

    def view_loader(self, split: Split, shard: bool = False) -> DataLoader:
        """All users of an evaluation split in order (or this rank's share, with ``shard``)."""
        view = self.view(split).shard(*dist_info()) if shard else self.view(split)
        return DataLoader(
            view,
            batch_size=self.eval_batch_size,
            collate_fn=self.collate_fn,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        return self.eval_dataloader("valid")

    def test_dataloader(self) -> DataLoader:
        return self.eval_dataloader("test")

    def predict_dataloader(self) -> DataLoader:
        return self.eval_dataloader("predict")


# Settings of the one training loader that serves several domains at once: they must agree.
LOADER_SETTINGS = ("seed", "pack", "num_workers")


def same_for_all(values: dict[str, T], what: str, why: str) -> T:
    """The one value that every domain (the keys) has; a mismatch raises a ValueError naming each domain's value."""
    if len(set(values.values())) > 1:
        found = ", ".join(f"{name}: {value!r}" for name, value in values.items())
        raise ValueError(f"{what} differs between domains ({found}): {why}")
    return next(iter(values.values()))


def shared_loader_settings(modules: list[DomainDataModule]) -> dict[str, int | bool]:
    """The loader-wide settings of domains trained together; a mismatch raises, naming the domains and values."""
    why = "one training loader serves the domains trained together (shuffling, packing, workers), so give them one"
    return {key: same_for_all({m.name: getattr(m, key) for m in modules}, key, why) for key in LOADER_SETTINGS}


def make_train_loader(
    modules: list[DomainDataModule], epoch: int, mixing: float = 1.0, rehearsal: float | None = None
) -> DataLoader:
    """Training batches of one or several domains, each batch from one domain, mixed across steps
    (``mixing`` and ``rehearsal``: how the epoch is shared among domains, see ``DomainBatchSampler``).

    Each domain keeps its own ``batch_size`` and ``length_pool``; ``seed``, ``pack`` and ``num_workers`` belong to
    the loader and must agree (see ``shared_loader_settings``).
    """
    shared = shared_loader_settings(modules)
    views = [m.view("train") for m in modules]
    sampler = DomainBatchSampler(
        [v.lengths() for v in views],
        [m.batch_size for m in modules],
        seed=shared["seed"],
        epoch=epoch,
        pool_batches=[m.length_pool for m in modules],
        mixing=mixing,
        rehearsal=rehearsal,
    )
    return DataLoader(
        torch.utils.data.ConcatDataset(views),
        batch_sampler=sampler,
        collate_fn=partial(collate, pack_to=max(m.max_len for m in modules) if shared["pack"] else None),
        num_workers=shared["num_workers"],
    )
