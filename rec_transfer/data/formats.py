"""Readers for RecBole atomic files, UniSRec processed files and raw Amazon Reviews JSON lines.

Every reader streams rows through ``datasets.Dataset.from_generator`` so the data lands in a memory-mapped
Arrow cache; the cache key includes each input file's path, size and mtime, so an edited file is re-read.
"""

from __future__ import annotations

import gzip
import html
import json
import logging
import math
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import datasets

from rec_transfer.data.errors import DataFormatError
from rec_transfer.data.raw import RawDomain
from rec_transfer.utils.files import atomic_write, file_fingerprint

logger = logging.getLogger(__name__)

# Bump when the rows a generator yields change meaning, so old caches are not reused.
_CACHE_VERSION = 1
_WRITER_BATCH_SIZE = 100_000
_COUNTS_FILE = "rec_transfer_counts.json"
_RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")
_TAG_RE = re.compile(r"<[^>]*>")
_JSON_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")
# Amazon field names: (user key, item key, time key, time divisor) for reviews; (item key, text fields) for metadata.
_REVIEW_KEYS = {
    "2018": ("reviewerID", "asin", "unixReviewTime", 1.0),
    "2023": ("user_id", "parent_asin", "timestamp", 1000.0),
}
_META_KEYS = {
    "2018": ("asin", ("title", "category", "brand", "description")),
    "2023": ("parent_asin", ("title", "categories", "store", "features", "description")),
}
_INTERACTION_FEATURES = datasets.Features(
    {"user_id": datasets.Value("string"), "item_id": datasets.Value("string"), "timestamp": datasets.Value("float64")}
)

FileKey = tuple[str, int, int]


# ---------------------------------------------------------------- files, lines, caching


def _file_key(path: Path) -> FileKey:
    if not path.is_file():
        folder = path.parent
        found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else None
        listing = (
            f"found in {folder}: {', '.join(found) or '(nothing)'}" if found is not None else f"{folder} is missing"
        )
        raise DataFormatError(path, f"file not found; {listing}")
    _, size, mtime_ns = file_fingerprint(path)
    return (str(path.resolve()), size, mtime_ns)


def _iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """Yields (1-based line number, line without its newline); decoding and gzip failures become DataFormatError."""
    lineno = 0
    try:
        with open(path, "rb") as raw:
            is_gzip = raw.read(2) == b"\x1f\x8b"
        # newline="\n" so a stray "\r" inside a text field does not split the row.
        opener = gzip.open if is_gzip else open
        with opener(path, "rt", encoding="utf-8-sig", newline="\n") as f:
            for lineno, line in enumerate(f, start=1):
                yield lineno, line.rstrip("\r\n")
    except UnicodeDecodeError as e:
        raise DataFormatError(path, f"not valid UTF-8 text ({e.reason})", lineno + 1) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataFormatError(path, f"not a readable gzip file ({e})", lineno + 1) from None


def _first_line(path: Path) -> str:
    for _, line in _iter_lines(path):
        if line.strip():
            return line
        break
    raise DataFormatError(path, "file is empty or starts with a blank line; expected a header", 1)


def _format_error_in(exc: BaseException) -> DataFormatError | None:
    # datasets wraps generator failures (DatasetGenerationError); dig our own error out of the chain.
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, DataFormatError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if was_enabled:
            datasets.enable_progress_bars()


def _build(
    generator: Callable[..., Iterator[dict[str, Any]]],
    features: datasets.Features,
    cache_dir: str | Path | None,
    **gen_kwargs: Any,
) -> tuple[datasets.Dataset, dict[str, int]]:
    """Runs from_generator and returns the dataset plus the counts the generator reported (or cached)."""
    # The generator fills `stats` only when it actually runs; on a cache hit the counts come from a side file.
    stats: dict[str, int] = {}
    gen_kwargs = {**gen_kwargs, "stats": stats, "cache_version": _CACHE_VERSION}
    try:
        with _no_progress_bars():
            # features=None skips datasets' per-row encode_example, which triples the write time; the generators
            # yield only str and float, so the inferred schema matches `features` (checked below).
            ds = datasets.Dataset.from_generator(
                generator,
                features=None,
                cache_dir=str(cache_dir) if cache_dir is not None else None,
                keep_in_memory=False,
                gen_kwargs=gen_kwargs,
                writer_batch_size=_WRITER_BATCH_SIZE,
            )
    except Exception as e:
        err = _format_error_in(e)
        if err is None:
            raise
        raise err from None
    if ds.features != features:
        ds = ds.cast(features)
    counts_file = Path(ds.cache_files[0]["filename"]).parent / _COUNTS_FILE
    if stats:
        atomic_write(counts_file, json.dumps(stats))
    elif counts_file.is_file():
        stats = json.loads(counts_file.read_text())
    return ds, stats


