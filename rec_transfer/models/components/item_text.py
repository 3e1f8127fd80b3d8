"""Where an item's text vector comes from: frozen vectors, or a trainable language-model top with a memory bank."""

from __future__ import annotations

import torch
from torch import nn

from rec_transfer.text.trainable import TextTop, TokenStates, gather_tokens
from rec_transfer.text.whitening import VectorShape


def _place(rows: torch.Tensor, items: torch.Tensor | None, fresh: torch.Tensor, fresh_items: torch.Tensor):
    """``rows`` (one per entry of ``items``, or per item when ``items`` is None) with ``fresh_items``' rows replaced."""
    size = rows.shape[0] if items is None else int(max(int(items.max()), int(fresh_items.max()))) + 1
    slot = torch.full((size,), -1, dtype=torch.long, device=rows.device)
    slot[fresh_items] = torch.arange(len(fresh_items), device=rows.device)
    slot = slot if items is None else slot[items]  # (K,)
    hit = slot >= 0
    return torch.where(hit[:, None], fresh[slot.clamp(min=0)].to(rows.dtype), rows)


def _check_width(name: str, width: int, expected: int) -> None:
    if width != expected:
        raise ValueError(
            f"domain {name!r} has text vectors of width {width}, the other domains {expected}: "
            "every domain of one model must use the same text encoder"
        )


class FrozenItemText(nn.Module):
    """Precomputed text vectors per domain, as non-saved buffers (rebuilt from the text cache, never stale)."""

    trainable = False

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def add_domain(self, name: str, vectors: torch.Tensor, centred_items: int | None = None) -> None:
        """``vectors``: (num_items + 1, D), row 0 the padding item, centred by the data (``centred_items``: unused)."""
        _check_width(name, vectors.shape[1], self.dim)
        self.register_buffer(f"vectors_{name}", vectors, persistent=False)

    def num_rows(self, name: str) -> int:
        return getattr(self, f"vectors_{name}").shape[0]

    @torch.no_grad()
    def reshape(self, name: str, old: VectorShape, new: VectorShape) -> None:
        """Domain ``name``'s vectors, shaped by ``old``, shaped by ``new`` instead; the padding row stays zero."""
        vectors = getattr(self, f"vectors_{name}")
        vectors[1:] = new.apply(old.undo(vectors[1:]))

    def forward(self, domain: str, items: torch.Tensor | None = None, train_items: torch.Tensor | None = None):
        vectors = getattr(self, f"vectors_{domain}")
        return vectors if items is None else vectors[items]


