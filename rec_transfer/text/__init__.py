"""Item texts to vectors through a pretrained language model, with a validated disk cache.

Main entry point (what other modules should call)::

    from rec_transfer.text import TextEncoderConfig, cached_item_vectors

    vectors = cached_item_vectors(texts, model_name="minilm", template="", cache_dir=".cache/rec_transfer")  # (N, D)
    # or, carrying the settings as one object (its fields are cached_item_vectors' keywords, plus `center`, `whiten`):
    config = TextEncoderConfig(model_name="smollm2", max_length=64)
    vectors = config.item_vectors(texts, template="Product: {text}", cache_dir=".cache/rec_transfer")

Lower level:

- ``load_text_model(name, trust_remote_code, cache_dir) -> (model, tokenizer, identity)``
- ``default_pooling(model_or_config) -> "mean" | "last"``; ``model_identity(name) -> str`` (no weights loaded)
- ``encode_texts(texts, model, tokenizer, pooling, max_length, batch_size, normalize, sort_by_length, device,
  progress) -> (N, D)`` and ``encode_texts_sharded(...)`` (same, split over ``torch.distributed`` ranks)
- ``pool(hidden, attention_mask, method) -> (B, D)``
- ``text_cache_key(texts, *, identity, pooling, max_length, normalize, template) -> str``

A catalogue larger than ``shard_size`` (65,536) items is encoded in shards, each cached as it finishes, so a run
killed while encoding resumes from its last finished shard (``rec_transfer.text.shards``).
"""

from rec_transfer.text.cache import cached_item_vectors
from rec_transfer.text.config import TextEncoderConfig
from rec_transfer.text.encode import TokenBatch, encode_texts, encode_texts_sharded, iter_token_batches
from rec_transfer.text.models import (
    ResolvedModel,
    default_pooling,
    load_text_model,
    model_identity,
    resolve_default_pooling,
    resolve_model,
)
from rec_transfer.text.pooling import POOLING_METHODS, PoolingMethod, pool
from rec_transfer.text.store import cache_path, text_cache_key

__all__ = [
    "POOLING_METHODS",
    "PoolingMethod",
    "ResolvedModel",
    "TextEncoderConfig",
    "TokenBatch",
    "cache_path",
    "cached_item_vectors",
    "default_pooling",
    "encode_texts",
    "encode_texts_sharded",
    "iter_token_batches",
    "load_text_model",
    "model_identity",
    "pool",
    "resolve_default_pooling",
    "resolve_model",
    "text_cache_key",
]
