"""Full ranking over a catalogue in item chunks: no (users × items) score matrix is ever held whole."""

from __future__ import annotations

import torch

from rec_transfer.models.components.history import in_history

# Items whose score is within this fraction of |query| · |target key| of the target's count as ties. Rounding makes
# a dot product computed in one matrix product differ from the same dot product computed in another by about
# 1e-7 of that scale; two items with the same text score exactly alike. Both must rank above the target.
TIE_TOLERANCE = 1e-5


def _blocks(keys: torch.Tensor, chunk: int):
    """(start, block) over item rows 1..N of ``keys`` (row 0 is padding), as float32."""
    for start in range(1, keys.shape[0], chunk):
        yield start, keys[start : start + chunk].float()


def _scores(queries, start, block, histories, offset) -> torch.Tensor:
    """(B, C) scores of items ``start..start+C-1``, history items offset (``HistoryBias``) when ``histories`` given."""
    scores = queries @ block.T
    if histories is None:
        return scores
    return scores + offset * in_history(histories, torch.arange(start, start + len(block), device=queries.device))


def chunked_ranks(
    queries: torch.Tensor,
    keys: torch.Tensor,
    targets: torch.Tensor,
    chunk: int = 65536,
    histories: torch.Tensor | None = None,
    offset: float | torch.Tensor = 0.0,
) -> torch.Tensor:
    """1-based rank of each target among items 1..N, ties counted against it (pessimistic).

    Args:
        queries: (B, D) float32 query vectors.
        keys: (N + 1, D) item vectors, row 0 the padding item (never ranked); any float dtype.
        targets: (B,) item ids in 1..N.
        chunk: items scored at a time: memory is B × chunk floats.
        histories: (B, H) each query's history items (0 = none), whose scores get ``offset`` (``HistoryBias``).
    """
    target_keys = keys[targets].float()  # (B, D)
    target_scores = (queries * target_keys).sum(dim=1)  # (B,)
    if histories is not None:
        target_scores = target_scores + offset * (histories == targets[:, None]).any(dim=1)
    tolerance = TIE_TOLERANCE * queries.norm(dim=1) * target_keys.norm(dim=1)  # (B,)
    threshold = (target_scores - tolerance)[:, None]  # (B, 1)
    rank = torch.zeros(len(queries), dtype=torch.long, device=queries.device)
    for start, block in _blocks(keys, chunk):
        rank += (_scores(queries, start, block, histories, offset) >= threshold).sum(dim=1)
    return rank.clamp(min=1)


def chunked_top_k(
    queries: torch.Tensor,
    keys: torch.Tensor,
    k: int,
    chunk: int = 65536,
    exclude: torch.Tensor | None = None,
    histories: torch.Tensor | None = None,
    offset: float | torch.Tensor = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` best items 1..N of each query: (B, k) scores and item ids, best first.

    Args:
        queries: (B, D) float32.
        keys: (N + 1, D), row 0 padding.
        k: items per query (at most N; fewer when exclusions leave fewer).
        chunk: items scored at a time.
        exclude: (B, H) item ids never to recommend to each query (0 = nothing), e.g. the user's history.
        histories: (B, H) each query's history items, whose scores get ``offset`` (``HistoryBias``).
    """
    k = min(k, keys.shape[0] - 1)
    best_scores = queries.new_full((len(queries), 0), float("-inf"))
    best_items = torch.zeros(len(queries), 0, dtype=torch.long, device=queries.device)
    for start, block in _blocks(keys, chunk):
        scores = _scores(queries, start, block, histories, offset)  # (B, C)
        if exclude is not None:
            local = exclude - start  # (B, H) position inside this block
            hit = (local >= 0) & (local < block.shape[0]) & (exclude > 0)
            rows = torch.arange(len(queries), device=queries.device)[:, None].expand_as(local)
            scores[rows[hit], local[hit]] = float("-inf")
        items = torch.arange(start, start + block.shape[0], device=queries.device).expand(len(queries), -1)
        scores, picked = torch.cat([best_scores, scores], dim=1).topk(min(k, best_scores.shape[1] + scores.shape[1]))
        best_items = torch.cat([best_items, items], dim=1).gather(1, picked)
        best_scores = scores
    return best_scores, best_items