def _items_features(text_fields: Sequence[str]) -> datasets.Features:
    return datasets.Features(
        {"item_id": datasets.Value("string"), **{f: datasets.Value("string") for f in text_fields}}
    )


# ---------------------------------------------------------------- RecBole / UniSRec (tab-separated, typed header)


def _header(path: Path, required: dict[str, str], optional: dict[str, str] | None = None) -> list[tuple[str, str]]:
    """Parses a ``field:type`` header and checks the required (and, if present, optional) fields' types."""
    optional = optional or {}
    line = _first_line(path)
    fields = []
    for entry in line.split("\t"):
        name, sep, kind = entry.partition(":")
        if not sep or not name or kind not in _RECBOLE_TYPES:
            raise DataFormatError(path, f"header entry {entry!r} is not field:type with type in {_RECBOLE_TYPES}", 1)
        fields.append((name, kind))
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


def _split_row(path: str, line: str, lineno: int, n_fields: int) -> list[str]:
    parts = line.split("\t")
    if len(parts) != n_fields:
        raise DataFormatError(path, f"expected {n_fields} fields, got {len(parts)}", lineno)
    return parts


def _parse_time(path: str, value: Any, lineno: int, field: str = "timestamp") -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = math.nan
    if not math.isfinite(t):
        raise DataFormatError(path, f"{field} {value!r} is not a number; expected a timestamp", lineno)
    return t


def _recbole_inter_gen(source: FileKey, columns: tuple[int, int, int | None], n_fields: int, **_: Any):
    path, (u_col, i_col, t_col) = source[0], columns
    positions: dict[str, float] = {}
    rows = 0
    for lineno, line in _iter_lines(path):
        if lineno == 1 or not line:
            continue
        parts = _split_row(path, line, lineno, n_fields)
        user = parts[u_col]
        if t_col is None:
            t = float(positions.get(user, 0))
            positions[user] = t + 1
        else:
            t = _parse_time(path, parts[t_col], lineno)
        rows += 1
        yield {"user_id": user, "item_id": parts[i_col], "timestamp": t}
    if not rows:
        raise DataFormatError(path, "no data rows after the header", 2)


def _tsv_items_gen(source: FileKey, item_col: int, text_cols: tuple[tuple[str, int], ...], n_fields: int, stats, **_):
    path = source[0]
    seen: set[str] = set()
    duplicates = 0
    for lineno, line in _iter_lines(path):
        if lineno == 1 or not line:
            continue
        parts = _split_row(path, line, lineno, n_fields)
        item = parts[item_col]
        if item in seen:
            duplicates += 1
            continue
        seen.add(item)
        yield {"item_id": item, **{name: parts[col] for name, col in text_cols}}
    if not seen:
        raise DataFormatError(path, "no data rows after the header", 2)
    stats["duplicate_item_rows"] = duplicates


