"""Stream item texts through a language model into a (N, D) float32 matrix, optionally sharded over ranks.

Memory stays bounded for any catalogue size: texts are ordered by character length (a cheap proxy for token length),
then tokenised ``chunk_size`` at a time, re-sorted by exact token count inside the chunk, cut into batches and padded
per batch. Only one chunk of tokens exists at a time; results land in a preallocated output in the original order.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm.auto import tqdm

from rec_transfer.text.pooling import PoolingMethod, pool
from rec_transfer.utils.distributed import collective_device, dist_info

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_CHUNK_SIZE = 4096
_GATHER_ROWS = 65536  # rows per all_gather round, so gathering 1M vectors never needs world * N * D extra memory


@dataclass
class TokenBatch:
    """One padded batch of tokenised texts.

    Attributes:
        indices: Positions of the batch's texts in the input sequence, shape (B,).
        inputs: Model inputs (``input_ids``, ``attention_mask``, maybe ``token_type_ids``), each (B, L).
    """

    indices: torch.Tensor
    inputs: dict[str, torch.Tensor]


class _StridedView(Sequence[str]):
    """Items ``start::step`` of a sequence, without copying it."""

    def __init__(self, items: Sequence[str], start: int, step: int) -> None:
        self._items = items
        self._range = range(start, len(items), step)

    def __len__(self) -> int:
        return len(self._range)

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self._items[j] for j in self._range[i]]
        return self._items[self._range[i]]


def _pad(rows: list[list[int]], value: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token lists into a (B, L) tensor and its mask, with one flat copy instead of one per row."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))  # (B,)
    width = int(lengths.max()) if len(rows) else 0
    positions = np.arange(width)[None, :]  # (1, L)
    mask = positions >= (width - lengths)[:, None] if left else positions < lengths[:, None]  # (B, L)
    out = np.full((len(rows), width), value, dtype=np.int64)
    out[mask] = np.fromiter(itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
    return torch.from_numpy(out), torch.from_numpy(mask.astype(np.int64))


def iter_token_batches(
    texts: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    max_length: int = 128,
    batch_size: int = 64,
    sort_by_length: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> Iterator[TokenBatch]:
    """Tokenise texts lazily into padded batches.

    Args:
        texts: Any sequence of strings (only indexed and measured, never copied whole).
        tokenizer: A Hugging Face tokenizer with a pad token; its ``padding_side`` is respected.
        max_length: Truncation length in tokens.
        batch_size: Texts per batch.
        sort_by_length: Longest-first order (by characters globally, by tokens within each chunk) so that batches
            hold similar lengths and little padding; otherwise batches follow the input order.
        chunk_size: Texts tokenised at a time.

    Yields:
        Batches covering every text exactly once.
    """
    n = len(texts)
    if sort_by_length:
        char_lengths = torch.tensor([len(t) for t in texts], dtype=torch.long)
        order = torch.argsort(char_lengths, descending=True, stable=True).tolist()
    else:
        order = range(n)
    extra_names = [name for name in tokenizer.model_input_names if name not in ("input_ids", "attention_mask")]
    left = tokenizer.padding_side == "left"
    pad_id = tokenizer.pad_token_id
    for start in range(0, n, chunk_size):
        chunk = order[start : start + chunk_size]
        encoded = tokenizer([texts[i] for i in chunk], truncation=True, max_length=max_length, padding=False)
        extra_names = [name for name in extra_names if name in encoded]
        ids = encoded["input_ids"]
        for r, row in enumerate(ids):
            if not row:
                # A text with no tokens at all (empty, no special tokens added) would leave a row with nothing to
                # attend to; encode it as the pad token instead.
                ids[r] = [pad_id]
                for name in extra_names:
                    encoded[name][r] = [0]
        rows = range(len(chunk))
        if sort_by_length:
            rows = sorted(rows, key=lambda r: len(ids[r]), reverse=True)
        for b in range(0, len(rows), batch_size):
            batch_rows = rows[b : b + batch_size]
            inputs: dict[str, torch.Tensor] = {}
            inputs["input_ids"], inputs["attention_mask"] = _pad([ids[r] for r in batch_rows], pad_id, left)
            for name in extra_names:
                inputs[name], _ = _pad([encoded[name][r] for r in batch_rows], 0, left)
            yield TokenBatch(torch.tensor([chunk[r] for r in batch_rows], dtype=torch.long), inputs)


def vector_width(model: PreTrainedModel) -> int:
    """Width of the vectors the model's last hidden states pool into."""
    size = getattr(model.config, "hidden_size", None)
    return int(size) if size is not None else int(model.get_input_embeddings().embedding_dim)


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type != "cuda":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


@functools.cache
def _forward_params(model_type: type) -> frozenset[str]:
    return frozenset(inspect.signature(model_type.forward).parameters)


