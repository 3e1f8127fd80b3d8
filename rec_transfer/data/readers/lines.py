"""Input files as numbered lines: existence checks with a folder listing, UTF-8 text (plain or gzip), timestamps."""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rec_transfer.data.errors import DataFormatError
from rec_transfer.utils.files import file_digest

# (resolved path, size, sha256 of the bytes): passed to the Arrow cache layer so an edited file is read again.
FileKey = tuple[str, int, str]


def file_key(path: Path) -> FileKey:
    """The file's cache key; a missing file raises with what its folder holds instead."""
    if not path.is_file():
        folder = path.parent
        found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else None
        listing = (
            f"found in {folder}: {', '.join(found) or '(nothing)'}" if found is not None else f"{folder} is missing"
        )
        raise DataFormatError(path, f"file not found; {listing}")
    return (str(path.resolve()), path.stat().st_size, file_digest(path))


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
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
    except UnicodeDecodeError:
        # The text stream decodes ahead in blocks, so the line being read is not the bad one: find it.
        bad_line, message = _find_bad_utf8(path, is_gzip)
        raise DataFormatError(path, message, bad_line) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataFormatError(path, f"not a readable gzip file ({e})", lineno + 1) from None


def _find_bad_utf8(path: str | Path, is_gzip: bool) -> tuple[int | None, str]:
    """The first line that is not UTF-8, and what is wrong with it, read line by line (only once decoding failed)."""
    with (gzip.open if is_gzip else open)(path, "rb") as f:
        for lineno, data in enumerate(f, start=1):
            try:
                data.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                bad = e.object[e.start : e.start + 1]
                return lineno, f"not valid UTF-8 text ({e.reason}: byte {bad!r} at byte {e.start + 1} of the line)"
    return None, "not valid UTF-8 text"


def first_line(path: Path) -> str:
    """The header line; an empty file or a blank first line raises."""
    for _, line in iter_lines(path):
        if line.strip():
            return line
        break
    raise DataFormatError(path, "file is empty or starts with a blank line; expected a header", 1)


def clean_id(path: str, value: str, lineno: int, field: str, stats: dict[str, int]) -> str:
    """An id as a file gives it, without surrounding whitespace: ``"u1 "`` is user ``u1``, not a second user (counted
    in ``stats["ids_with_spaces"]``); an empty id raises, naming the file, line and field."""
    cleaned = value.strip()
    if not cleaned:
        raise DataFormatError(path, f"empty {field}; every row needs one", lineno)
    if len(cleaned) != len(value):
        stats["ids_with_spaces"] = stats.get("ids_with_spaces", 0) + 1
    return cleaned


def parse_time(path: str, value: Any, lineno: int, field: str = "timestamp") -> float:
    """``value`` as a finite float, or a DataFormatError naming the file, line and field."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = math.nan
    if not math.isfinite(t):
        raise DataFormatError(path, f"{field} {value!r} is not a number; expected a timestamp", lineno)
    return t
