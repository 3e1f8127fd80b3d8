"""From a raw domain to training data: filtering, chronological order, id maps, leave-one-out split.

A processed ``Domain`` keeps every user's history as one Arrow list column (memory-mapped when
loaded from the cache), so a 10M-interaction domain never lives in Python lists.
"""

from __future__ import annotations

import hashlib
import json
import logging
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rec_transfer.data.errors import DataFormatError
from rec_transfer.data.raw import RawDomain
from rec_transfer.utils.files import atomic_dir, file_digest
from rec_transfer.utils.quiet import no_dataset_bars

log = logging.getLogger(__name__)

PAD = 0  # dense item index 0 is padding; real items are 1..num_items
MIN_USER_INTERACTIONS = 3  # leave-one-out needs one training, one validation and one test item


@dataclass(frozen=True)
class PreprocessConfig:
    """How a raw domain becomes training data.

    Attributes:
        kcore: iterative k-core on users and items (``None``: no filtering).
        max_history: keep each user's latest ``max_history + 1`` interactions: a history of at most
            ``max_history`` items before the test target, as in UniSRec's processing (``None``: all).
        text_template: item text, e.g. ``"{title}. {categories}. {brand}"`` with the item table's
            field names; ``None`` joins every text field in header order with a space.
        drop_duplicates: drop exact repeats of (user, item, timestamp), counted in the log.
        catalogue: the items ranked: ``"interactions"``, those in the kept interactions (the published protocol);
            ``"all"``, also every other item of the item table that has text (new items, recommended by their
            text alone), numbered after the others.
    """

    kcore: int | None = None
    max_history: int | None = 50
    text_template: str | None = None
    drop_duplicates: bool = True
    catalogue: Literal["interactions", "all"] = "interactions"

    def __post_init__(self) -> None:
        if self.catalogue not in ("interactions", "all"):
            raise ValueError(f"catalogue is 'interactions' or 'all', got {self.catalogue!r}")


@dataclass
class Domain:
    """One processed domain.

    Attributes:
        name: the domain's name.
        sequences: Arrow table with ``user_id`` (string) and ``items`` (list of int32 dense item
            indices, chronological, 1-based), one row per user.
        items: Arrow table with ``item_id`` and ``text``; row ``i`` is dense index ``i + 1``.
        counts: what preprocessing kept and dropped.
        short_users: the users with fewer than ``MIN_USER_INTERACTIONS`` interactions, too few to train or evaluate
            on, in the columns of ``sequences``: their histories keep the items of the catalogue (possibly none).
            They are recommended for (``predict``), never trained or tested on. ``None``: none.
    """

    name: str
    sequences: datasets.Dataset
    items: datasets.Dataset
    counts: dict[str, int]
    short_users: datasets.Dataset | None = None

    @property
    def num_users(self) -> int:
        return len(self.sequences)

    @property
    def num_items(self) -> int:
        return len(self.items)

    @property
    def num_interactions(self) -> int:
        return int(self.counts["interactions"])

    def flat(self, short_users: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Histories as CSR arrays: ``offsets`` (U + 1,) int64 and ``values`` (I,) int32 (zero-copy); with
        ``short_users``, those of ``short_users`` follow (users ``U …``, see ``user_ids``), as a copy."""
        offsets, values = _csr(self.sequences)
        if not short_users or self.short_users is None:
            return offsets, values
        short_offsets, short_values = _csr(self.short_users)
        return np.r_[offsets, offsets[-1] + short_offsets[1:]], np.r_[values, short_values]

    def user_ids(self, users: list[int]) -> list[str]:
        """The ids of users by index: ``0 … U - 1`` those of ``sequences``, then those of ``short_users``."""
        tables = [self.sequences] if self.short_users is None else [self.sequences, self.short_users]
        ids = pa.chunked_array([chunk for t in tables for chunk in t.data.column("user_id").chunks])
        return ids.take(pa.array(users, pa.int64())).to_pylist()

    def texts(self) -> list[str]:
        return self.items.data.column("text").to_pylist()

    def item_id(self, index: int) -> str:
        return self.items[index - 1]["item_id"]

    def catalogue_digest(self) -> str:
        """What an ID table trained on this domain depends on: its item ids, in index order (sha256, 16 hex)."""
        ids = self.items.data.column("item_id").to_pylist()
        return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]

    def save(self, folder: str | Path) -> None:
        """Writes the domain atomically (temp folder, then rename); ``meta.json`` marks it complete and holds the
        sha256 of every other file, which ``load`` checks."""
        with atomic_dir(folder, marker="meta.json") as tmp, no_dataset_bars():
            self.sequences.save_to_disk(str(tmp / "sequences"))
            self.items.save_to_disk(str(tmp / "items"))
            if self.short_users is not None:
                self.short_users.save_to_disk(str(tmp / "short_users"))
            files = {f.relative_to(tmp).as_posix(): file_digest(f) for f in sorted(tmp.rglob("*")) if f.is_file()}
            meta = {"name": self.name, "counts": self.counts, "files": files}
            (tmp / "meta.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, folder: str | Path) -> Domain:
        """Reads a domain that ``save`` wrote.

        Raises:
            ValueError: the folder is not what ``save`` wrote: ``meta.json`` unreadable, a file missing or changed
                (each file is checked against its sha256, so the tables cannot hold anything else than was written).
        """
        folder = Path(folder)
        try:
            meta = json.loads((folder / "meta.json").read_text())
            changed = [n for n, digest in meta["files"].items() if file_digest(folder / n) != digest]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"processed domain {folder} is unreadable ({type(e).__name__}: {e})") from None
        if changed:
            raise ValueError(f"processed domain {folder} does not match its checksums: {', '.join(changed)}")
        short = folder / "short_users"  # none when every user had enough interactions
        return cls(
            name=meta["name"],
            sequences=datasets.load_from_disk(str(folder / "sequences")),
            items=datasets.load_from_disk(str(folder / "items")),
            counts=meta["counts"],
            short_users=datasets.load_from_disk(str(short)) if short.is_dir() else None,
        )


def _csr(sequences: datasets.Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The ``items`` lists of ``sequences`` as CSR arrays (see ``Domain.flat``)."""
    col = sequences.data.column("items").combine_chunks()
    offsets = col.offsets.to_numpy().astype(np.int64)
    values = col.values.to_numpy(zero_copy_only=False)
    return offsets - offsets[0], values[offsets[0] : offsets[-1]]


def _histories(
    user_names: pa.Array, user_code: np.ndarray, values: np.ndarray, keep: np.ndarray | None = None
) -> pa.Table:
    """One row per user of ``user_code`` (sorted): its id and its ``values`` in order, only those where ``keep`` is
    true if given (a user may be left with none)."""
    keep = np.ones(len(values), dtype=bool) if keep is None else keep
    starts = np.flatnonzero(np.r_[True, user_code[1:] != user_code[:-1]]) if len(user_code) else np.zeros(0, int)
    kept = np.add.reduceat(keep.astype(np.int64), starts) if len(starts) else np.zeros(0, np.int64)
    offsets = np.r_[0, np.cumsum(kept)].astype(np.int32)
    histories = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values[keep], pa.int32()))
    return pa.table({"user_id": user_names.take(pa.array(user_code[starts])), "items": histories})


