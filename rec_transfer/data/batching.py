"""Turning CSR histories into padded batches: leave-one-out views, collate, and a domain-aware sampler.

Sequences are right-padded with 0. With a causal mask no real position ever attends to padding,
so no key-padding mask is needed and no attention row is ever fully masked.

``collate(rows, pack_to=L)`` packs several short histories into each row of length ``L``: most
histories are far shorter than ``max_len``, and padding every one of them to the batch's longest
makes the transformer spend most of its work on padding. A packed batch carries each token's
position inside its own history (``positions``) and which history it belongs to (``segments``,
0 for padding), so the encoder masks attention to the token's own history: the result is the same
as without packing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from rec_transfer.utils.distributed import dist_info

Split = Literal["train", "valid", "test", "predict"]


def window_stride(stride: int | None, max_len: int) -> int:
    """The training-window stride ``SequenceView`` uses: ``max_len`` for ``None``; else 1 to ``max_len``."""
    if stride is not None and not 1 <= stride <= max_len:
        raise ValueError(f"train_stride must be between 1 and max_len ({max_len}), got {stride}")
    return max_len if stride is None else stride


class SequenceView(Dataset):
    """One domain's leave-one-out split over CSR histories.

    For a history ``s_1 … s_n``: test = (``s_1 … s_{n-1}`` → ``s_n``); valid = (``s_1 … s_{n-2}`` →
    ``s_{n-1}``); train = every position of ``s_1 … s_{n-2}`` predicting the next item; predict =
    the whole history → the unknown next item (its rows also carry the whole history, uncut, so that
    recommendations can leave it out). Histories are cut to the latest ``max_len`` items.

    Training histories longer than ``max_len`` are cut into windows of ``max_len`` inputs, the latest
    first, each ending ``stride`` targets before the next; a window trains only its last ``stride``
    targets (the earliest window: all of its own), so every target is trained exactly once. With
    ``stride = max_len`` (the default) the windows do not overlap, and a target early in a window
    sees few items before it; a smaller stride gives every target past a history's first ``max_len``
    at least ``max_len - stride`` items of context, as it has at test time, for about
    ``max_len / stride`` times the work on long histories (``1``: RecBole's every-prefix training).
    """

    def __init__(
        self,
        domain: str,
        offsets: np.ndarray,
        values: np.ndarray,
        split: Split,
        max_len: int,
        stride: int | None = None,
    ):
        self.domain, self.offsets, self.values, self.split, self.max_len = domain, offsets, values, split, max_len
        self.stride = window_stride(stride, max_len)
        self.users = np.arange(len(offsets) - 1)
        self.ends = None
        if split == "train":
            targets = np.maximum(np.diff(offsets) - 3, 0)  # s_2 … s_{n-2}
            # 1 window for up to max_len targets, then one more for every stride targets (or part) beyond.
            windows = np.where(targets > 0, 1 + -(-np.maximum(targets - max_len, 0) // self.stride), 0)
            self.users = np.repeat(self.users, windows)
            first = np.repeat(np.cumsum(windows) - windows, windows)
            k = np.arange(len(self.users)) - first  # window number from the end
            self.ends = offsets[self.users + 1] - 2 - k * self.stride  # exclusive end of each window

    def __len__(self) -> int:
        return len(self.users)

    def lengths(self) -> np.ndarray:
        """Input length of every row (before padding)."""
        if self.split == "train":
            starts = self.offsets[self.users]
            return np.minimum(self.ends - starts - 1, self.max_len)
        return np.minimum(np.diff(self.offsets)[self.users], self.max_len)

    def __getitem__(self, index: int) -> tuple[str, int, np.ndarray, np.ndarray | int]:
        u = int(self.users[index])
        start, end = int(self.offsets[u]), int(self.offsets[u + 1])
        if self.split == "train":
            stop = int(self.ends[index])
            seq = self.values[max(start, stop - self.max_len - 1) : stop]
            targets = seq[1:]
            if stop - self.max_len - 1 > start:  # not the earliest window: its first targets belong to earlier ones
                targets = targets.copy()
                targets[: -self.stride] = 0  # 0 = padding: no loss there
            return self.domain, u, seq[:-1], targets
        if self.split == "predict":  # the whole history too: recommendations may leave it out
            return self.domain, u, self.values[max(start, end - self.max_len) : end], 0, self.values[start:end]
        stop = end - 1 if self.split == "valid" else end
        return self.domain, u, self.values[max(start, stop - 1 - self.max_len) : stop - 1], int(self.values[stop - 1])

    def shard(self, rank: int, world: int) -> SequenceView:
        """Users ``rank::world``: an exact partition (no padding), for evaluation under DDP."""
        assert self.split != "train", "training batches are sharded by DomainBatchSampler"
        return self.rows(np.arange(len(self.users)) % world == rank)

    def rows(self, keep: np.ndarray) -> SequenceView:
        """The same view with only the rows where the boolean ``keep`` (one per row) is true."""
        view = SequenceView(self.domain, self.offsets, self.values, self.split, self.max_len, self.stride)
        view.users = self.users[keep]
        view.ends = None if self.ends is None else self.ends[keep]
        return view


def _pad(rows: Sequence[np.ndarray], length: int) -> torch.Tensor:
    out = np.zeros((len(rows), length), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return torch.from_numpy(out)


def pack_rows(lengths: np.ndarray, capacity: int) -> tuple[np.ndarray, np.ndarray]:
    """First-fit decreasing bin packing: (row, offset) of each sequence in rows of ``capacity`` tokens.

    Written by hand: a dozen lines of numpy, where a bin-packing dependency would be a heavy one.
    """
    lengths = np.asarray(lengths)
    if len(lengths) and lengths.max() > capacity:
        raise ValueError(f"a sequence of length {lengths.max()} does not fit in rows of {capacity}")
    row, offset = np.empty(len(lengths), np.int64), np.empty(len(lengths), np.int64)
    free = np.empty(len(lengths), np.int64)  # free tokens of each opened row
    opened = 0
    for i in np.argsort(-lengths, kind="stable"):
        fits = np.flatnonzero(free[:opened] >= lengths[i])
        r = fits[0] if len(fits) else opened
        if r == opened:
            free[r], opened = capacity, opened + 1
        row[i], offset[i] = r, capacity - free[r]
        free[r] -= lengths[i]
    return row, offset


def collate(rows: list[tuple], pack_to: int | None = None) -> dict:
    """Pads ``SequenceView`` items of one domain into a batch; train targets are (B, L), others (B,).

    With ``pack_to`` the histories are packed into rows of at most that many tokens (see the module
    docstring); the batch then also holds ``positions`` and ``segments`` (R, L) and, for evaluation,
    ``last``: the flat index (into R × L) of each user's last input token.
    """
    domain = rows[0][0]
    assert all(r[0] == domain for r in rows), "a batch must hold one domain"
    batch = {"domain": domain, "user": torch.tensor([r[1] for r in rows])}
    train = isinstance(rows[0][3], np.ndarray)
    if not train:
        batch["target"] = torch.tensor([r[3] for r in rows])  # (B,)
    if len(rows[0]) > 4:  # prediction rows carry each user's whole history
        batch["history"] = _pad([r[4] for r in rows], max(1, max(len(r[4]) for r in rows)))  # (B, H)
    if pack_to is None:
        length = max(1, max(len(r[2]) for r in rows))
        batch["input"] = _pad([r[2] for r in rows], length)
        if train:
            batch["target"] = _pad([r[3] for r in rows], length)  # (B, L), 0 where padded
        return batch
    # An empty history still takes one (padding-item) token, as unpacked: its state is read there.
    lengths = np.array([max(1, len(r[2])) for r in rows])
    row, offset = pack_rows(lengths, pack_to)
    shape = (int(row.max()) + 1, int((offset + lengths).max()))
    inputs, positions, segments = (np.zeros(shape, np.int64) for _ in range(3))
    targets = np.zeros(shape, np.int64) if train else None
    for i, r in enumerate(rows):
        span = slice(offset[i], offset[i] + len(r[2]))
        inputs[row[i], span] = r[2]
        positions[row[i], offset[i] : offset[i] + lengths[i]] = np.arange(lengths[i])
        segments[row[i], offset[i] : offset[i] + lengths[i]] = i + 1
        if train:
            targets[row[i], span] = r[3]
    batch.update(input=torch.from_numpy(inputs), positions=torch.from_numpy(positions))
    batch["segments"] = torch.from_numpy(segments)
    if train:
        batch["target"] = torch.from_numpy(targets)  # (R, L), 0 where padded
    else:
        batch["last"] = torch.from_numpy(row * shape[1] + offset + lengths - 1)  # (B,)
    return batch


def _per_domain(value: int | Sequence[int], domains: int, name: str) -> list[int]:
    values = [value] * domains if isinstance(value, int) else [int(v) for v in value]
    if len(values) != domains or min(values, default=1) < 1:
        raise ValueError(f"{name} must be one positive number or one per domain ({domains}), got {value}")
    return values


def _batch_sizes(rows: int, batch_size: int, pool_batches: int) -> list[int]:
    """Sizes of one domain's batches, in order: full pools of ``pool_batches`` batches, then the last pool's."""
    pool = batch_size * pool_batches
    sizes = [batch_size] * ((rows // pool) * pool_batches)
    tail = rows % pool
    return sizes + [min(batch_size, tail - i) for i in range(0, tail, batch_size)]


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """``total`` whole batches shared in proportion to ``weights``, by largest remainders (they sum to ``total``)."""
    shares = total * weights / weights.sum()
    counts = np.floor(shares).astype(int)
    counts[np.argsort(counts - shares)[: total - counts.sum()]] += 1
    return counts


class DomainBatchSampler(Sampler[list[int]]):
    """Shuffled batches, each from one domain, over the concatenation of several domains.

    Written by hand because no library sampler keeps each batch inside one domain while mixing
    domains across steps. ``pool_batches=1`` gives plain random batches; with more, rows of similar
    length are batched together (sorted inside shuffled pools of ``pool_batches`` batches), which
    cuts padding when rows are not packed (see ``collate``). The order depends only on ``(seed, epoch)``:
    a resumed run sees the same batches as an uninterrupted one.

    Under DDP a batch is the batch of one optimizer step, whatever the number of processes: each of the ``W``
    processes takes every ``W``-th row of it, so an epoch has as many steps and sees every row once, as in one
    process (no batch repeated to even out the ranks). A domain's last batch, if it has fewer rows than ``W``,
    joins the batch before it, so that no process is left without rows.

    Args:
        lengths: every row's length, one array per domain.
        batch_size: rows per batch (per optimizer step): one for all domains, or one per domain.
        seed: shuffling seed.
        epoch: the epoch whose order to draw.
        shuffle: shuffle rows and batches (off: domains and rows in order).
        pool_batches: length-sorting pool, in batches: one for all domains, or one per domain.
        mixing: how the epoch's batches are shared among domains: domain ``d`` with ``n_d`` batches of its own
            gets a share ∝ ``n_d ** mixing`` of the same total. ``1``: every batch once (large domains dominate);
            ``0``: the same number of batches from every domain (a small one repeats, a large one is subsampled,
            differently each epoch); in between, temperature sampling as in multilingual training.
        rehearsal: ``None``: every domain shares the epoch as ``mixing`` says. A number ``r``: the first domain keeps
            each of its batches once, and the others add ``r`` batches for each of its batches between them, shared
            among them as ``mixing`` says (the sources rehearsed while training on the target).
    """

    def __init__(
        self,
        lengths: Sequence[np.ndarray],
        batch_size: int | Sequence[int],
        seed: int = 0,
        epoch: int = 0,
        shuffle: bool = True,
        pool_batches: int | Sequence[int] = 1,
        mixing: float = 1.0,
        rehearsal: float | None = None,
    ):
        if not 0 <= mixing <= 1:
            raise ValueError(f"mixing must be between 0 and 1, got {mixing}")
        if rehearsal is not None and (rehearsal < 0 or len(lengths) < 2):
            raise ValueError(f"rehearsal needs a number >= 0 and at least two domains, got {rehearsal}")
        self.rehearsal = rehearsal
        self.lengths, self.seed, self.epoch, self.mixing = [np.asarray(x) for x in lengths], seed, epoch, mixing
        self.batch_sizes = _per_domain(batch_size, len(self.lengths), "batch_size")
        self.pool_batches = _per_domain(pool_batches, len(self.lengths), "pool_batches")
        self.shuffle = shuffle

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _domain_batches(self, rng: np.random.Generator, lengths: np.ndarray, batch_size: int, pool: int, start: int):
        """One pass over a domain's rows in batches (shuffled, length-sorted inside pools of ``pool`` batches); a
        last batch with fewer rows than processes joins the one before it."""
        idx = rng.permutation(len(lengths)) if self.shuffle else np.arange(len(lengths))
        batches = []
        for p in range(0, len(lengths), batch_size * pool):
            chunk = idx[p : p + batch_size * pool]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            batches += [start + chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        if len(batches) > 1 and len(batches[-1]) < dist_info()[1]:
            batches[-2:] = [np.concatenate(batches[-2:])]
        return batches

    def _domains(self) -> list[tuple[np.ndarray, int, int]]:
        return list(zip(self.lengths, self.batch_sizes, self.pool_batches, strict=True))

    def _counts(self) -> list[int]:
        """Batches each domain contributes to an epoch (see ``mixing``); their sum is the natural epoch's."""
        world = dist_info()[1]
        natural = []
        for lengths, batch_size, pool in self._domains():
            sizes = _batch_sizes(len(lengths), batch_size, pool)
            natural.append(len(sizes) - (len(sizes) > 1 and sizes[-1] < world))
        natural = np.array(natural)
        if self.rehearsal is not None:  # the first domain whole, the others r of a batch for each of its batches
            first, others = natural[0], natural[1:]
            return [
                int(first),
                *_apportion(round(first * self.rehearsal), others.astype(np.float64) ** self.mixing).tolist(),
            ]
        if self.mixing == 1 or len(natural) == 1:
            return natural.tolist()
        return np.maximum(_apportion(natural.sum(), natural.astype(np.float64) ** self.mixing), 1).tolist()

    def _batches(self) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, self.epoch])
        rank, world = dist_info()
        batches, start = [], 0
        for d, ((lengths, batch_size, pool), count) in enumerate(zip(self._domains(), self._counts(), strict=True)):
            if 0 < len(lengths) < world:
                raise ValueError(
                    f"domain {d} has {len(lengths)} training rows: fewer than the {world} processes to share them"
                )
            own: list[np.ndarray] = []
            while len(own) < count:  # more than one pass when mixing repeats a small domain
                own += self._domain_batches(rng, lengths, batch_size, pool, start)
            batches += own[:count]
            start += len(lengths)
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return [b[rank::world] for b in batches] if world > 1 else batches

    def __iter__(self) -> Iterator[list[int]]:
        for b in self._batches():
            yield b.tolist()

    def __len__(self) -> int:
        return sum(self._counts())