def with_position_ids(model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add position ids derived from the attention mask when a batch is left-padded (as ``generate`` does).

    Models otherwise number pad tokens too, which shifts every real token's position and changes the vectors. Call it
    on CPU tensors: inspecting a GPU mask would stall the queue on every batch.
    """
    mask = inputs["attention_mask"]  # (B, L)
    if "position_ids" in inputs or "position_ids" not in _forward_params(type(model)) or bool(mask[:, 0].all()):
        return inputs
    return {**inputs, "position_ids": (mask.cumsum(dim=1) - 1).clamp_min(0)}  # (B, L)


def forward_hidden(model: PreTrainedModel, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Run the model on one batch (see :func:`with_position_ids`) and return its last hidden states, (B, L, D)."""
    extra = {"use_cache": False} if "use_cache" in _forward_params(type(model)) else {}  # a KV cache is wasted work
    outputs = model(**inputs, **extra)
    hidden = getattr(outputs, "last_hidden_state", None)
    return hidden if hidden is not None else outputs[0]


def encode_texts(
    texts: Sequence[str],
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pooling: PoolingMethod = "mean",
    max_length: int = 128,
    batch_size: int = 64,
    normalize: bool = False,
    sort_by_length: bool = True,
    device: str | torch.device | None = None,
    progress: bool = True,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    bar: tqdm | None = None,
) -> torch.Tensor:
    """Encode texts into one vector each, returned in the input order.

    Args:
        texts: Item texts.
        model: A transformers base model (``AutoModel``), e.g. from :func:`load_text_model`.
        tokenizer: Its tokenizer, with a pad token.
        pooling: ``"mean"``, ``"cls"`` or ``"last"`` (see :func:`pool`).
        max_length: Truncation length in tokens.
        batch_size: Texts per forward pass.
        normalize: L2-normalise each vector.
        sort_by_length: Batch texts of similar length together (faster; results equal up to float noise).
        device: Where to run; the model is moved there. Default: where the model already is.
        progress: Show a tqdm bar (items/s).
        chunk_size: Texts tokenised at a time (bounds memory).
        bar: An open progress bar to advance instead (a caller's bar over a larger job); ``progress`` is then ignored.

    Returns:
        float32 CPU tensor of shape (N, D).
    """
    if device is not None:
        model.to(device)
    device = next(model.parameters()).device
    model.eval()
    out = torch.empty(len(texts), vector_width(model), dtype=torch.float32)
    pending_idx: list[torch.Tensor] = []
    pending_vec: list[torch.Tensor] = []

    def flush() -> None:
        # One device->host copy per chunk instead of per batch keeps the GPU queue from draining.
        if pending_idx:
            out.index_copy_(0, torch.cat(pending_idx), torch.cat(pending_vec).to("cpu", torch.float32))
            pending_idx.clear()
            pending_vec.clear()

    batches = iter_token_batches(texts, tokenizer, max_length, batch_size, sort_by_length, chunk_size)
    own_bar = None
    if bar is None:
        bar = own_bar = tqdm(total=len(texts), unit="item", desc="Encoding texts", disable=not progress)
    with torch.inference_mode(), _autocast(device), own_bar if own_bar is not None else contextlib.nullcontext():
        pending_rows = 0
        for batch in batches:
            inputs = {k: v.to(device, non_blocking=True) for k, v in with_position_ids(model, batch.inputs).items()}
            hidden = forward_hidden(model, inputs)  # (B, L, D)
            vectors = pool(hidden, inputs["attention_mask"], pooling)  # (B, D)
            if normalize:
                vectors = F.normalize(vectors, dim=-1)
            pending_idx.append(batch.indices)
            pending_vec.append(vectors)
            pending_rows += len(batch.indices)
            if pending_rows >= chunk_size:
                flush()
                pending_rows = 0
            bar.update(len(batch.indices))
        flush()
    return out


def encode_texts_sharded(
    texts: Sequence[str],
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    progress: bool = True,
    **kwargs,
) -> torch.Tensor:
    """Encode texts split across ``torch.distributed`` ranks; every rank returns the full (N, D) result.

    Rank ``r`` encodes items ``r::world_size`` (strided, so every rank sees a similar length mix), then the shards
    are all-gathered. Without an initialised process group this is plain :func:`encode_texts`. All ranks must call it
    with the same texts.

    Args:
        texts: Item texts (identical on every rank).
        model: The model, already on this rank's device.
        tokenizer: Its tokenizer.
        progress: Show a progress bar on rank 0 only.
        **kwargs: Passed to :func:`encode_texts`.

    Returns:
        float32 CPU tensor of shape (N, D), in the input order, identical on every rank.
    """
    rank, world = dist_info()
    if world == 1:
        return encode_texts(texts, model, tokenizer, progress=progress, **kwargs)
    local = encode_texts(_StridedView(texts, rank, world), model, tokenizer, progress=progress and rank == 0, **kwargs)
    n, dim = len(texts), local.shape[1]
    per_rank = math.ceil(n / world)
    counts = [len(range(r, n, world)) for r in range(world)]
    comm_device = collective_device()
    out = torch.empty(n, dim, dtype=torch.float32)
    for start in range(0, per_rank, _GATHER_ROWS):
        rows = min(_GATHER_ROWS, per_rank - start)
        part = torch.zeros(rows, dim, dtype=torch.float32, device=comm_device)  # (R, D), padded
        mine = local[start : start + rows]
        part[: len(mine)] = mine.to(comm_device)
        gathered = [torch.empty_like(part) for _ in range(world)]
        dist.all_gather(gathered, part)
        for r, shard in enumerate(gathered):
            valid = max(0, min(rows, counts[r] - start))
            out[r::world][start : start + valid] = shard[:valid].cpu()
    return out
