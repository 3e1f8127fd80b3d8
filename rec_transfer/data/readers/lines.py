"""Input files as numbered lines: existence checks with a folder listing, UTF-8 text (plain or gzip), timestamps."""

from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rec_transfer.data.errors import DataFormatError
from rec_transfer.utils.files import file_fingerprint

# (resolved path, size, mtime in ns): passed to the Arrow cache layer so an edited file is read again.
FileKey = tuple[str, int, int]


def file_key(path: Path) -> FileKey:
    """The file's cache key; a missing file raises with what its folder holds instead."""
    if not path.is_file():
        folder = path.parent
        found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else None
        listing = (
            f"found in {folder}: {', '.join(found) or '(nothing)'}" if found is not None else f"{folder} is missing"
        )
        raise DataFormatError(path, f"file not found; {listing}")
    _, size, mtime_ns = file_fingerprint(path)
    return (str(path.resolve()), size, mtime_ns)


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
    except UnicodeDecodeError as e:
        raise DataFormatError(path, f"not valid UTF-8 text ({e.reason})", lineno + 1) from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataFormatError(path, f"not a readable gzip file ({e})", lineno + 1) from None


def first_line(path: Path) -> str:
    """The header line; an empty file or a blank first line raises."""
    for _, line in iter_lines(path):
        if line.strip():
            return line
        break
    raise DataFormatError(path, "file is empty or starts with a blank line; expected a header", 1)


def parse_time(path: str, value: Any, lineno: int, field: str = "timestamp") -> float:
    """``value`` as a finite float, or a DataFormatError naming the file, line and field."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = math.nan
    if not math.isfinite(t):
        raise DataFormatError(path, f"{field} {value!r} is not a number; expected a timestamp", lineno)
    return t
