"""Tab-separated files with a typed ``field:type`` header (RecBole atomic files, UniSRec files): the header check,
the one loop over data rows, and item tables."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets

from rec_transfer.data.errors import DataFormatError
from rec_transfer.data.readers.arrow import build
from rec_transfer.data.readers.items import first_row_per_item, items_features
from rec_transfer.data.readers.lines import FileKey, clean_id, file_key, first_line, iter_lines

logger = logging.getLogger(__name__)

RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")


def read_header(path: Path, required: dict[str, str], optional: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """Parses a ``field:type`` header and checks the required (and, if present, optional) fields' types."""
    optional = optional or {}
    line = first_line(path)
    fields = []
    for entry in line.split("\t"):
        name, sep, kind = entry.partition(":")
        if not sep or not name or kind not in RECBOLE_TYPES:
            raise DataFormatError(path, f"header entry {entry!r} is not field:type with type in {RECBOLE_TYPES}", 1)
        fields.append((name, kind))
    names = [name for name, _ in fields]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        columns = "; ".join(f"{n} in columns {[i + 1 for i, m in enumerate(names) if m == n]}" for n in twice)
        raise DataFormatError(path, f"header names a field more than once ({columns}); each field once", 1)
    found = dict(fields)
    expected = ", ".join(f"{n}:{t}" for n, t in required.items())
    if optional:
        expected += " and optionally " + ", ".join(f"{n}:{t}" for n, t in optional.items())
    for name, kind in {**required, **optional}.items():
        if (name in required and name not in found) or found.get(name, kind) != kind:
            problem = f"no {name} field" if name not in found else f"{name} has type {found[name]}, not {kind}"
            raise DataFormatError(
                path, f"bad header ({problem}): expected {expected}; found {line.replace(chr(9), ', ')}", 1
            )
    return fields


def tsv_rows(path: str, n_fields: int) -> Iterator[tuple[int, list[str]]]:
    """Data rows after the header line: (line number, fields); blank lines are skipped, the field count is checked."""
    for lineno, line in iter_lines(path):
        if lineno == 1 or not line:
            continue
        parts = line.split("\t")
        if len(parts) != n_fields:
            raise DataFormatError(path, f"expected {n_fields} fields, got {len(parts)}", lineno)
        yield lineno, parts


def _items_gen(source: FileKey, item_col: int, text_cols: tuple[tuple[str, int], ...], n_fields: int, stats, **_: Any):
    path = source[0]
    rows = (
        {"item_id": clean_id(path, p[item_col], lineno, "item_id", stats), **{name: p[col] for name, col in text_cols}}
        for lineno, p in tsv_rows(path, n_fields)
    )
    empty = True
    for row in first_row_per_item(rows, stats):
        empty = False
        yield row
    if empty:
        raise DataFormatError(path, "no data rows after the header", 2)


def read_tsv_items(
    path: Path, text_fields: Sequence[str] | None, required: dict[str, str], cache_dir: str | Path | None
) -> tuple[datasets.Dataset, list[str], dict[str, int]]:
    """An item table: the first row of every item id, with ``text_fields`` (default: every token / token_seq field).

    Returns:
        The table, its text fields in order, and the counts of what was dropped.
    """
    fields = read_header(path, required)
    names = [n for n, _ in fields]
    if text_fields is None:
        text_fields = [n for n, kind in fields if n != "item_id" and kind in ("token", "token_seq")]
    text_cols = tuple((f, names.index(f)) for f in text_fields)
    items, counts = build(
        _items_gen,
        items_features(text_fields),
        cache_dir,
        source=file_key(path),
        item_col=names.index("item_id"),
        text_cols=text_cols,
        n_fields=len(fields),
    )
    if counts.get("duplicate_item_rows"):
        logger.warning("%s: kept the first of duplicate item rows, dropped %d", path, counts["duplicate_item_rows"])
    return items, list(text_fields), counts