class TrainableItemText(nn.Module):
    """Text vectors from a trainable language-model top (``TextTop``) over cached lower-layer token states.

    Running the top layers over a whole catalogue at every step costs far more than the rest of the step
    on a CPU, so each training step recomputes, with gradients, only the items the caller names
    (``train_items``: the batch's own, capped), for their gradients; every value comes from a bank of vectors
    computed with the weights of the start of the epoch, or, with ``write_back``, each recomputed row is written to
    the bank after its step, so a row's value is that of the weights when its item was last trained (a memory bank,
    as in instance discrimination, Wu et al. 2018). Evaluation refreshes the
    bank first whenever the weights have changed since (an optimizer step, a loaded checkpoint: any in-place
    change of a parameter, which PyTorch counts per tensor), so scores are always those of the current weights.

    Args:
        top: the trainable top layers.
        center: subtract each domain's mean vector (taken at each refresh), as ``TextEncoderConfig.center``.
        whiten: and whiten them (``rec_transfer.text.whitening``, taken at each refresh), as
            ``TextEncoderConfig.whiten``.
        chunk: items per forward pass during a refresh (bounds memory).
        write_back: write each step's recomputed rows to the bank (after the step has read its values); under DDP
            each process writes its own batch's rows, and every evaluation refreshes the banks alike.
    """

    trainable = True
    pretrained_weights = True  # the language model's own: never re-initialised (``mix_with_fresh_init``)

    def __init__(
        self, top: TextTop, center: bool = False, chunk: int = 256, whiten: bool = False, write_back: bool = False
    ):
        super().__init__()
        self.top, self.center, self.whiten, self.chunk = top, center or whiten, whiten, chunk
        self.write_back = write_back
        self.dim = int(top.model.config.hidden_size)
        self.epoch = 0  # training epochs started (new_epoch)
        self.refreshed: dict[str, tuple[int, tuple[int, ...]]] = {}  # domain -> (epoch, weights' version) of its bank
        self.centred_items: dict[str, int] = {}  # domain -> the first items its mean and whitening are fitted on

    def add_domain(self, name: str, tokens: TokenStates, centred_items: int | None = None) -> None:
        """``tokens``: every item's token states with an empty padding item 0 (``TokenStates.with_padding_item``);
        ``centred_items``: the mean (and whitening) are fitted on the first items only (default all): those with
        interactions, so that items ranked by their text alone do not move the others."""
        _check_width(name, tokens.dim, self.dim)
        self.centred_items[name] = len(tokens) - 1 if centred_items is None else centred_items
        self.register_buffer(f"values_{name}", tokens.values, persistent=False)
        self.register_buffer(f"offsets_{name}", tokens.offsets, persistent=False)
        self.register_buffer(f"bank_{name}", torch.zeros(len(tokens), self.dim), persistent=False)
        self.register_buffer(f"mean_{name}", torch.zeros(self.dim), persistent=False)
        if self.whiten:
            self.register_buffer(f"whitening_{name}", torch.eye(self.dim), persistent=False)
        self.refreshed.pop(name, None)

    def num_rows(self, name: str) -> int:
        return getattr(self, f"bank_{name}").shape[0]

    def new_epoch(self) -> None:
        """Marks a training epoch's start: banks filled before it are refreshed before their next use."""
        self.epoch += 1

    def weights_replaced(self) -> None:
        """Marks every bank stale: the weights were replaced in a way PyTorch does not count (through ``.data``,
        as weight averaging swaps them), so each bank is refreshed before its next use."""
        self.refreshed.clear()

    def _weights_version(self) -> tuple[int, ...]:
        # Every in-place change of a tensor (optimizer step, load_state_dict) bumps its version counter.
        return tuple(p._version for p in self.top.parameters())

    def _encode(self, domain: str, items: torch.Tensor) -> torch.Tensor:
        values, offsets = getattr(self, f"values_{domain}"), getattr(self, f"offsets_{domain}")
        return self.top(*gather_tokens(values, offsets, items)).float()  # (K, D)

    @torch.no_grad()
    def refresh(self, domain: str) -> None:
        bank = getattr(self, f"bank_{domain}")
        items = torch.arange(1, len(bank), device=bank.device)
        # Longest first in similar-length chunks: little padding, as when the texts were encoded.
        offsets = getattr(self, f"offsets_{domain}")
        items = items[torch.argsort(offsets[items + 1] - offsets[items], descending=True)]
        for start in range(0, len(items), self.chunk):
            part = items[start : start + self.chunk]
            bank[part] = self._encode(domain, part)
        shape = VectorShape.fit(bank[1 : 1 + self.centred_items[domain]], self.whiten)
        getattr(self, f"mean_{domain}").copy_(shape.mean)
        if self.whiten:
            getattr(self, f"whitening_{domain}").copy_(shape.matrix)
        self.refreshed[domain] = (self.epoch, self._weights_version())

    def forward(self, domain: str, items: torch.Tensor | None = None, train_items: torch.Tensor | None = None):
        """Text vectors of ``items`` (all rows when None); ``train_items`` are recomputed with gradients."""
        training = self.training and torch.is_grad_enabled()
        epoch, version = self.refreshed.get(domain, (None, None))
        # Training reuses the bank through its epoch; anything else needs it exactly as the weights are now.
        if version != self._weights_version() and (not training or epoch != self.epoch):
            self.refresh(domain)
        elif training and epoch != self.epoch:  # still exact at this epoch's start (e.g. refreshed to validate)
            self.refreshed[domain] = (self.epoch, version)
        bank = getattr(self, f"bank_{domain}")
        rows = bank if items is None else bank[items]
        if training and train_items is not None and len(train_items):
            fresh = self._encode(domain, train_items)  # (F, D)
            # The bank's values, the recomputed rows' gradients (straight-through): every score of a step then
            # comes from the same weights. Recomputed values would let the language model tell the batch's own
            # items (its positives) from the bank's rows and score them up: a shortcut that training loss
            # rewards and evaluation, where every row is current, does not. The price: within an epoch the loss does
            # not answer the language model's steps (docs/findings.md, "Every layer, on a GPU"), unless
            # ``write_back`` brings each item's value up to date the next time it is read.
            rows = _place(rows, items, bank[train_items] + (fresh - fresh.detach()), train_items)
            if self.write_back:  # after the read above: this step's values stay those of the bank before it
                bank.index_copy_(0, train_items, fresh.detach().to(bank.dtype))
        if self.center:
            rows = rows - getattr(self, f"mean_{domain}")
            if self.whiten:
                rows = rows @ getattr(self, f"whitening_{domain}")
            if items is None:
                rows = torch.cat([rows.new_zeros(1, self.dim), rows[1:]])  # the padding row stays zero
        return rows
