"""DomainDataModule, TransferDataModule and DomainBatchSampler on small SYNTHETIC domains (fast, no real data)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from cli_helpers import shop_with_new_items

import rec_transfer.data.batching as batching
import rec_transfer.data.datamodule as datamodule
from rec_transfer.callbacks import DomainTransfer
from rec_transfer.data import DomainDataModule, TransferDataModule
from rec_transfer.data.batching import DomainBatchSampler
from rec_transfer.data.datamodule import make_train_loader
from rec_transfer.data.errors import DataFormatError
from rec_transfer.data.synthetic import synthetic_domain
from rec_transfer.text.models import UnknownTextModel

SIZE = {"num_users": 50, "num_items": 30}
MAX_LEN = 6  # shorter than most synthetic histories, so truncation is exercised


def make(cache: Path, name: str = "books", **kwargs) -> DomainDataModule:
    args = {"synthetic": SIZE, "cache_dir": str(cache), "batch_size": 8, "eval_batch_size": 16, "max_len": MAX_LEN,
            "text_encoder": None}  # fmt: skip
    dm = DomainDataModule(f"synthetic:{name}", **{**args, **kwargs})
    dm.prepare_data()
    dm.setup()
    return dm


def as_lists(loader) -> list[dict]:
    return [{k: v.tolist() if isinstance(v, torch.Tensor) else v for k, v in b.items()} for b in loader]


def histories(dm: DomainDataModule) -> list[list[int]]:
    assert dm.domain is not None
    offsets, values = dm.domain.flat()
    return [values[offsets[u] : offsets[u + 1]].tolist() for u in range(len(offsets) - 1)]


@pytest.fixture
def books(tmp_path: Path) -> DomainDataModule:
    """One history per row (``pack`` off), so the layout of each row can be read directly."""
    return make(tmp_path, pack=False)


def unpack(batch: dict) -> list[tuple[int, list[int], list[int] | int]]:
    """(user, input, target) of each history in a packed batch, read back through ``segments``."""
    rows = []
    for i, user in enumerate(batch["user"].tolist()):
        where = batch["segments"] == i + 1
        inp = batch["input"][where].tolist()
        assert batch["positions"][where].tolist() == list(range(len(inp)))  # positions restart per history
        if batch["target"].ndim == 2:
            rows.append((user, [x for x in inp if x], batch["target"][where].tolist()))
        else:
            assert int(where.flatten().nonzero()[-1]) == int(batch["last"][i])  # last token of the history
            rows.append((user, [x for x in inp if x], int(batch["target"][i])))
    return rows


def test_packed_batches_hold_the_same_histories(tmp_path: Path) -> None:
    plain, packed = make(tmp_path, pack=False), make(tmp_path, pack=True)

    def unpadded(batch: dict) -> list:
        out = []
        for user, inp, tgt in zip(batch["user"].tolist(), batch["input"], batch["target"], strict=True):
            n = max(1, int((inp != 0).sum()))
            tgt = tgt[:n].tolist() if tgt.ndim else int(tgt)
            out.append((user, [x for x in inp[:n].tolist() if x], tgt))
        return out

    for get in ("train_dataloader", "val_dataloader", "test_dataloader", "predict_dataloader"):
        pairs = list(zip(getattr(plain, get)(), getattr(packed, get)(), strict=True))
        for a, b in pairs:
            assert unpack(b) == unpadded(a)
        if get == "train_dataloader":  # short windows (a history's oldest) share rows; eval histories fill theirs
            assert sum(len(b["input"]) for _, b in pairs) < sum(len(a["input"]) for a, _ in pairs)
        assert all(b["input"].shape[1] <= MAX_LEN for _, b in pairs)


def test_synthetic_source_is_labelled(books: DomainDataModule) -> None:
    assert synthetic_domain("books", **SIZE).source.startswith("synthetic")
    assert books._read_raw().source.startswith("synthetic")
    assert books.domain is not None and books.domain.num_users == 50


def test_train_batches_shift_by_one_with_right_padding(books: DomainDataModule) -> None:
    hist = histories(books)
    seen = []
    for batch in books.train_dataloader():
        assert batch["domain"] == "books"
        assert batch["input"].shape == batch["target"].shape and batch["input"].shape[1] <= MAX_LEN
        for user, inp, tgt in zip(batch["user"].tolist(), batch["input"], batch["target"], strict=True):
            n = int((inp != 0).sum())
            assert n >= 1 and torch.all(inp[:n] != 0) and torch.all(inp[n:] == 0)  # padding on the right only
            assert torch.all(tgt[:n] != 0) and torch.all(tgt[n:] == 0)
            assert torch.equal(inp[1:n], tgt[: n - 1])  # target = input shifted by one
            window = [*inp[:n].tolist(), int(tgt[n - 1])]
            train = hist[user][:-2]
            assert any(train[i : i + len(window)] == window for i in range(len(train)))  # a slice of train items
            seen.append((user, tgt[:n].tolist()))
    # Windows tile each user's training targets exactly once (long histories give several windows).
    targets: dict[int, list[int]] = {}
    for user, tgts in seen:
        targets.setdefault(user, []).extend(tgts)
    assert sorted(targets) == [u for u, h in enumerate(hist) if len(h) >= 4]
    for user, tgts in targets.items():
        assert sorted(tgts) == sorted(hist[user][1:-2])


@pytest.mark.parametrize("split", ["valid", "test"])
def test_eval_batches_hold_history_and_target(books: DomainDataModule, split: str) -> None:
    hist = histories(books)
    loader = books.val_dataloader() if split == "valid" else books.test_dataloader()
    users = []
    for batch in loader:
        assert batch["domain"] == "books" and batch["target"].shape == batch["user"].shape
        for user, inp, tgt in zip(batch["user"].tolist(), batch["input"], batch["target"].tolist(), strict=True):
            n = int((inp != 0).sum())
            assert torch.all(inp[n:] == 0)
            cut = 2 if split == "valid" else 1  # valid predicts the second to last item, test the last
            assert inp[:n].tolist() == hist[user][:-cut][-MAX_LEN:]
            assert tgt == hist[user][-cut]
            users.append(user)
    assert users == list(range(len(hist)))  # every user once, in order


def test_same_seed_and_epoch_same_batches_other_epoch_other_order(tmp_path: Path) -> None:
    a, b = make(tmp_path / "a", seed=3), make(tmp_path / "b", seed=3)
    first = as_lists(a.train_dataloader())
    assert first == as_lists(b.train_dataloader())
    assert first == as_lists(make_train_loader([b], 0))
    other = as_lists(make_train_loader([a], 1))
    assert [x["user"] for x in other] != [x["user"] for x in first]
    assert sorted(u for x in other for u in x["user"]) == sorted(u for x in first for u in x["user"])


def test_workers_give_the_same_batches(tmp_path: Path) -> None:
    serial, parallel = make(tmp_path, num_workers=0), make(tmp_path, num_workers=2)
    assert as_lists(parallel.train_dataloader()) == as_lists(serial.train_dataloader())
    assert as_lists(parallel.val_dataloader()) == as_lists(serial.val_dataloader())


def test_second_prepare_reuses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = make(tmp_path)

    def fail(*args, **kwargs):
        raise AssertionError("the cached domain should have been reused")

    monkeypatch.setattr(datamodule, "preprocess", fail)
    monkeypatch.setattr(datamodule, "synthetic_domain", fail)
    again = make(tmp_path)
    assert again.domain is not None and first.domain is not None
    assert again.domain.counts == first.domain.counts
    assert np.array_equal(again.domain.flat()[1], first.domain.flat()[1])
    with pytest.raises(AssertionError, match="reused"):
        make(tmp_path, max_history=20)  # a different preprocessing is a different cache entry


def test_transfer_mixes_source_batches_one_domain_each(tmp_path: Path) -> None:
    sources = [make(tmp_path, "books"), make(tmp_path, "toys")]
    target = make(tmp_path, "posters")
    transfer = TransferDataModule(target=target, sources=sources)
    transfer.prepare_data()
    transfer.setup()
    assert transfer.trainer is None
    # Without a DomainTransfer callback (here: no trainer at all) it trains on the target alone.
    assert {b["domain"] for b in transfer.train_dataloader()} == {"posters"}

    domains, users = [], {"books": [], "toys": []}
    for batch in make_train_loader(transfer.sources, 0):
        domains.append(batch["domain"])
        users[batch["domain"]] += batch["user"].tolist()
    assert set(domains) == {"books", "toys"}
    switches = sum(x != y for x, y in zip(domains, domains[1:], strict=False))
    assert switches > 1, f"source batches are not mixed: {domains}"
    for m in sources:  # every training user of each source exactly once, indices local to its own domain
        assert sorted(users[m.name]) == sorted(m.view("train").users.tolist())


def test_joint_mixes_the_targets_training_histories_into_the_source_phase(tmp_path: Path) -> None:
    target = make(tmp_path, "posters")
    schedule = DomainTransfer(source_epochs=1)
    for joint, expected in ((False, {"books"}), (True, {"books", "posters"})):
        transfer = TransferDataModule(target=target, sources=[make(tmp_path, "books")], joint=joint)
        transfer.prepare_data()
        transfer.setup()
        transfer.trainer = SimpleNamespace(callbacks=[schedule], current_epoch=0)  # epoch 0: the source phase
        users = {}
        for batch in transfer.train_dataloader():
            users.setdefault(batch["domain"], []).extend(batch["user"].tolist())
        assert set(users) == expected
        if joint:  # each of the target's training histories once
            assert sorted(users["posters"]) == sorted(target.view("train").users.tolist())
        transfer.trainer.current_epoch = 1  # the target phase: the target alone, as without joint
        assert {b["domain"] for b in transfer.train_dataloader()} == {"posters"}


def test_rehearsal_adds_source_batches_to_each_target_epoch(tmp_path: Path) -> None:
    target = make(tmp_path, "posters", batch_size=4)
    sources = [make(tmp_path, "books", batch_size=4), make(tmp_path, "toys", batch_size=8)]
    schedule = DomainTransfer(source_epochs=1)

    def target_epoch(rehearsal: float, callbacks: list) -> dict[str, list[list[int]]]:
        transfer = TransferDataModule(target=target, sources=sources, rehearsal=rehearsal, source_mixing=0.0)
        transfer.prepare_data()
        transfer.setup()
        transfer.trainer = SimpleNamespace(callbacks=callbacks, current_epoch=1)  # epoch 1: the target phase
        batches: dict[str, list[list[int]]] = {}
        for batch in transfer.train_dataloader():
            batches.setdefault(batch["domain"], []).append(batch["user"].tolist())
        return batches

    alone, rehearsed = target_epoch(0.0, [schedule]), target_epoch(0.5, [schedule])
    assert set(alone) == {"posters"} and set(rehearsed) == {"posters", "books", "toys"}
    # The target's batches are the same rows as without rehearsal; the sources add half as many, shared evenly.
    assert sorted(rehearsed["posters"]) == sorted(alone["posters"])
    extra = round(0.5 * len(alone["posters"]))
    assert sorted(len(rehearsed[s]) for s in ("books", "toys")) == [extra // 2, extra - extra // 2]
    assert set(target_epoch(0.5, [])) == {"posters"}  # without a transfer schedule: the target alone
    with pytest.raises(ValueError, match="rehearsal must be >= 0"):
        TransferDataModule(target=target, sources=sources, rehearsal=-1)


@pytest.mark.parametrize("sizes", [[10, 5], [13, 7, 3]])
def test_batch_sampler_under_two_ranks(monkeypatch: pytest.MonkeyPatch, sizes: list[int]) -> None:
    bounds = np.cumsum([0, *sizes])
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setattr(batching, "dist_info", lambda rank=rank: (rank, 2))
        lengths = [np.random.default_rng(s).integers(1, 50, s) for s in sizes]
        sampler = DomainBatchSampler(lengths, batch_size=4, seed=7, epoch=2, pool_batches=2)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        for b in batches:  # one domain per batch
            assert len({int(np.searchsorted(bounds, i, side="right")) for i in b}) == 1
        per_rank.append(batches)
    # Each step's batch is split between the ranks: the steps of one process, but a last batch of one row, which
    # joins the batch before it so that both ranks get rows.
    n_steps = sum(-(-s // 4) - (s % 4 == 1 and s > 4) for s in sizes)
    assert len(per_rank[0]) == len(per_rank[1]) == n_steps
    assert all(a and b for a, b in zip(*per_rank, strict=True))
    rows = sorted(i for batches in per_rank for b in batches for i in b)
    assert rows == list(range(sum(sizes)))  # every row once: no batch repeated to even out the ranks


def test_batch_sampler_groups_similar_lengths() -> None:
    lengths = np.random.default_rng(0).integers(1, 51, 1000)
    padded = {}
    for pool in (1, 50):
        batches = list(DomainBatchSampler([lengths], batch_size=32, seed=0, pool_batches=pool))
        assert sorted(i for b in batches for i in b) == list(range(1000))
        padded[pool] = sum(len(b) * lengths[b].max() for b in batches)
    assert padded[50] < 0.7 * padded[1]  # far less padding than random batches


def test_pack_rows_places_every_sequence_without_overlap() -> None:
    lengths = np.random.default_rng(0).integers(1, 51, 500)
    row, offset = batching.pack_rows(lengths, 50)
    used = np.zeros((row.max() + 1, 50), dtype=int)
    for r, o, n in zip(row, offset, lengths, strict=True):
        used[r, o : o + n] += 1
    assert used.max() == 1 and used.sum() == lengths.sum()  # every token once, none outside its row
    assert row.max() + 1 <= np.ceil(lengths.sum() / 50) * 1.1  # first-fit decreasing: few rows beyond the bound
    with pytest.raises(ValueError, match="does not fit"):
        batching.pack_rows(np.array([3, 51]), 50)


def test_length_pool_reaches_the_train_loader(tmp_path: Path) -> None:
    def padding(dm: DomainDataModule) -> int:
        return sum(int((b["target"] == 0).sum()) for b in make_train_loader([dm], epoch=0))

    sorted_dm = make(tmp_path, batch_size=4, length_pool=50, pack=False)
    random_dm = make(tmp_path, batch_size=4, pack=False)
    assert make_train_loader([random_dm], epoch=0).batch_sampler.pool_batches == [1]  # the default
    assert padding(random_dm) > padding(sorted_dm)
    with pytest.raises(ValueError, match="length_pool"):
        DomainDataModule("synthetic:books", length_pool=0)


def test_train_stride_reaches_the_train_loader(tmp_path: Path) -> None:
    """Overlapping windows: more rows, the same trained targets (a smaller stride only adds context)."""

    def targets(dm: DomainDataModule) -> tuple[int, list[int]]:
        batches = list(make_train_loader([dm], epoch=0))
        return sum(len(b["user"]) for b in batches), sorted(
            t for b in batches for t in b["target"][b["target"] > 0].tolist()
        )

    plain_rows, plain = targets(make(tmp_path, max_history=None))
    strided_rows, strided = targets(make(tmp_path, max_history=None, train_stride=2))
    assert strided == plain and strided_rows > plain_rows
    with pytest.raises(ValueError, match="train_stride"):
        DomainDataModule("synthetic:books", max_len=10, train_stride=11)


def test_train_users_trains_on_a_fixed_sample_and_evaluates_everyone(tmp_path: Path) -> None:
    """A data-poor domain: the training rows come from a seeded fifth of the users, every user is still tested."""
    full, small = make(tmp_path, max_history=None), make(tmp_path, max_history=None, train_users=0.2)
    trained = {u for b in make_train_loader([small], epoch=0) for u in b["user"].tolist()}
    assert len(trained) == round(0.2 * SIZE["num_users"])
    assert trained == set(np.flatnonzero(small._training_users()).tolist())  # the same sample every time it is drawn
    for split in ("valid", "test"):
        assert small.view(split).users.tolist() == full.view(split).users.tolist()
    assert set(make(tmp_path, train_users=0.2, seed=1)._training_users().nonzero()[0]) != trained  # seed draws it
    # The popularity the sampled loss corrects for counts the trained histories only.
    counts = np.zeros(small.num_items + 1)
    for u, h in enumerate(histories(small)):
        if u in trained:
            np.add.at(counts, h[1:-2], 1)
    assert small.item_train_counts.tolist() == counts.tolist()
    assert np.allclose(small.item_popularity.numpy(), counts / counts.sum())
    with pytest.raises(ValueError, match="train_users"):
        DomainDataModule("synthetic:books", train_users=0)


def test_setup_without_prepare_data_says_so(tmp_path: Path) -> None:
    dm = DomainDataModule(
        "synthetic:books", synthetic={"num_users": 20, "num_items": 10}, cache_dir=str(tmp_path), text_encoder=None
    )
    with pytest.raises(FileNotFoundError, match="prepare_data"):
        dm.setup()


def test_each_source_keeps_its_own_batch_size_and_length_pool(tmp_path: Path) -> None:
    books = make(tmp_path, "books", batch_size=4, pack=False)
    toys = make(tmp_path, "toys", batch_size=16, length_pool=4, pack=False)
    loader = make_train_loader([books, toys], epoch=0)
    assert loader.batch_sampler.batch_sizes == [4, 16] and loader.batch_sampler.pool_batches == [1, 4]
    sizes: dict[str, list[int]] = {"books": [], "toys": []}
    for batch in loader:
        sizes[batch["domain"]].append(len(batch["user"]))
    assert len(sizes["books"]) + len(sizes["toys"]) == len(loader)
    for dm, size, pool in ((books, 4, 1), (toys, 16, 4)):
        rows, got = len(dm.view("train")), sizes[dm.name]
        assert sum(got) == rows and max(got) == size  # every row once, in batches of the domain's own size
        assert sum(n < size for n in got) <= -(-rows // (size * pool))  # at most one short batch per pool


@pytest.mark.parametrize(("key", "a", "b"), [("seed", 0, 1), ("pack", True, False), ("num_workers", 0, 1)])
def test_loader_wide_settings_that_differ_between_sources_are_refused(tmp_path: Path, key, a, b) -> None:
    def domain(name: str, value) -> DomainDataModule:
        return DomainDataModule(f"synthetic:{name}", cache_dir=str(tmp_path), text_encoder=None, **{key: value})

    target = domain("posters", a)
    expected = rf"{key} differs between domains \(books: {a!r}, toys: {b!r}\): one training loader serves"
    with pytest.raises(ValueError, match=expected):
        TransferDataModule(target=target, sources=[domain("books", a), domain("toys", b)])
    # The target trains alone after the switch: its own value is fine, unless the sources are rehearsed with it.
    TransferDataModule(target=domain("posters", b), sources=[domain("books", a), domain("toys", a)])
    with pytest.raises(ValueError, match=rf"{key} differs between domains"):
        TransferDataModule(target=domain("posters", b), sources=[domain("books", a)], rehearsal=0.5)


def test_text_widths_must_match_across_domains(tmp_path: Path) -> None:
    sources = [make(tmp_path, "books"), make(tmp_path, "toys")]
    target = make(tmp_path, "posters")
    for dm, width in ((sources[0], 8), (sources[1], 8), (target, 12)):
        dm.item_vectors = torch.zeros(dm.num_items + 1, width)
    with pytest.raises(
        ValueError, match=r"width of item text vectors differs between domains \(books: 8, toys: 8, posters: 12\)"
    ):
        TransferDataModule(target=target, sources=sources).setup()


@pytest.mark.parametrize("mixing", [0.0, 0.5, 1.0])
def test_source_mixing_shares_the_epoch_among_domains(mixing):
    lengths = [np.full(n, 3) for n in (400, 40, 8)]  # 50, 5 and 1 batches of 8
    sampler = DomainBatchSampler(lengths, 8, seed=1, mixing=mixing)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 56  # the epoch keeps its length
    domain = [0 if b[0] < 400 else 1 if b[0] < 440 else 2 for b in batches]
    counts = [domain.count(d) for d in range(3)]
    if mixing == 1.0:
        assert counts == [50, 5, 1]
    elif mixing == 0.0:
        assert max(counts) - min(counts) <= 1  # as many batches from each domain
    else:
        assert counts[0] > counts[1] > counts[2] and counts[0] < 50
    assert all(len(set(b)) == len(b) for b in batches)
    assert list(DomainBatchSampler(lengths, 8, seed=1, mixing=mixing)) == batches  # deterministic


def test_a_mistyped_domain_folder_or_text_model_fails_before_any_domain_is_read(tmp_path: Path, monkeypatch) -> None:
    def read(self) -> None:
        raise AssertionError(f"{self.name} was read before every folder was checked")

    monkeypatch.setattr(DomainDataModule, "prepare_data", read)
    source = {"path": "synthetic:books", "synthetic": SIZE, "cache_dir": str(tmp_path), "text_encoder": None}
    dm = TransferDataModule(target={"path": "postres", "text_encoder": None}, sources=[source], data_root=tmp_path)
    with pytest.raises(DataFormatError, match=r"postres: expected a folder holding a domain's files; it does not"):
        dm.prepare_data()
    target = {"path": "synthetic:posters", "synthetic": SIZE, "text_encoder": {"model_name": "./no/such/model"}}
    dm = TransferDataModule(target=target, sources=[source])
    with pytest.raises(UnknownTextModel, match=r"^text model './no/such/model': no such local file"):
        dm.prepare_data()


def test_items_that_all_have_the_same_text_are_an_error(tmp_path: Path) -> None:
    folder = tmp_path / "posters"
    folder.mkdir()
    rows = [f"u{u}\ti{(u + t) % 5}\t{t}" for u in range(4) for t in range(4)]
    (folder / "posters.inter").write_text("\n".join(["user_id:token\titem_id:token\ttimestamp:float", *rows]) + "\n")
    (folder / "posters.item").write_text("\n".join(["item_id:token\ttitle:token_seq", *(f"i{i}\t" for i in range(5))]))
    dm = DomainDataModule(str(folder), cache_dir=str(tmp_path / "cache"))  # the default text encoder
    dm.prepare_data()
    with pytest.raises(DataFormatError, match=r"posters: every item's text is '': a text model cannot tell the items"):
        dm.setup()
    ids = DomainDataModule(str(folder), cache_dir=str(tmp_path / "cache"), text_encoder=None)  # an ID model reads none
    ids.prepare_data()
    ids.setup()
    assert ids.domain is not None and ids.domain.num_items == 5


def test_items_ranked_by_their_text_alone_do_not_move_the_others(tmp_path: Path) -> None:
    # Centring is fitted on the items with interactions: a model trained on those sees the same vectors for them
    # when catalogue: all adds new items at serving time.
    shop = shop_with_new_items(tmp_path / "shop")
    vectors = {}
    for catalogue in ("interactions", "all"):
        dm = DomainDataModule(str(shop), catalogue=catalogue, cache_dir=str(tmp_path / "cache"))
        dm.prepare_data()
        dm.setup("fit")
        vectors[catalogue] = dm.item_vectors
    assert len(vectors["all"]) == len(vectors["interactions"]) + 2  # row 0 is padding
    torch.testing.assert_close(vectors["all"][:7], vectors["interactions"])
    assert vectors["interactions"][1:].mean(dim=0).abs().max() < 1e-5  # still centred on them
