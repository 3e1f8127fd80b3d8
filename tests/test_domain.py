"""Preprocessing (k-core, order, cap, id maps, templates) and the leave-one-out split."""

import datasets
import numpy as np
import pyarrow as pa
import pytest

from rec_transfer.data.batching import SequenceView, collate
from rec_transfer.data.domain import Domain, PreprocessConfig, preprocess
from rec_transfer.data.errors import DataFormatError
from rec_transfer.data.raw import RawDomain


def raw(rows, items=None, fields=("title", "brand")):
    users, its, ts = zip(*rows, strict=True)
    inter = pa.table({"user_id": list(users), "item_id": list(its), "timestamp": pa.array(ts, pa.float64())})
    if items is None:
        ids = sorted(set(its))
        items = {"item_id": ids, **{f: [f"{f} of {i}" for i in ids] for f in fields}}
    return RawDomain("toy", datasets.Dataset(inter), datasets.Dataset(pa.table(items)), list(fields), "toy.inter")


def histories(d: Domain) -> dict[str, list[str]]:
    ids = d.items["item_id"]
    return {r["user_id"]: [ids[i - 1] for i in r["items"]] for r in d.sequences}


def test_chronological_with_stable_ties_and_dense_ids():
    d = preprocess(raw([("u", "c", 2), ("u", "a", 1), ("u", "b", 1), ("v", "a", 0), ("v", "b", 0), ("v", "c", 0)]))
    assert histories(d) == {"u": ["a", "b", "c"], "v": ["a", "b", "c"]}  # ties keep file order
    assert d.items["item_id"] == ["a", "b", "c"]
    assert d.num_items == 3 and d.num_users == 2 and d.num_interactions == 6
    offsets, values = d.flat()
    assert offsets.tolist() == [0, 3, 6] and values.min() == 1  # 0 is padding


def test_history_cap_keeps_latest():
    rows = [("u", f"i{t}", t) for t in range(10)]
    d = preprocess(raw(rows), PreprocessConfig(max_history=4))
    assert histories(d)["u"] == ["i5", "i6", "i7", "i8", "i9"]  # 4 history items + the test target
    assert d.counts["dropped_by_history_cap"] == 5


def test_kcore_is_iterative_and_counted():
    # u3 and u4 have 3 interactions each, but lose x/y in the first round and must go in the second.
    rows = [(u, i, t) for u in ("u1", "u2", "u5") for t, i in enumerate(["a", "b", "c"])]
    rows += [("u3", "x", 0), ("u3", "a", 1), ("u3", "y", 2), ("u4", "x", 0), ("u4", "b", 1), ("u4", "c", 2)]
    d = preprocess(raw(rows), PreprocessConfig(kcore=3, max_history=None))
    assert set(histories(d)) == {"u1", "u2", "u5"}
    assert d.items["item_id"] == ["a", "b", "c"]
    assert d.counts["dropped_by_kcore"] == 6


def test_duplicates_and_short_users_dropped_and_counted():
    rows = [("u", "a", 0), ("u", "a", 0), ("u", "b", 1), ("u", "c", 2), ("v", "a", 0), ("v", "b", 1)]
    d = preprocess(raw(rows))
    assert d.counts["dropped_duplicates"] == 1
    assert d.counts["dropped_short_users"] == 1  # v has 2 items: no train/valid/test
    assert list(histories(d)) == ["u"]


def test_short_users_are_kept_apart_for_prediction_with_the_catalogues_items(tmp_path):
    # v has 2 interactions and w 1, too few to train or test on; "z" is bought by v alone, so not in the catalogue.
    rows = [("u", "a", 0), ("u", "b", 1), ("u", "c", 2), ("v", "z", 0), ("v", "b", 1), ("w", "z", 0)]
    d = preprocess(raw(rows))
    assert list(histories(d)) == ["u"] and d.items["item_id"] == ["a", "b", "c"]
    assert d.short_users["user_id"] == ["v", "w"] and d.short_users["items"] == [[2], []]
    assert d.flat()[0].tolist() == [0, 3]  # training and evaluation see u only
    offsets, values = d.flat(short_users=True)
    assert offsets.tolist() == [0, 3, 4, 4] and values.tolist() == [1, 2, 3, 2]
    assert d.user_ids([2, 0, 1]) == ["w", "u", "v"]
    d.save(tmp_path / "toy")
    again = Domain.load(tmp_path / "toy")
    assert again.short_users["items"] == [[2], []] and again.flat(short_users=True)[0].tolist() == [0, 3, 4, 4]


def test_repeated_items_kept_and_counted(caplog):
    # Without timestamps a reader numbers each user's rows, so a row written twice is a repeat, not a duplicate.
    rows = [("u", "a", 0), ("u", "b", 1), ("u", "a", 2), ("u", "c", 3), ("u", "a", 4), ("v", "a", 0), ("v", "b", 1)]
    rows += [("v", "c", 2)]
    with caplog.at_level("INFO", logger="rec_transfer"):
        d = preprocess(raw(rows))
    assert histories(d)["u"] == ["a", "b", "a", "c", "a"] and d.counts["repeated_items"] == 2
    assert "toy: 2 interactions repeat an item already in the user's history (kept)" in caplog.messages


