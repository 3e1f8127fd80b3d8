"""Item tables as every reader writes them: ``item_id`` plus string text fields, one row per item."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import datasets


def items_features(text_fields: Sequence[str]) -> datasets.Features:
    """Schema of an item table: ``item_id`` and one string column per text field."""
    return datasets.Features(
        {"item_id": datasets.Value("string"), **{f: datasets.Value("string") for f in text_fields}}
    )


def first_row_per_item(rows: Iterable[dict[str, str]], stats: dict[str, int]) -> Iterator[dict[str, str]]:
    """The first row of every ``item_id``; the number of later rows dropped goes to ``stats["duplicate_item_rows"]``."""
    seen: set[str] = set()
    duplicates = 0
    for row in rows:
        if row["item_id"] in seen:
            duplicates += 1
            continue
        seen.add(row["item_id"])
        yield row
    stats["duplicate_item_rows"] = duplicates