def _read_tsv_items(path: Path, text_fields: Sequence[str] | None, required: dict[str, str], cache_dir):
    fields = _header(path, required)
    names = [n for n, _ in fields]
    if text_fields is None:
        text_fields = [n for n, kind in fields if n != "item_id" and kind in ("token", "token_seq")]
    text_cols = tuple((f, names.index(f)) for f in text_fields)
    items, counts = _build(
        _tsv_items_gen,
        _items_features(text_fields),
        cache_dir,
        source=_file_key(path),
        item_col=names.index("item_id"),
        text_cols=text_cols,
        n_fields=len(fields),
    )
    if counts.get("duplicate_item_rows"):
        logger.warning("%s: kept the first of duplicate item rows, dropped %d", path, counts["duplicate_item_rows"])
    return items, list(text_fields), counts


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
    inter_key = _file_key(inter_path)
    _file_key(item_path)
    fields = _header(inter_path, {"user_id": "token", "item_id": "token"}, {"timestamp": "float"})
    names = [n for n, _ in fields]
    t_col = names.index("timestamp") if "timestamp" in names else None
    if t_col is None:
        logger.info("%s has no timestamp:float column; using each row's position in its user's history", inter_path)
    interactions, _ = _build(
        _recbole_inter_gen,
        _INTERACTION_FEATURES,
        cache_dir,
        source=inter_key,
        columns=(names.index("user_id"), names.index("item_id"), t_col),
        n_fields=len(fields),
    )
    items, text_fields, counts = _read_tsv_items(item_path, None, {"item_id": "token"}, cache_dir)
    return RawDomain(name, interactions, items, text_fields, str(folder), counts)


def _unisrec_gen(sources: tuple[FileKey, ...], columns: tuple[tuple[int, int, int, int], ...], **_: Any):
    order: dict[str, None] = {}
    longest: dict[str, list[str]] = {}
    rows: dict[str, dict[str, tuple[list[str], int]]] = {"valid": {}, "test": {}}
    for split, (path, _, _), (u_col, h_col, i_col, n_fields) in zip(
        ("train", "valid", "test"), sources, columns, strict=True
    ):
        for lineno, line in _iter_lines(path):
            if lineno == 1 or not line:
                continue
            parts = _split_row(path, line, lineno, n_fields)
            user, seq = parts[u_col], [*parts[h_col].split(), parts[i_col]]
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
    sources = tuple(_file_key(p) for p in paths)
    text_path = folder / f"{name}.text"
    _file_key(text_path)
    required = {"user_id": "token", "item_id_list": "token_seq", "item_id": "token"}
    columns = []
    for path in paths:
        names = [n for n, _ in _header(path, required)]
        columns.append((*(names.index(n) for n in required), len(names)))
    interactions, _ = _build(_unisrec_gen, _INTERACTION_FEATURES, cache_dir, sources=sources, columns=tuple(columns))
    items, text_fields, counts = _read_tsv_items(
        text_path, ["text"], {"item_id": "token", "text": "token_seq"}, cache_dir
    )
    return RawDomain(name, interactions, items, text_fields, str(folder), counts)


# ---------------------------------------------------------------- Amazon Reviews JSON lines


def _json_records(path: str) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in _iter_lines(path):
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


def _amazon_meta_gen(source: FileKey, item_key: str, text_fields: tuple[str, ...], stats, **_: Any):
    path = source[0]
    seen: set[str] = set()
    duplicates = 0
    for lineno, record in _json_records(path):
        item = record.get(item_key)
        if not item:
            raise DataFormatError(
                path, f"record has no {item_key!r} key (item id); found keys {sorted(record)}", lineno
            )
        item = str(item)
        if item in seen:
            duplicates += 1
            continue
        seen.add(item)
        yield {
            "item_id": item,
            **{f: _clean_text(record.get(f), " " if f == "description" else ", ") for f in text_fields},
        }
    stats["duplicate_item_rows"] = duplicates


