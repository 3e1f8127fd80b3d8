"""Next-item losses over a catalogue: exact softmax in item chunks, sampled softmax with log-q correction, and a
training batch's loss with either (``next_item_loss``)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from rec_transfer.models.components.history import in_history, token_histories


class _ChunkedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of ``states @ items.T`` (plus ``offset`` where an item is in the row's ``histories``)
    against ``targets``, never holding more than T × chunk logits.

    Written by hand: PyTorch has no memory-bounded softmax over a large output set on CPU (the fused
    kernels of other libraries need Triton/GPUs). Forward keeps a running log-sum-exp over item chunks;
    backward recomputes each chunk's logits once.
    """

    @staticmethod
    def _logits(states, items, start, chunk, histories, offset) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = states @ items[start : start + chunk].T  # (T, C)
        if histories is None:
            return logits, None
        seen = in_history(histories, torch.arange(start, start + logits.shape[1], device=states.device))
        return logits + offset * seen, seen

    @staticmethod
    def forward(ctx, states, items, targets, chunk, histories, offset) -> torch.Tensor:
        rows = states.shape[0]
        peak = torch.full((rows,), float("-inf"), dtype=states.dtype, device=states.device)  # (T,)
        total = torch.zeros(rows, dtype=states.dtype, device=states.device)  # (T,)
        for start in range(0, items.shape[0], chunk):
            logits, _ = _ChunkedCrossEntropy._logits(states, items, start, chunk, histories, offset)
            new_peak = torch.maximum(peak, logits.max(dim=1).values)
            total = total * torch.exp(peak - new_peak) + torch.exp(logits - new_peak[:, None]).sum(dim=1)
            peak = new_peak
        lse = peak + torch.log(total)  # (T,)
        target_logits = (states * items[targets]).sum(dim=1)  # (T,)
        target_seen = None
        if histories is not None:
            target_seen = (histories == targets[:, None]).any(dim=1).to(states.dtype)  # (T,)
            target_logits = target_logits + offset * target_seen
        ctx.save_for_backward(states, items, targets, lse, histories, offset, target_seen)
        ctx.chunk = chunk
        return (lse - target_logits).mean()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        states, items, targets, lse, histories, offset, target_seen = ctx.saved_tensors
        scale = grad / states.shape[0]
        grad_states = torch.zeros_like(states)
        grad_items = torch.zeros_like(items)
        grad_offset = None if histories is None else -scale * target_seen.sum()
        for start in range(0, items.shape[0], ctx.chunk):
            part = items[start : start + ctx.chunk]  # (C, D)
            logits, seen = _ChunkedCrossEntropy._logits(states, items, start, ctx.chunk, histories, offset)
            probs = torch.exp(logits - lse[:, None]) * scale  # (T, C) softmax, scaled
            grad_states += probs @ part
            grad_items[start : start + ctx.chunk] += probs.T @ states
            if seen is not None:
                grad_offset = grad_offset + (probs * seen).sum()
        grad_states -= scale * items[targets]
        grad_items.index_add_(0, targets, -scale * states)
        return grad_states, grad_items, None, None, None, grad_offset


def chunked_cross_entropy(
    states: torch.Tensor,
    items: torch.Tensor,
    targets: torch.Tensor,
    chunk: int = 8192,
    histories: torch.Tensor | None = None,
    offset: torch.Tensor | None = None,
) -> torch.Tensor:
    """Exact ``F.cross_entropy(states @ items.T, targets)`` with memory bounded by ``chunk`` items at a time.

    Args:
        states: (T, D) query vectors (already normalised / scaled as the logits need).
        items: (N, D) every candidate item.
        targets: (T,) indices into ``items``.
        chunk: items per block.
        histories: (T, H) indices into ``items`` each row has already seen (any other value: none), whose logits
            get ``offset`` (a scalar tensor, may require grad; see ``HistoryBias``).
    """
    if histories is None:
        return _ChunkedCrossEntropy.apply(states, items, targets, chunk, None, None)
    offset = offset.to(states.dtype).reshape(())
    return _ChunkedCrossEntropy.apply(states, items, targets, chunk, histories, offset)