def test_items_without_interactions_are_ranked_only_with_catalogue_all(caplog):
    rows = [("u", "b", 0), ("u", "d", 1), ("u", "b", 2)]
    table = {"item_id": ["a", "b", "c", "d", "e"], "title": ["new a", "b", "", "d", "new e"]}
    with caplog.at_level("INFO", logger="rec_transfer"):
        d = preprocess(raw(rows, table, fields=("title",)))
        assert d.items["item_id"] == ["b", "d"] and d.counts["items_without_interactions"] == 3
        assert (
            "toy: 3 items of the item table have no kept interactions (left out; catalogue: all ranks them)"
            in caplog.messages
        )
        d = preprocess(raw(rows, table, fields=("title",)), PreprocessConfig(catalogue="all"))
        assert "toy: 2 items without kept interactions are ranked too, by their text" in caplog.messages
    # The items with interactions keep their indices; the new items with text follow; an item without text is out.
    assert d.items["item_id"] == ["b", "d", "a", "e"] and d.items["text"][2:] == ["new a", "new e"]
    assert histories(d) == {"u": ["b", "d", "b"]} and d.num_items == 4
    with pytest.raises(ValueError, match="catalogue is 'interactions' or 'all'"):
        PreprocessConfig(catalogue="every")


def test_text_template_and_default():
    rows = [("u", "a", 0), ("u", "b", 1), ("u", "c", 2)]
    assert preprocess(raw(rows)).texts()[0] == "title of a brand of a"
    d = preprocess(raw(rows), PreprocessConfig(text_template="{brand}! {title}"))
    assert d.texts()[0] == "brand of a! title of a"
    with pytest.raises(DataFormatError, match="colour"):
        preprocess(raw(rows), PreprocessConfig(text_template="{colour}"))


def test_items_without_text_is_an_error():
    rows = [("u", "a", 0), ("u", "b", 1), ("u", "zz", 2)]
    items = {"item_id": ["a", "b"], "title": ["A", "B"], "brand": ["", ""]}
    with pytest.raises(DataFormatError, match=r"toy.inter.*'zz' \(data row 3 of the interactions"):
        preprocess(raw(rows, items))


def test_empty_after_filtering_is_an_error():
    with pytest.raises(DataFormatError, match="empty after filtering"):
        preprocess(raw([("u", "a", 0), ("u", "b", 1), ("u", "c", 2)]), PreprocessConfig(kcore=5))


def test_save_load_roundtrip(tmp_path, tiny_domain):
    tiny_domain.save(tmp_path / "d")
    back = Domain.load(tmp_path / "d")
    assert back.counts == tiny_domain.counts
    np.testing.assert_array_equal(back.flat()[1], tiny_domain.flat()[1])


def test_leave_one_out_views():
    offsets = np.array([0, 5, 8])
    values = np.array([1, 2, 3, 4, 5, 6, 7, 8], dtype=np.int32)
    test = SequenceView("d", offsets, values, "test", max_len=10)
    valid = SequenceView("d", offsets, values, "valid", max_len=10)
    train = SequenceView("d", offsets, values, "train", max_len=10)
    assert test[0][2].tolist() == [1, 2, 3, 4] and test[0][3] == 5
    assert valid[0][2].tolist() == [1, 2, 3] and valid[0][3] == 4
    _, _, x, y = train[0]
    assert x.tolist() == [1, 2] and y.tolist() == [2, 3]  # never sees valid/test items
    assert len(train) == 1  # user 2 (3 items) has no training pair
    assert test[1][2].tolist() == [6, 7] and test[1][3] == 8
    windows = SequenceView("d", np.array([0, 8]), values, "train", max_len=2)
    assert [(w[2].tolist(), w[3].tolist()) for w in windows] == [([4, 5], [5, 6]), ([2, 3], [3, 4]), ([1], [2])]
    # Overlapping windows (stride 1): each window trains only its last target, which sees max_len items.
    strided = SequenceView("d", np.array([0, 8]), values, "train", max_len=2, stride=1)
    expected = [([4, 5], [0, 6]), ([3, 4], [0, 5]), ([2, 3], [0, 4]), ([1, 2], [2, 3])]
    assert [(w[2].tolist(), w[3].tolist()) for w in strided] == expected
    with pytest.raises(ValueError, match="stride"):
        SequenceView("d", offsets, values, "train", max_len=2, stride=3)
    short = SequenceView("d", offsets, values, "test", max_len=2)
    assert short[0][2].tolist() == [3, 4]  # latest max_len items
    batch = collate([test[0], test[1]])
    assert batch["input"].tolist() == [[1, 2, 3, 4], [6, 7, 0, 0]]  # right padding
    assert batch["target"].tolist() == [5, 8]


@pytest.mark.parametrize("stride", [1, 3, 7, 10])
def test_training_windows_train_every_target_once_with_context(stride):
    """Random histories: every target s_2 … s_{n-2} trained exactly once, each past the first max_len with
    at least max_len - stride items before it in its window; stride = max_len is the non-overlapping cut."""
    rng = np.random.default_rng(stride)
    lengths = rng.integers(1, 60, size=40)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    values = np.arange(1, offsets[-1] + 1)  # item = global position + 1: a target tells where it sits
    view = SequenceView("d", offsets, values, "train", max_len=10, stride=stride)
    trained = []
    for _, u, x, y in (view[i] for i in range(len(view))):
        assert len(x) == len(y) <= 10 and np.array_equal(y[y > 0] - 1, x[y > 0])  # next item, same place
        for t in np.flatnonzero(y):
            context = t + 1  # items of the window up to and including the input before the target
            position = y[t] - 1 - offsets[u]  # the target's index in its user's history
            assert context >= min(position, 10 - stride + 1)
        trained += y[y > 0].tolist()
    expected = [v for u in range(len(lengths)) for v in values[offsets[u] + 1 : offsets[u + 1] - 2]]
    assert sorted(trained) == sorted(expected)
    if stride == 10:
        plain = SequenceView("d", offsets, values, "train", max_len=10)
        assert len(plain) == len(view) and all(np.array_equal(plain[i][3], view[i][3]) for i in range(len(view)))
