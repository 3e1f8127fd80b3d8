"""Raw Amazon Reviews JSON lines: a reviews file and a ``meta_*`` file, 2018 or 2023 field names, plain or gzip."""

from __future__ import annotations

import html
import json
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import datasets

from rec_transfer.data.errors import DataFormatError
from rec_transfer.data.raw import RawDomain
from rec_transfer.data.readers.arrow import INTERACTION_FEATURES, build
from rec_transfer.data.readers.items import first_row_per_item, items_features
from rec_transfer.data.readers.lines import FileKey, clean_id, file_key, iter_lines, parse_time

logger = logging.getLogger(__name__)

JSON_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
_TAG_RE = re.compile(r"<[^>]*>")
# Amazon field names: (user key, item key, time key, time divisor) for reviews; (item key, text fields) for metadata.
_REVIEW_KEYS = {
    "2018": ("reviewerID", "asin", "unixReviewTime", 1.0),
    "2023": ("user_id", "parent_asin", "timestamp", 1000.0),
}
_META_KEYS = {
    "2018": ("asin", ("title", "category", "brand", "description")),
    "2023": ("parent_asin", ("title", "categories", "store", "features", "description")),
}


def _json_records(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(path, f"invalid JSON: {e.msg} at column {e.colno}", lineno) from None
        if not isinstance(record, dict):
            raise DataFormatError(path, f"expected a JSON object, got {type(record).__name__}", lineno)
        yield lineno, record


def _detect_version(path: Path, keys_by_version: dict[str, str]) -> str:
    lineno, record = next(_json_records(str(path)), (1, None))
    if record is None:
        raise DataFormatError(path, "file is empty; expected one JSON object per line", 1)
    keys = sorted(record)
    for version, key in keys_by_version.items():
        if key in keys:
            return version
    expected = " or ".join(f"{k!r} ({v})" for v, k in keys_by_version.items())
    raise DataFormatError(path, f"expected a record with key {expected}; found keys {keys}", lineno)


def _clean_text(value: Any, sep: str) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        text = sep.join(s for s in (_clean_text(v, sep) for v in value) if s)
    else:
        text = str(value)
    if "<" in text:
        text = _TAG_RE.sub(" ", text)
    if "&" in text:
        text = html.unescape(text)
    return " ".join(text.split())


def _meta_rows(path: str, item_key: str, text_fields: tuple[str, ...], stats) -> Iterator[dict[str, str]]:
    for lineno, record in _json_records(path):
        item = record.get(item_key)
        if item is None:
            raise DataFormatError(
                path, f"record has no {item_key!r} key (item id); found keys {sorted(record)}", lineno
            )
        yield {
            "item_id": clean_id(path, str(item), lineno, item_key, stats),
            **{f: _clean_text(record.get(f), " " if f == "description" else ", ") for f in text_fields},
        }


def _meta_gen(source: FileKey, item_key: str, text_fields: tuple[str, ...], stats, **_: Any):
    yield from first_row_per_item(_meta_rows(source[0], item_key, text_fields, stats), stats)


def _reviews_gen(source: FileKey, item_files: tuple[str, ...], version: str, stats, **_: Any):
    path = source[0]
    user_key, item_key, time_key, divisor = _REVIEW_KEYS[version]
    known = {i for f in item_files for i in datasets.Dataset.from_file(f).data.column("item_id").to_pylist()}
    dropped = kept = 0
    for lineno, record in _json_records(path):
        user, item = record.get(user_key), record.get(item_key)
        if user is None or item is None:
            missing = user_key if user is None else item_key
            raise DataFormatError(
                path, f"record has no {missing!r} key; expected {user_key!r} and {item_key!r}", lineno
            )
        user, item = (
            clean_id(path, str(user), lineno, user_key, stats),
            clean_id(path, str(item), lineno, item_key, stats),
        )
        if item not in known:
            dropped += 1
            continue
        kept += 1
        yield {
            "user_id": user,
            "item_id": item,
            "timestamp": parse_time(path, record.get(time_key), lineno, time_key) / divisor,
        }
    if not kept:
        raise DataFormatError(path, f"none of the {dropped} reviews has an item in the metadata file", None)
    stats["interactions_without_metadata"] = dropped


def amazon_files(folder: Path) -> tuple[Path, Path]:
    """The (reviews, meta) files of an Amazon folder: exactly one ``meta_*`` and one other JSON lines file."""
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(JSON_SUFFIXES))
    metas = [p for p in files if p.name.startswith("meta_")]
    others = [p for p in files if not p.name.startswith("meta_")]
    if len(metas) != 1 or len(others) != 1:
        found = ", ".join(p.name for p in folder.iterdir()) or "(nothing)"
        raise DataFormatError(
            folder, f"expected one reviews file and one meta_* JSON lines file (.json/.jsonl[.gz]); found: {found}"
        )
    return others[0], metas[0]


def read_amazon(
    reviews: str | Path,
    meta: str | Path,
    name: str | None = None,
    template_fields: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
) -> RawDomain:
    """Reads raw Amazon Reviews JSON lines (2018 or 2023 field names; plain or gzip).

    Args:
        reviews: reviews file (one JSON object per line).
        meta: metadata file for the same category.
        name: domain name; defaults to the reviews file name without ``.json``/``.jsonl``/``.gz``.
        template_fields: metadata keys to use as text fields, in order; defaults to title, category, brand,
            description (2018) or title, categories, store, features, description (2023).
        cache_dir: where the Arrow cache is written (the datasets default if None).

    Returns:
        The domain; reviews of items without a metadata row are dropped (``counts["interactions_without_metadata"]``).

    Raises:
        DataFormatError: a file is missing, empty, not readable gzip, or has invalid or incomplete records.
    """
    reviews, meta = Path(reviews), Path(meta)
    reviews_key, meta_key = file_key(reviews), file_key(meta)
    review_version = _detect_version(reviews, {v: keys[0] for v, keys in _REVIEW_KEYS.items()})
    meta_version = _detect_version(meta, {"2023": "parent_asin", "2018": "asin"})
    if review_version != meta_version:
        logger.warning("%s looks like Amazon %s but %s like %s", reviews, review_version, meta, meta_version)
    item_key, default_fields = _META_KEYS[meta_version]
    text_fields = tuple(template_fields or default_fields)
    items, meta_counts = build(
        _meta_gen,
        items_features(text_fields),
        cache_dir,
        source=meta_key,
        item_key=item_key,
        text_fields=text_fields,
    )
    item_files = tuple(f["filename"] for f in items.cache_files)
    interactions, review_counts = build(
        _reviews_gen,
        INTERACTION_FEATURES,
        cache_dir,
        source=reviews_key,
        meta=meta_key,
        item_files=item_files,
        version=review_version,
    )
    counts = {**meta_counts, **review_counts}
    if counts.get("duplicate_item_rows"):
        logger.warning("%s: kept the first of duplicate item rows, dropped %d", meta, counts["duplicate_item_rows"])
    if counts.get("interactions_without_metadata"):
        logger.warning(
            "%s: dropped %d reviews of items without metadata", reviews, counts["interactions_without_metadata"]
        )
    if name is None:
        name = re.sub(r"(\.jsonl?)?(\.gz)?$", "", reviews.name)
    return RawDomain(name, interactions, items, list(text_fields), f"{reviews} + {meta}", counts)
