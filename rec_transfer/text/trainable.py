"""A language model's top layers as a trainable module over cached lower-layer token states.

Fine-tuning the whole language model inside the recommender would run every layer over every item
text at every step. Instead the model is split at layer ``split = num_layers - train_layers``: the
frozen lower layers run once per catalogue and their output token states are cached on disk
(``TokenStates``, keyed by content like the pooled vectors); ``TextTop`` holds the top
``train_layers`` layers (initialised from the same pretrained weights) and pools their output into
one vector per item. Before any training, ``TextTop(lower states)`` equals the frozen model's pooled
vector: ``check_split`` verifies this on real texts, so a model whose layers cannot be split this way
fails at once instead of training on wrong inputs.

The same code serves encoders (BERT-like: the embedding block is bypassed) and decoder LLMs
(Llama-like: ``inputs_embeds`` enters the first kept layer, rotary positions come from
``position_ids``), on CPU or on a GPU under bf16 autocast.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from rec_transfer.text.encode import _forward_params, forward_hidden, iter_token_batches, with_position_ids
from rec_transfer.text.pooling import PoolingMethod, pool

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)


@dataclass
class TokenStates:
    """Every item's token states at one layer, concatenated in item order.

    Attributes:
        values: (T, D) states of all real tokens (no padding), usually float16 to halve memory.
        offsets: (N + 1,) int64; item ``i``'s tokens are ``values[offsets[i]:offsets[i + 1]]``.
    """

    values: torch.Tensor
    offsets: torch.Tensor

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def dim(self) -> int:
        return self.values.shape[1]

    def to(self, device: torch.device | str) -> TokenStates:
        return TokenStates(self.values.to(device), self.offsets.to(device))

    def with_padding_item(self) -> TokenStates:
        """The same states with an empty item 0 in front (the recommender's padding row)."""
        return TokenStates(self.values, torch.cat([self.offsets[:1], self.offsets]))


def gather_tokens(
    values: torch.Tensor, offsets: torch.Tensor, items: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded token states of ``items``: (B, L, D) states and (B, L) int64 attention mask."""
    starts, lengths = offsets[items], offsets[items + 1] - offsets[items]  # (B,)
    width = max(1, int(lengths.max())) if len(items) else 1
    steps = torch.arange(width, device=values.device)  # (L,)
    mask = steps[None, :] < lengths[:, None]  # (B, L)
    index = (starts[:, None] + steps[None, :]).clamp(max=max(len(values) - 1, 0))  # (B, L)
    states = values[index] * mask[..., None].to(values.dtype)  # (B, L, D)
    return states, mask.long()


class _PassThrough(nn.Module):
    """Stands in for an encoder's embedding block: the cached states already went through it."""

    def forward(self, *args, inputs_embeds: torch.Tensor | None = None, **kwargs) -> torch.Tensor:
        return inputs_embeds


def _layer_list(model: nn.Module, count: int) -> tuple[nn.Module, str, nn.ModuleList]:
    """The ModuleList of the model's transformer layers: (its parent, attribute name, the list)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            parent_name, _, attr = name.rpartition(".")
            return model.get_submodule(parent_name) if parent_name else model, attr, module
    raise ValueError(f"{type(model).__name__}: found no list of its {count} transformer layers to split")


def num_layers(model: PreTrainedModel) -> int:
    count = getattr(model.config, "num_hidden_layers", None)
    if count is None:
        raise ValueError(f"{type(model).__name__}: its config has no num_hidden_layers; it cannot be split")
    return int(count)


class TextTop(nn.Module):
    """The top ``train_layers`` layers of a language model: token states at layer ``split`` → pooled vector.

    Dropout inside the copied layers is switched off (the module stays in eval mode): a recommender that
    reuses earlier outputs of this module (a memory bank of item vectors) needs it deterministic.

    Args:
        model: the full pretrained base model (``AutoModel``); it is copied, not changed.
        train_layers: how many top layers to keep (1 to all).
        pooling: ``mean``, ``cls`` or ``last`` (as the frozen vectors of the same model).
    """

    def __init__(self, model: PreTrainedModel, train_layers: int, pooling: PoolingMethod):
        super().__init__()
        total = num_layers(model)
        if not 1 <= train_layers <= total:
            raise ValueError(f"train_layers must be between 1 and {total} for {type(model).__name__}")
        self.split, self.pooling = total - train_layers, pooling
        top = copy.deepcopy(model)
        parent, attr, layers = _layer_list(top, total)
        setattr(parent, attr, nn.ModuleList(list(layers)[self.split :]))
        top.config.num_hidden_layers = train_layers
        if hasattr(top, "embeddings"):  # encoders add positions and norm inside: done by the cached lower pass
            top.embeddings = _PassThrough()
        else:  # decoders look tokens up only without inputs_embeds: drop the (large, unused) table
            top.set_input_embeddings(nn.Identity())
        if getattr(top, "pooler", None) is not None:  # BERT's classification pooler: unused here
            top.pooler = None
        top.requires_grad_(True)
        self.model = top
        self._takes_positions = "position_ids" in _forward_params(type(top))
        super().train(False)

    def train(self, mode: bool = True) -> TextTop:
        return self  # always eval mode: see the class docstring

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, L, D) token states, (B, L) mask (right-padded) → (B, D) float32 pooled vectors."""
        states = states.to(next(self.model.parameters()).dtype)
        extra = {"position_ids": (mask.cumsum(dim=1) - 1).clamp_min(0)} if self._takes_positions else {}
        hidden = forward_hidden(self.model, {"inputs_embeds": states, "attention_mask": mask, **extra})
        return pool(hidden, mask, self.pooling)


def iter_token_states(
    texts: Sequence[str],
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    split: int,
    max_length: int = 128,
    batch_size: int = 64,
) -> Iterator[tuple[torch.Tensor, list[torch.Tensor]]]:
    """Token states at layer ``split`` of batches of texts: (item indices, one (len_i, D) tensor per text)."""
    device = next(model.parameters()).device
    with torch.inference_mode():
        for batch in iter_token_batches(texts, tokenizer, max_length, batch_size):
            inputs = {k: v.to(device) for k, v in with_position_ids(model, batch.inputs).items()}
            extra = {"use_cache": False} if "use_cache" in _forward_params(type(model)) else {}
            hidden = model(**inputs, output_hidden_states=True, **extra).hidden_states[split]  # (B, L, D)
            mask = inputs["attention_mask"].bool()
            yield batch.indices, [h[m].to("cpu", torch.float16) for h, m in zip(hidden, mask, strict=True)]


def token_states(
    texts: Sequence[str],
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    split: int,
    max_length: int = 128,
    batch_size: int = 64,
    progress: bool = True,
) -> TokenStates:
    """Every text's token states at layer ``split`` (float16), in text order."""
    from tqdm.auto import tqdm

    rows: list[torch.Tensor | None] = [None] * len(texts)
    with tqdm(total=len(texts), unit="item", desc="Encoding token states", disable=not progress) as bar:
        for indices, states in iter_token_states(texts, model, tokenizer, split, max_length, batch_size):
            for i, s in zip(indices.tolist(), states, strict=True):
                rows[i] = s
            bar.update(len(states))
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    return TokenStates(torch.cat(rows) if rows else torch.empty(0, _width(model), dtype=torch.float16), offsets)


def _width(model: PreTrainedModel) -> int:
    return int(model.config.hidden_size)


def check_split(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    top: TextTop,
    texts: Sequence[str],
    max_length: int = 128,
) -> None:
    """Refuses a split that does not reproduce the frozen model's pooled vectors on ``texts`` (a few suffice)."""
    texts = list(texts)[:8]
    if not texts:
        return
    states = token_states(texts, model, tokenizer, top.split, max_length, progress=False)
    with torch.no_grad():
        device = next(model.parameters()).device
        split = top(*gather_tokens(states.values.to(device), states.offsets.to(device), torch.arange(len(texts))))
        expected = []
        for batch in iter_token_batches(texts, tokenizer, max_length, len(texts), sort_by_length=False):
            inputs = {k: v.to(device) for k, v in with_position_ids(model, batch.inputs).items()}
            expected.append(pool(forward_hidden(model, inputs), inputs["attention_mask"], top.pooling))
        expected = torch.cat(expected)
    error = float((split.float() - expected.float()).abs().max() / expected.float().abs().max().clamp_min(1e-6))
    if error > 5e-3:  # float16 token states cost about 3e-4 (MiniLM, SmolLM2)
        raise NotImplementedError(
            f"{type(model).__name__} cannot be split at layer {top.split}: its top layers over the cached states "
            f"give vectors {error:.1%} off the full model's; set text_encoder.train_layers: 0 for this model"
        )
