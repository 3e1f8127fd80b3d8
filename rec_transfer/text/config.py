"""``TextEncoderConfig``: how item texts become vectors, as one object for configs; plus the anisotropy check."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from rec_transfer.text.cache import LOCK_TIMEOUT_S, cached_item_vectors
from rec_transfer.text.pooling import PoolingMethod
from rec_transfer.text.token_cache import build_text_top, cached_token_states
from rec_transfer.text.trainable import TextTop, TokenStates
from rec_transfer.text.whitening import VectorShape

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextEncoderConfig:
    """How item texts become vectors; field names match :func:`cached_item_vectors` keywords, but for ``center`` and
    ``whiten``.

    Attributes:
        model_name: ``"minilm"``, ``"smollm2"``, a local model path or a hub id.
        pooling: ``"mean"``, ``"cls"``, ``"last"``, or None for the model's default (mean for encoders, last token
            for decoders).
        max_length: Truncation length in tokens.
        normalize: L2-normalise the vectors.
        batch_size: Texts per forward pass (does not change the vectors, so not part of the cache key).
        trust_remote_code: Allow custom model code from the hub.
        center: Subtract the mean vector of the catalogue (one domain's items) after loading; cheap, so not cached.
            On by default: each domain's vectors sit around their own offset, which a model trained on other
            domains has not seen (docs/findings.md). Decoder LLM states share one large direction (a high mean
            cosine between items, far above an encoder model's) that drowns the differences between items until
            the adaptor has learnt it away.
        whiten: Also even out each domain's covariance after centring (``rec_transfer.text.whitening``): every
            domain's vectors then share a shape as well as a centre. Needs ``center``.
        train_layers: Fine-tune the language model's top ``train_layers`` layers inside the recommender (0: the
            model stays frozen and its pooled vectors are cached). The lower layers' token states are cached
            instead (``rec_transfer.text.trainable``).
        lock_timeout: Seconds to wait for another process encoding the same texts before giving up, naming it (a
            hung process holding the lock would otherwise block every run).
    """

    model_name: str = "minilm"
    pooling: PoolingMethod | None = None
    max_length: int = 128
    normalize: bool = False
    batch_size: int = 64
    trust_remote_code: bool = False
    center: bool = True
    whiten: bool = False
    train_layers: int = 0
    lock_timeout: float = LOCK_TIMEOUT_S

    def __post_init__(self) -> None:
        if self.whiten and not self.center:
            raise ValueError("text_encoder.whiten: true needs center: true (whitening centres the vectors first)")

    @property
    def model_key(self) -> tuple:
        """What decides the trainable top layers: the domains of one model must agree on it."""
        return (self.model_name, self.pooling, self.max_length, self.train_layers, self.center, self.whiten)

    def item_token_states(
        self, texts: Sequence[str], cache_dir: str | Path = ".cache/rec_transfer", progress: bool = True
    ) -> TokenStates:
        """Token states below the top ``train_layers`` layers, from the cache or encoded once."""
        return cached_token_states(
            texts,
            self.model_name,
            self.train_layers,
            max_length=self.max_length,
            batch_size=self.batch_size,
            cache_dir=cache_dir,
            trust_remote_code=self.trust_remote_code,
            progress=progress,
            lock_timeout=self.lock_timeout,
        )

    def text_top(self, check_texts: Sequence[str] = (), cache_dir: str | Path = ".cache/rec_transfer") -> TextTop:
        """The trainable top layers, checked against the full model on ``check_texts``."""
        return build_text_top(
            self.model_name,
            self.train_layers,
            self.pooling,
            check_texts,
            self.max_length,
            cache_dir,
            self.trust_remote_code,
        )

    def item_vectors(self, texts: Sequence[str], *args: Any, **kwargs: Any) -> torch.Tensor:
        """The vectors of :meth:`shaped_item_vectors` (the same arguments)."""
        return self.shaped_item_vectors(texts, *args, **kwargs)[0]

    def shaped_item_vectors(
        self,
        texts: Sequence[str],
        template: str = "",
        cache_dir: str | Path = ".cache/rec_transfer",
        progress: bool = True,
        fit_rows: int | None = None,
    ) -> tuple[torch.Tensor, VectorShape | None]:
        """``cached_item_vectors(texts, **asdict(self), template=..., cache_dir=...)``, centred if ``center``, whitened
        if ``whiten``, by the mean (and covariance) of the first ``fit_rows`` vectors (default all): the items with
        interactions, so that items ranked by their text alone (``catalogue: all``) do not move the others. With the
        ``VectorShape`` applied (None: neither centred nor whitened)."""
        options = asdict(self)
        center, whiten = options.pop("center"), options.pop("whiten")
        options.pop("train_layers")
        vectors = cached_item_vectors(texts, **options, template=template, cache_dir=cache_dir, progress=progress)
        if center or whiten:
            shape = VectorShape.fit(vectors[:fit_rows], whiten)
            return shape.apply(vectors), shape
        similarity = mean_cosine(vectors)
        if similarity > ANISOTROPY_WARNING:
            log.warning(
                "Text vectors of %s share one direction (mean cosine %.2f between items); they train slowly "
                "unless centred: set text_encoder.center: true",
                self.model_name,
                similarity,
            )
        return vectors, None


# Mean cosine between items above which `center` is advised: sentence encoders stay well below it, decoder LLMs do not.
ANISOTROPY_WARNING = 0.7


def mean_cosine(vectors: torch.Tensor, sample: int = 2000) -> float:
    """Mean cosine similarity between distinct rows, over the first ``sample`` rows; 0 for fewer than 2."""
    rows = torch.nn.functional.normalize(vectors[:sample].float(), dim=-1)  # (K, D)
    k = len(rows)
    if k < 2:
        return 0.0
    total = rows.sum(dim=0)  # sum over pairs i != j of cos(i, j) = |sum|^2 - K
    return float((total @ total - k) / (k * (k - 1)))
