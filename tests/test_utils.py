"""The neutral helpers: atomic files and folders, file fingerprints, the distributed context."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rec_transfer.utils.distributed import dist_info, is_distributed
from rec_transfer.utils.files import atomic_dir, atomic_path, atomic_write, file_fingerprint


def test_atomic_write_text_and_bytes_leave_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "counts.json"
    atomic_write(path, '{"a": 1}')
    assert path.read_text() == '{"a": 1}'
    atomic_write(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert os.listdir(path.parent) == ["counts.json"]
    assert path.stat().st_mode & 0o777 == 0o644


def test_atomic_path_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    path = tmp_path / "vectors.safetensors"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["vectors.safetensors"]


def test_atomic_dir_replaces_a_leftover_and_keeps_a_complete_folder(tmp_path: Path) -> None:
    target = tmp_path / "domain"
    target.mkdir()
    (target / "partial").write_text("interrupted run")  # no marker: a leftover
    with atomic_dir(target, marker="meta.json") as tmp:
        (tmp / "meta.json").write_text("ours")
    assert sorted(os.listdir(target)) == ["meta.json"] and (target / "meta.json").read_text() == "ours"

    with atomic_dir(target, marker="meta.json") as tmp:  # another process finished first: theirs stays
        (tmp / "meta.json").write_text("second")
    assert (target / "meta.json").read_text() == "ours" and os.listdir(tmp_path) == ["domain"]

    with pytest.raises(ValueError), atomic_dir(tmp_path / "new", marker="meta.json") as tmp:
        raise ValueError("failed while filling")
    assert os.listdir(tmp_path) == ["domain"]


def test_file_fingerprint_changes_when_the_file_does(tmp_path: Path) -> None:
    path = tmp_path / "a.inter"
    path.write_text("x")
    before = file_fingerprint(path)
    assert before[:2] == ("a.inter", 1)
    path.write_text("xy")
    assert file_fingerprint(path) != before


def test_no_process_group_is_rank_zero_of_one() -> None:
    assert dist_info() == (0, 1) and not is_distributed()
