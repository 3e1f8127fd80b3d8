"""Which format a domain folder holds, and the reader for it.

Readers live in ``rec_transfer.data.readers``: RecBole atomic files, UniSRec processed files and raw Amazon
Reviews JSON lines. Each streams rows into a memory-mapped Arrow cache keyed by its input files' path, size
and mtime, so an edited file is read again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from rec_transfer.data.errors import DataFormatError
from rec_transfer.data.raw import RawDomain
from rec_transfer.data.readers import read_amazon, read_recbole, read_unisrec
from rec_transfer.data.readers.amazon import JSON_SUFFIXES, amazon_files

__all__ = ["read_amazon", "read_domain", "read_recbole", "read_unisrec"]

Format = Literal["auto", "recbole", "unisrec", "amazon"]


def detect_format(path: Path) -> Literal["recbole", "unisrec", "amazon"]:
    """The format of a domain folder from the names of its files."""
    if not path.is_dir():
        raise DataFormatError(path, "expected a folder holding a domain's files; it does not exist")
    names = [p.name for p in path.iterdir()]
    suffixes = {
        suffix for suffix in (".train.inter", ".text", ".inter", ".item") if any(n.endswith(suffix) for n in names)
    }
    if {".train.inter", ".text"} <= suffixes:
        return "unisrec"
    if {".inter", ".item"} <= suffixes:
        return "recbole"
    if any(n.endswith(JSON_SUFFIXES) for n in names):
        return "amazon"
    found = ", ".join(sorted(names)) or "(nothing)"
    raise DataFormatError(
        path, f"unknown format: expected *.inter + *.item, *.train.inter + *.text or JSON lines; found: {found}"
    )


def read_domain(
    path: str | Path,
    format: Format = "auto",
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
    if format == "auto":
        format = "amazon" if "reviews" in kwargs or "meta" in kwargs else detect_format(path)
    if format == "amazon":
        reviews, meta = kwargs.pop("reviews", None), kwargs.pop("meta", None)
        if reviews is None or meta is None:
            reviews, meta = amazon_files(path)
        return read_amazon(reviews, meta, name=name, cache_dir=cache_dir, **kwargs)
    reader = {"recbole": read_recbole, "unisrec": read_unisrec}[format]
    return reader(path, name=name, cache_dir=cache_dir, **kwargs)