def render_texts(raw: RawDomain, template: str | None) -> pa.Array:
    """The item text of every row of ``raw.items``, by template."""
    table = raw.items.data.table
    if template is None:
        cols = [pc.utf8_trim_whitespace(pc.fill_null(table.column(f), "")) for f in raw.text_fields]
        if not cols:
            raise DataFormatError(raw.source, "the item table has no text fields")
        joined = cols[0] if len(cols) == 1 else pc.binary_join_element_wise(*cols, " ")
        return pc.utf8_trim_whitespace(pc.replace_substring_regex(joined, r"\s+", " "))
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    missing = sorted(fields - set(raw.text_fields))
    if missing:
        raise DataFormatError(
            raw.source, f"text template {template!r} names fields {missing}; the item table has {raw.text_fields}"
        )
    rows = table.select(sorted(fields)).to_pylist() if fields else [{}] * len(table)
    return pa.array([" ".join(template.format_map(r).split()) for r in rows], pa.string())


def _kcore(users: np.ndarray, items: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the interactions that survive iterative k-core."""
    keep = np.ones(len(users), dtype=bool)
    while True:
        u_count = np.bincount(users[keep], minlength=users.max(initial=0) + 1)
        i_count = np.bincount(items[keep], minlength=items.max(initial=0) + 1)
        new_keep = keep & (u_count[users] >= k) & (i_count[items] >= k)
        if new_keep.sum() == keep.sum():
            return new_keep
        keep = new_keep


def preprocess(raw: RawDomain, config: PreprocessConfig = PreprocessConfig()) -> Domain:
    """Filters, orders and indexes a raw domain; see ``PreprocessConfig``.

    Raises:
        DataFormatError: items without text, a text template naming unknown fields, or a domain
            left empty by filtering.
    """
    inter = raw.interactions.data.table
    counts: dict[str, int] = {"raw_interactions": inter.num_rows, **raw.counts}
    if inter.num_rows == 0:
        raise DataFormatError(raw.source, "no interactions")

    # Item codes follow the item table's order so dense indices are stable across runs.
    item_table_ids = raw.items.data.table.column("item_id").combine_chunks()
    item_index = pc.index_in(inter.column("item_id"), value_set=item_table_ids)
    missing = pc.is_null(item_index).to_numpy(zero_copy_only=False)
    if missing.any():
        row = int(np.flatnonzero(missing)[0])
        bad = inter.column("item_id")[row].as_py()
        raise DataFormatError(
            raw.source,
            f"{int(missing.sum())} interactions name items without a text row, first item {bad!r} "
            f"(data row {row + 1} of the interactions, header not counted); every item in the interactions needs a "
            "row in the item table",
        )
    item_code = item_index.to_numpy(zero_copy_only=False).astype(np.int64)
    user_enc = pc.dictionary_encode(inter.column("user_id")).combine_chunks()
    user_code = user_enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    user_names = user_enc.dictionary
    ts = inter.column("timestamp").to_numpy().astype(np.float64)
    row_order = np.arange(len(ts))

    # Chronological per user; ties keep file order (lexsort is stable, last key is primary).
    order = np.lexsort((row_order, ts, user_code))
    user_code, item_code, ts = user_code[order], item_code[order], ts[order]

    if config.drop_duplicates:
        same = np.zeros(len(ts), dtype=bool)
        same[1:] = (user_code[1:] == user_code[:-1]) & (item_code[1:] == item_code[:-1]) & (ts[1:] == ts[:-1])
        counts["dropped_duplicates"] = int(same.sum())
        if same.any():
            log.info("%s: dropped %d exact duplicate interactions", raw.name, same.sum())
        user_code, item_code, ts = user_code[~same], item_code[~same], ts[~same]
    # Kept (a repeat purchase is an event), but said: a file without timestamps cannot tell one from a duplicate row.
    repeats = len(user_code) - len(np.unique(user_code * len(item_table_ids) + item_code))
    counts["repeated_items"] = int(repeats)
    if repeats:
        log.info("%s: %d interactions repeat an item already in the user's history (kept)", raw.name, repeats)

    if config.kcore:
        keep = _kcore(user_code, item_code, config.kcore)
        counts["dropped_by_kcore"] = int((~keep).sum())
        log.info("%s: %d-core dropped %d interactions", raw.name, config.kcore, (~keep).sum())
        user_code, item_code, ts = user_code[keep], item_code[keep], ts[keep]

    if config.max_history:
        # Position counted from each user's end: keep the latest max_history.
        starts = np.flatnonzero(np.r_[True, user_code[1:] != user_code[:-1]])
        lengths = np.diff(np.r_[starts, len(user_code)])
        from_end = np.repeat(starts + lengths, lengths) - np.arange(len(user_code))
        keep = from_end <= config.max_history + 1
        counts["dropped_by_history_cap"] = int((~keep).sum())
        if (~keep).any():
            log.info("%s: history cap %d dropped %d older interactions", raw.name, config.max_history, (~keep).sum())
        user_code, item_code = user_code[keep], item_code[keep]

    u_count = np.bincount(user_code, minlength=len(user_names))
    short = u_count[user_code] < MIN_USER_INTERACTIONS
    counts["dropped_short_users"] = int(((u_count > 0) & (u_count < MIN_USER_INTERACTIONS)).sum())
    if short.any():
        log.info(
            "%s: %d users with fewer than %d interactions (%d interactions) left out of training and evaluation; "
            "predict recommends for them too",
            raw.name,
            counts["dropped_short_users"],
            MIN_USER_INTERACTIONS,
            short.sum(),
        )
    short_code, short_items = user_code[short], item_code[short]
    user_code, item_code = user_code[~short], item_code[~short]
    if len(user_code) == 0:
        raise DataFormatError(
            raw.source, f"domain {raw.name!r} is empty after filtering (kcore={config.kcore}, counts={counts})"
        )

    used_items = np.unique(item_code)  # sorted: keeps the item table's order
    all_texts = render_texts(raw, config.text_template)
    unused = np.setdiff1d(np.arange(len(item_table_ids)), used_items)
    counts["items_without_interactions"] = len(unused)
    if config.catalogue == "all":
        unused = unused[pc.utf8_length(all_texts.take(pa.array(unused))).to_numpy(zero_copy_only=False) > 0]
        counts["items_by_text_only"] = len(unused)  # the last rows of the item table
        if len(unused):
            log.info("%s: %d items without kept interactions are ranked too, by their text", raw.name, len(unused))
        catalogue = np.concatenate([used_items, unused])  # the items with interactions keep their indices
    else:
        if len(unused):
            log.info("%s: %d items of the item table have no kept interactions (left out; catalogue: all ranks them)",
                     raw.name, len(unused))  # fmt: skip
        catalogue = used_items
    dense = np.zeros(len(item_table_ids), dtype=np.int32)
    dense[catalogue] = np.arange(1, len(catalogue) + 1, dtype=np.int32)
    values = dense[item_code]
    sequences = _histories(user_names, user_code, values)
    # A short user's items outside the catalogue (bought only by other short users) are left out of its history.
    short_values = dense[short_items]
    short_users = _histories(user_names, short_code, short_values, keep=short_values > 0)

    texts = all_texts.take(pa.array(catalogue))
    empty = pc.equal(pc.utf8_length(texts), 0).to_numpy(zero_copy_only=False)
    counts["items_with_empty_text"] = int(empty.sum())
    if empty.any():
        log.warning("%s: %d items have empty text", raw.name, empty.sum())
    items = pa.table({"item_id": item_table_ids.take(pa.array(catalogue)), "text": texts})
    counts.update(users=len(sequences), items=len(catalogue), interactions=len(values))
    log.debug("%s: %d users, %d items, %d interactions", raw.name, len(sequences), len(catalogue), len(values))
    return Domain(
        name=raw.name,
        sequences=datasets.Dataset(sequences),
        items=datasets.Dataset(items),
        counts=counts,
        short_users=datasets.Dataset(short_users) if short_users.num_rows else None,
    )
