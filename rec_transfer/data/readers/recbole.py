"""RecBole atomic files: ``<name>.inter`` (interactions) and ``<name>.item`` (item texts)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rec_transfer.data.errors import DataFormatError
from rec_transfer.data.raw import RawDomain
from rec_transfer.data.readers.arrow import INTERACTION_FEATURES, build
from rec_transfer.data.readers.lines import FileKey, clean_id, file_key, parse_time
from rec_transfer.data.readers.tsv import read_header, read_tsv_items, tsv_rows

logger = logging.getLogger(__name__)


def _inter_gen(source: FileKey, columns: tuple[int, int, int | None], n_fields: int, stats, **_: Any):
    path, (u_col, i_col, t_col) = source[0], columns
    positions: dict[str, float] = {}
    rows = 0
    for lineno, parts in tsv_rows(path, n_fields):
        user = clean_id(path, parts[u_col], lineno, "user_id", stats)
        item = clean_id(path, parts[i_col], lineno, "item_id", stats)
        if t_col is None:
            t = float(positions.get(user, 0))
            positions[user] = t + 1
        else:
            t = parse_time(path, parts[t_col], lineno)
        rows += 1
        yield {"user_id": user, "item_id": item, "timestamp": t}
    if not rows:
        raise DataFormatError(path, "no data rows after the header", 2)


def read_recbole(folder: str | Path, name: str | None = None, cache_dir: str | Path | None = None) -> RawDomain:
    """Reads RecBole atomic files ``<folder>/<name>.inter`` and ``<folder>/<name>.item``.

    Args:
        folder: folder holding the atomic files.
        name: file stem; defaults to the folder's name.
        cache_dir: where the Arrow cache is written (the datasets default if None).

    Returns:
        The domain; item text fields are the ``.item`` columns of type token or token_seq, in header order.
        Without a ``timestamp:float`` column, timestamps are each row's position within its user's rows.

    Raises:
        DataFormatError: a file is missing, empty or malformed.
    """
    folder = Path(folder)
    name = name or folder.name
    inter_path, item_path = folder / f"{name}.inter", folder / f"{name}.item"
    inter_key = file_key(inter_path)
    file_key(item_path)
    fields = read_header(inter_path, {"user_id": "token", "item_id": "token"}, {"timestamp": "float"})
    names = [n for n, _ in fields]
    t_col = names.index("timestamp") if "timestamp" in names else None
    if t_col is None:
        logger.info("%s has no timestamp:float column; using each row's position in its user's history", inter_path)
    interactions, inter_counts = build(
        _inter_gen,
        INTERACTION_FEATURES,
        cache_dir,
        source=inter_key,
        columns=(names.index("user_id"), names.index("item_id"), t_col),
        n_fields=len(fields),
    )
    items, text_fields, counts = read_tsv_items(item_path, None, {"item_id": "token"}, cache_dir)
    return RawDomain(name, interactions, items, text_fields, str(folder), {**inter_counts, **counts})
