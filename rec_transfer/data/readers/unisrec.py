"""UniSRec processed files: ``<name>.{train,valid,test}.inter`` (history + target rows) and ``<name>.text``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rec_transfer.data.errors import DataFormatError
from rec_transfer.data.raw import RawDomain
from rec_transfer.data.readers.arrow import INTERACTION_FEATURES, build
from rec_transfer.data.readers.lines import FileKey, clean_id, file_key
from rec_transfer.data.readers.tsv import read_header, read_tsv_items, tsv_rows


def _sequences_gen(sources: tuple[FileKey, ...], columns: tuple[tuple[int, int, int, int], ...], stats, **_: Any):
    order: dict[str, None] = {}
    longest: dict[str, list[str]] = {}
    rows: dict[str, dict[str, tuple[list[str], int]]] = {"valid": {}, "test": {}}
    for split, (path, _, _), (u_col, h_col, i_col, n_fields) in zip(
        ("train", "valid", "test"), sources, columns, strict=True
    ):
        for lineno, parts in tsv_rows(path, n_fields):
            user = clean_id(path, parts[u_col], lineno, "user_id", stats)
            seq = [*parts[h_col].split(), clean_id(path, parts[i_col], lineno, "item_id", stats)]
            order.setdefault(user)
            if split in rows:
                if user in rows[split]:
                    raise DataFormatError(
                        path, f"second row for user {user!r} (first on line {rows[split][user][1]})", lineno
                    )
                rows[split][user] = (seq, lineno)
            if len(seq) > len(longest.get(user, ())):
                longest[user] = seq
    if not order:
        raise DataFormatError(sources[0][0], "no data rows after the header", 2)
    for user in order:
        seq = longest[user]
        if user in rows["test"]:
            seq = rows["test"][user][0]
            if user in rows["valid"]:
                valid, lineno = rows["valid"][user]
                # Histories may be cut to their last N items, so the test history can be a suffix of valid's sequence.
                cut = len(valid) - (len(seq) - 1)
                if seq[: len(valid)] != valid and not (cut >= 0 and valid[cut:] == seq[:-1]):
                    raise DataFormatError(
                        sources[1][0],
                        f"user {user!r}: history+target is not a prefix of the test row's sequence",
                        lineno,
                    )
        for pos, item in enumerate(seq):
            yield {"user_id": user, "item_id": item, "timestamp": float(pos)}


def read_unisrec(folder: str | Path, name: str | None = None, cache_dir: str | Path | None = None) -> RawDomain:
    """Reads UniSRec processed files ``<name>.{train,valid,test}.inter`` and ``<name>.text``.

    Args:
        folder: folder holding the files.
        name: file stem; defaults to the folder's name.
        cache_dir: where the Arrow cache is written (the datasets default if None).

    Returns:
        The domain; each user's sequence is its test row's history plus target (its longest row if it has no
        test row), with timestamps 0, 1, 2, ... The only text field is ``text``.

    Raises:
        DataFormatError: a file is missing, empty or malformed, or a valid row contradicts the test row.
    """
    folder = Path(folder)
    name = name or folder.name
    paths = [folder / f"{name}.{split}.inter" for split in ("train", "valid", "test")]
    sources = tuple(file_key(p) for p in paths)
    text_path = folder / f"{name}.text"
    file_key(text_path)
    required = {"user_id": "token", "item_id_list": "token_seq", "item_id": "token"}
    columns = []
    for path in paths:
        names = [n for n, _ in read_header(path, required)]
        columns.append((*(names.index(n) for n in required), len(names)))
    interactions, inter_counts = build(
        _sequences_gen, INTERACTION_FEATURES, cache_dir, sources=sources, columns=tuple(columns)
    )
    items, text_fields, counts = read_tsv_items(
        text_path, ["text"], {"item_id": "token", "text": "token_seq"}, cache_dir
    )
    return RawDomain(name, interactions, items, text_fields, str(folder), {**inter_counts, **counts})
