"""Which format a domain folder holds, and the reader for it.

Readers live in ``rec_transfer.data.readers``: RecBole atomic files, UniSRec processed files and raw Amazon
Reviews JSON lines. Each streams rows into a memory-mapped Arrow cache keyed by its input files' path, size
and content hash, so an edited file is read again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from rec_transfer.data.errors import DataFormatError
from rec_transfer.data.raw import RawDomain
from rec_transfer.data.readers import read_amazon, read_recbole, read_unisrec
from rec_transfer.data.readers.amazon import JSON_SUFFIXES, amazon_files
from rec_transfer.utils.files import safe_name

__all__ = ["check_domain_folder", "read_amazon", "read_domain", "read_recbole", "read_unisrec"]

Format = Literal["auto", "recbole", "unisrec", "amazon"]


_SPLIT_SUFFIXES = (".train.inter", ".valid.inter", ".test.inter")


def detect_format(path: Path) -> Literal["recbole", "unisrec", "amazon"]:
    """The format of a domain folder from the names of its files; a folder holding the files of several formats is
    refused, naming them, rather than read as one of them."""
    check_domain_folder(path)
    names = sorted(p.name for p in path.iterdir())
    inter = [n for n in names if n.endswith(".inter") and not n.endswith(_SPLIT_SUFFIXES)]  # RecBole's, not UniSRec's
    files = {
        "unisrec": [n for n in names if n.endswith((*_SPLIT_SUFFIXES, ".text"))],
        "recbole": sorted(inter + [n for n in names if n.endswith(".item")]),
        "amazon": [n for n in names if n.endswith(JSON_SUFFIXES)],
    }
    complete = {
        "unisrec": any(n.endswith(".train.inter") for n in names) and any(n.endswith(".text") for n in names),
        "recbole": bool(inter) and any(n.endswith(".item") for n in names),
        "amazon": bool(files["amazon"]),
    }
    found = [f for f, ok in complete.items() if ok]
    if len(found) > 1:
        listing = "; ".join(f"{f}: {', '.join(files[f])}" for f in found)
        raise DataFormatError(
            path,
            f"holds the files of several formats ({listing}): set format to one of {', '.join(found)} "
            "or move the other files out",
        )
    if found:
        return found[0]  # type: ignore[return-value]
    train = [n for n in names if n.endswith(".train.inter")]
    if inter or train:  # half of one format: name the file it lacks
        have = (inter or train)[0]
        lacks = f"{have.removesuffix('.inter')}.item" if inter else f"{have.removesuffix('.train.inter')}.text"
        kind = "RecBole atomic files need" if inter else "UniSRec processed files need"
        raise DataFormatError(path, f"no {lacks} beside {have}: {kind} both; found: {', '.join(names)}")
    raise DataFormatError(
        path,
        "unknown format: expected *.inter + *.item, *.train.inter + *.text or JSON lines; "
        f"found: {', '.join(names) or '(nothing)'}",
    )


def check_domain_folder(path: str | Path) -> None:
    """Raises ``DataFormatError`` unless ``path`` is a folder (a domain is the folder holding its files)."""
    path = Path(path)
    if path.is_dir():
        return
    if path.is_file():
        raise DataFormatError(path, f"is a file; a domain is the folder holding its files ({path.parent})")
    file_above = next((p for p in path.parents if p.is_file()), None)  # e.g. a data_root that names a file
    why = f" ({file_above} is a file, not a folder)" if file_above else ""
    raise DataFormatError(path, f"expected a folder holding a domain's files; it does not exist{why}")


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
    if name is not None:
        safe_name(name, "domain name")  # also the files' stem: <path>/<name>.inter must stay inside <path>
    if format == "auto":
        format = "amazon" if "reviews" in kwargs or "meta" in kwargs else detect_format(path)
    if format == "amazon":
        reviews, meta = kwargs.pop("reviews", None), kwargs.pop("meta", None)
        if reviews is None or meta is None:
            reviews, meta = amazon_files(path)
        return read_amazon(reviews, meta, name=name, cache_dir=cache_dir, **kwargs)
    reader = {"recbole": read_recbole, "unisrec": read_unisrec}[format]
    return reader(path, name=name, cache_dir=cache_dir, **kwargs)
