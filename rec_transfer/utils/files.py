"""Files and folders that readers never see half-written; fingerprints of input files (cheap, and by content).

Written by hand: the standard library has no atomic write, and the packages that offered one are unmaintained.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def file_fingerprint(path: str | Path) -> tuple[str, int, int]:
    """``(name, size in bytes, mtime in ns)``: changes when a file is edited or replaced, read without opening it."""
    path = Path(path)
    stat = path.stat()
    return path.name, stat.st_size, stat.st_mtime_ns


def safe_name(name: str, what: str) -> str:
    """``name`` if it can name a file inside a folder (no separators, not ``.`` or ``..``, not empty); else ValueError.

    Names from configs end up in cache paths (``<cache_dir>/domains/<name>-<key>``) and file names: ``../x`` would
    write outside the folder.
    """
    if not name or name in (".", "..") or any(c in name for c in ("/", "\\", "\0")) or name != name.strip():
        raise ValueError(
            f"{what} {name!r} cannot name a file inside a folder: it must not be empty, '.' or '..', hold '/', '\\' "
            "or a NUL character, or start or end with spaces"
        )
    return name


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (hex), read in 1 MiB blocks: what caches of data read from the file are keyed on.

    Size and mtime can stay the same across an edit (a same-size change with the mtime restored, a copy that keeps
    times), so they cannot key a cache; the bytes can. The price is one read of the file per lookup, about 1 s per
    GB at sha256's speed (the interaction files here are tens of MB: milliseconds).
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; on success it is synced to disk and renamed onto ``path``.

    For writers that want a path of their own (e.g. ``safetensors.torch.save_file``); on an error the temporary
    file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.chmod(0o644)  # mkstemp creates 0600; caches may be shared
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Writes ``data`` (text as UTF-8) to ``path`` atomically: readers see the old file or the new one, whole."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


@contextmanager
def atomic_dir(target: str | Path, marker: str) -> Iterator[Path]:
    """A temporary folder beside ``target`` to fill; on success it is renamed to ``target``.

    Args:
        target: the folder to create.
        marker: a file that only a complete folder holds. A folder at ``target`` without it is a leftover of an
            interrupted run and is replaced; one with it, made meanwhile by another process, is kept (ours is
            dropped), since content-keyed folders of the same name hold the same thing.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    try:
        yield tmp
        tmp.chmod(0o755)  # mkdtemp creates 0700; caches may be shared
        if target.exists() and not (target / marker).exists():
            shutil.rmtree(target)
        try:
            tmp.rename(target)
        except OSError:
            if not (target / marker).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
