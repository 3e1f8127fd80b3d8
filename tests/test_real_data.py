"""End-to-end checks on the real domains in ``shared/data`` (skipped where that folder is absent).

The data folder is ``$REC_TRANSFER_DATA`` if set, else ``<repo>/../shared/data``. Expected values are checked against
an independent plain-Python parse of the ``.inter`` files, never against the package's own readers.
"""

from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch

from rec_transfer.data import DomainDataModule
from rec_transfer.data.formats import read_domain

DATA_ROOT = Path(os.environ.get("REC_TRANSFER_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data")
MAX_LEN = 50


def domain_dir(*parts: str) -> Path:
    path = DATA_ROOT.joinpath(*parts)
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set REC_TRANSFER_DATA to the shared data folder)")
    return path


def parse_inter(path: Path) -> dict[str, list[tuple[float, str]]]:
    """User -> [(timestamp, item), ...] in file order, by hand from the tab-separated ``.inter`` file."""
    with path.open(encoding="utf-8") as f:
        header = [h.split(":")[0] for h in f.readline().rstrip("\n").split("\t")]
        u, i, t = header.index("user_id"), header.index("item_id"), header.index("timestamp")
        rows: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for line in f:
            parts = line.rstrip("\n").split("\t")
            rows[parts[u]].append((float(parts[t]), parts[i]))
    return rows


def histories(dm: DomainDataModule) -> tuple[list[str], list[str]]:
    """(user id of each dense user index, item id of each dense item index - 1)."""
    assert dm.domain is not None
    # Plain lists: element access on a datasets Column costs an Arrow lookup each.
    return dm.domain.sequences.data.column("user_id").to_pylist(), dm.domain.items.data.column("item_id").to_pylist()


def rows_of(loader) -> dict[int, tuple[list[int], list[int] | int]]:
    """Dense user index -> (unpadded input, unpadded target or scalar target), over every batch of a loader."""
    out: dict[int, tuple[list[int], list[int] | int]] = {}
    for batch in loader:
        for user, inp, tgt in zip(batch["user"].tolist(), batch["input"], batch["target"], strict=True):
            assert user not in out, f"user {user} appears twice"
            n = int((inp != 0).sum())
            assert torch.all(inp[n:] == 0), "padding must be on the right"
            out[user] = (inp[:n].tolist(), tgt[:n].tolist() if tgt.ndim else int(tgt))
    return out


@pytest.fixture(scope="module")
def scientific(tmp_path_factory: pytest.TempPathFactory) -> DomainDataModule:
    path = domain_dir("amazon", "Scientific")
    # The default cap (50 history items + target) keeps the file as UniSRec processed it: the paper's split.
    # pack=False: one history per row, so rows_of can read each user's row (packing has its own tests).
    dm = DomainDataModule(
        str(path), text_encoder=None, cache_dir=str(tmp_path_factory.mktemp("cache")), max_len=MAX_LEN, pack=False
    )
    dm.prepare_data()
    dm.setup()
    return dm


def test_scientific_sizes(scientific: DomainDataModule) -> None:
    assert scientific.domain is not None
    assert (scientific.domain.num_users, scientific.domain.num_items, scientific.domain.num_interactions) == (
        8442,
        4385,
        59384,
    )


def test_scientific_leave_one_out_matches_file_order(scientific: DomainDataModule) -> None:
    rows = parse_inter(Path(scientific.path) / "Scientific.inter")
    expected = {user: [item for _, item in user_rows] for user, user_rows in rows.items()}
    user_ids, item_ids = histories(scientific)
    assert sorted(user_ids) == sorted(expected)

    def names(indices: list[int]) -> list[str]:
        return [item_ids[i - 1] for i in indices]

    test = rows_of(scientific.test_dataloader())
    valid = rows_of(scientific.val_dataloader())
    train = rows_of(scientific.train_dataloader())
    assert len(test) == len(valid) == len(user_ids)
    assert set(train) == {u for u, name in enumerate(user_ids) if len(expected[name]) >= 4}
    for u, name in enumerate(user_ids):
        full = expected[name]
        hist, target = test[u]
        assert item_ids[target - 1] == full[-1], name
        assert names(hist) == full[:-1][-MAX_LEN:], name
        hist, target = valid[u]
        assert item_ids[target - 1] == full[-2], name
        assert names(hist) == full[:-2][-MAX_LEN:], name
        if u in train:
            inp, tgt = train[u]
            assert inp[1:] == tgt[:-1], "train target is the input shifted by one"
            # The train row is exactly the history before the two held-out positions (cut to max_len + 1 items).
            assert names([*inp, tgt[-1]]) == full[:-2][-(MAX_LEN + 1) :], name
            for held_out in full[-2:]:
                if held_out not in full[:-2]:
                    assert held_out not in names([*inp, *tgt]), name


def test_ml100k_multi_field_text_and_chronological_split(tmp_path: Path) -> None:
    path = domain_dir("movielens", "ml-100k")
    raw = read_domain(path, cache_dir=tmp_path / "raw")
    assert raw.text_fields == ["movie_title", "release_year", "class"]

    dm = DomainDataModule(str(path), text_encoder=None, cache_dir=str(tmp_path / "a"), max_history=None, pack=False)
    dm.prepare_data()
    dm.setup()
    assert dm.domain is not None
    assert (dm.domain.num_users, dm.domain.num_items, dm.domain.num_interactions) == (943, 1682, 100000)
    user_ids, item_ids = histories(dm)
    texts = dict(zip(item_ids, list(dm.domain.texts()), strict=True))
    assert texts["1"] == "Toy Story 1995 Animation Children's Comedy"

    # This file is not sorted by time: the split must follow timestamps, ties keeping file order.
    by_user = parse_inter(path / "ml-100k.inter")
    test = rows_of(dm.test_dataloader())
    for u, name in enumerate(user_ids):
        chrono = [item for _, item in sorted(by_user[name], key=lambda r: r[0])]
        assert item_ids[test[u][1] - 1] == chrono[-1], name

    templated = DomainDataModule(
        str(path),
        text_encoder=None,
        cache_dir=str(tmp_path / "b"),
        max_history=None,
        text_template="{movie_title} ({release_year})",
    )
    templated.prepare_data()
    templated.setup()
    assert templated.domain is not None
    texts = dict(zip(histories(templated)[1], list(templated.domain.texts()), strict=True))
    assert texts["1"] == "Toy Story (1995)"
    assert all(t.endswith(")") and " (" in t for t in texts.values())
    assert np.array_equal(templated.domain.flat()[1], dm.domain.flat()[1]), "the template must not change the data"