def _amazon_reviews_gen(source: FileKey, item_files: tuple[str, ...], version: str, stats, **_: Any):
    path = source[0]
    user_key, item_key, time_key, divisor = _REVIEW_KEYS[version]
    known = {i for f in item_files for i in datasets.Dataset.from_file(f).data.column("item_id").to_pylist()}
    dropped = kept = 0
    for lineno, record in _json_records(path):
        user, item = record.get(user_key), record.get(item_key)
        if not user or not item:
            missing = user_key if not user else item_key
            raise DataFormatError(
                path, f"record has no {missing!r} key; expected {user_key!r} and {item_key!r}", lineno
            )
        if item not in known:
            dropped += 1
            continue
        kept += 1
        yield {
            "user_id": str(user),
            "item_id": str(item),
            "timestamp": _parse_time(path, record.get(time_key), lineno, time_key) / divisor,
        }
    if not kept:
        raise DataFormatError(path, f"none of the {dropped} reviews has an item in the metadata file", None)
    stats["interactions_without_metadata"] = dropped


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
    reviews_key, meta_key = _file_key(reviews), _file_key(meta)
    review_version = _detect_version(reviews, {v: keys[0] for v, keys in _REVIEW_KEYS.items()})
    meta_version = _detect_version(meta, {"2023": "parent_asin", "2018": "asin"})
    if review_version != meta_version:
        logger.warning("%s looks like Amazon %s but %s like %s", reviews, review_version, meta, meta_version)
    item_key, default_fields = _META_KEYS[meta_version]
    text_fields = tuple(template_fields or default_fields)
    items, meta_counts = _build(
        _amazon_meta_gen,
        _items_features(text_fields),
        cache_dir,
        source=meta_key,
        item_key=item_key,
        text_fields=text_fields,
    )
    item_files = tuple(f["filename"] for f in items.cache_files)
    interactions, review_counts = _build(
        _amazon_reviews_gen,
        _INTERACTION_FEATURES,
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


# ---------------------------------------------------------------- dispatch


def _amazon_files(folder: Path) -> tuple[Path, Path]:
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(_JSON_SUFFIXES))
    metas = [p for p in files if p.name.startswith("meta_")]
    others = [p for p in files if not p.name.startswith("meta_")]
    if len(metas) != 1 or len(others) != 1:
        found = ", ".join(p.name for p in folder.iterdir()) or "(nothing)"
        raise DataFormatError(
            folder, f"expected one reviews file and one meta_* JSON lines file (.json/.jsonl[.gz]); found: {found}"
        )
    return others[0], metas[0]


def read_domain(
    path: str | Path,
    format: Literal["auto", "recbole", "unisrec", "amazon"] = "auto",
    name: str | None = None,
    cache_dir: str | Path | None = None,
    **kwargs: Any,
) -> RawDomain:
    """Reads one domain, detecting the format from the folder's contents unless ``format`` is given.

    Args:
        path: the domain's folder. For Amazon it holds one reviews file and one ``meta_*`` file, unless
            ``reviews=`` and ``meta=`` are passed.
        format: ``"recbole"`` (``*.inter`` + ``*.item``), ``"unisrec"`` (``*.train.inter`` + ``*.text``),
            ``"amazon"``, or ``"auto"``.
        name: domain name / file stem; each reader's default if None.
        cache_dir: where the Arrow cache is written (the datasets default if None).
        **kwargs: passed to the reader (for Amazon: ``reviews``, ``meta``, ``template_fields``).

    Returns:
        The domain as read by the chosen reader.

    Raises:
        DataFormatError: the folder is missing, its format is not recognised, or the data is malformed.
    """
    path = Path(path)
    if format == "auto" and ("reviews" in kwargs or "meta" in kwargs):
        format = "amazon"
    if format == "amazon":
        reviews, meta = kwargs.pop("reviews", None), kwargs.pop("meta", None)
        if reviews is None or meta is None:
            reviews, meta = _amazon_files(path)
        return read_amazon(reviews, meta, name=name, cache_dir=cache_dir, **kwargs)
    if format == "auto":
        if not path.is_dir():
            raise DataFormatError(path, "expected a folder holding a domain's files; it does not exist")
        names = [p.name for p in path.iterdir()]
        suffixes = {
            suffix for suffix in (".train.inter", ".text", ".inter", ".item") if any(n.endswith(suffix) for n in names)
        }
        if {".train.inter", ".text"} <= suffixes:
            format = "unisrec"
        elif {".inter", ".item"} <= suffixes:
            format = "recbole"
        elif any(n.endswith(_JSON_SUFFIXES) for n in names):
            return read_domain(path, "amazon", name, cache_dir, **kwargs)
        else:
            found = ", ".join(sorted(names)) or "(nothing)"
            raise DataFormatError(
                path,
                f"unknown format: expected *.inter + *.item, *.train.inter + *.text or JSON lines; found: {found}",
            )
    reader = {"recbole": read_recbole, "unisrec": read_unisrec}[format]
    return reader(path, name=name, cache_dir=cache_dir, **kwargs)