def sample_candidates(
    targets: torch.Tensor, num_items: int, num_negatives: int, popularity: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch's own targets plus shared uniform negatives, and how likely each was to be drawn.

    Args:
        targets: (T,) item ids in ``1..num_items``.
        num_items: the catalogue size N.
        num_negatives: uniform draws from ``1..N`` (with replacement) added to the targets.
        popularity: (N + 1,) each item's share of the domain's training targets (sums to 1).

    Returns:
        ``candidates`` (C,) sorted unique ids, ``labels`` (T,) each target's position among them, and
        ``log_q`` (C,): the log-probability that each candidate is in such a set: a target of one of the T
        draws by popularity, or one of the uniform draws. Subtracting it from the logits (log-q correction)
        makes the sampled softmax an estimate of the full one; without it popular items, which are in
        almost every set as someone's target, would be pushed down.
    """
    negatives = torch.randint(1, num_items + 1, (num_negatives,), device=targets.device)
    candidates = torch.unique(torch.cat([targets, negatives]))  # (C,) sorted
    labels = torch.searchsorted(candidates, targets)
    p = popularity.to(targets.device, torch.float64)[candidates]
    miss = len(targets) * torch.log1p(-p.clamp(max=1 - 1e-12)) + num_negatives * math.log1p(-1 / max(num_items, 2))
    log_q = torch.log(-torch.expm1(miss)).float()  # log(1 - P(never drawn))
    return candidates, labels, log_q


def sampled_softmax(
    states: torch.Tensor,
    candidates: torch.Tensor,
    labels: torch.Tensor,
    log_q: torch.Tensor,
    offsets: torch.Tensor | None = None,
):
    """Cross-entropy over candidate items with log-q correction: (T, D) states, (C, D) candidate vectors;
    ``offsets`` (T, C): added to the logits (the history offsets of ``HistoryBias``), or ``None``."""
    logits = states @ candidates.T - log_q
    return F.cross_entropy(logits if offsets is None else logits + offsets, labels)


def next_item_loss(
    encoder: nn.Module,
    item_tower: nn.Module,
    scorer: nn.Module,
    batch: dict,
    kind: str,
    item_chunk: int,
    popularity: torch.Tensor,
    num_negatives: int,
    train_items: torch.Tensor | None = None,
) -> torch.Tensor:
    """A training batch's next-item cross-entropy at every real position at once: ``full`` softmax over the domain's
    items, the same in blocks of ``item_chunk`` items (``chunked``), or ``sampled`` (``sample_candidates`` with
    ``num_negatives`` and ``popularity``; ``scorer.sampled_loss``), where ``item_tower`` runs over the items the batch
    needs only, its inputs and the candidates, so the cost follows the batch, not the catalogue. ``train_items``: the
    items run through the language model's trainable layers (``TrainableItemText``)."""
    domain, segments, positions = batch["domain"], batch.get("segments"), batch.get("positions")
    histories = None  # (R, L, L): the items each position has seen, for the scorer's history bias
    if scorer.history_bias is not None:
        histories = token_histories(batch["input"], segments)
    if kind != "sampled":
        table = item_tower(domain, None, train_items)  # (N + 1, D)
        states = encoder(table[batch["input"]], positions, segments)  # (R, L, D)
        return scorer.loss(states, batch["target"], table, item_chunk if kind == "chunked" else None, histories)
    mask = batch["target"] > 0  # (R, L)
    candidates, labels, log_q = sample_candidates(
        batch["target"][mask], item_tower.num_items[domain], num_negatives, popularity
    )
    needed = torch.unique(torch.cat([batch["input"].flatten(), candidates]))  # (M,) sorted
    vectors = item_tower(domain, needed, train_items)  # (M, D)
    inputs = vectors[torch.searchsorted(needed, batch["input"])]  # (R, L, D)
    states = encoder(inputs, positions, segments)  # (R, L, D)
    candidate_vectors = vectors[torch.searchsorted(needed, candidates)]
    seen = None if histories is None else histories[mask]
    return scorer.sampled_loss(states[mask], candidate_vectors, labels, log_q, candidates, seen)
