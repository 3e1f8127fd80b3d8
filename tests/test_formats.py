"""Tests for the domain readers in rec_transfer.data.formats (tiny files written to tmp_path)."""

from __future__ import annotations

import gzip
import json
import logging
import os
from pathlib import Path

import pytest

from rec_transfer.data.errors import DataFormatError
from rec_transfer.data.formats import read_amazon, read_domain, read_recbole, read_unisrec

SCIENTIFIC = Path("/work/shared/data/amazon/Scientific")


def write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list[dict], compress: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def rows(ds) -> list[tuple]:
    return [tuple(r.values()) for r in ds]


def assert_error(exc: pytest.ExceptionInfo, path: Path, line: int | None, *fragments: str) -> None:
    err = exc.value
    assert isinstance(err, DataFormatError)
    assert path.name in str(err)
    if line is not None:
        assert err.line == line and f"{path.name}:{line}:" in str(err)
    for fragment in fragments:
        assert fragment in str(err)


def recbole(folder: Path, inter: list[str], item: list[str] | None = None) -> Path:
    write(folder / f"{folder.name}.inter", inter)
    write(folder / f"{folder.name}.item", item or ["item_id:token\ttext:token_seq", "a\tA", "b\tB"])
    return folder


# ---------------------------------------------------------------- RecBole


def test_recbole_with_timestamp_extra_columns_and_multi_field_items(tmp_path: Path) -> None:
    folder = recbole(
        tmp_path / "ml",
        ["user_id:token\titem_id:token\trating:float\ttimestamp:float", "196\t242\t3\t881250949", "7\t1\t5\t12.5"],
        [
            "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\tscore:float",
            '242\tKolya "the" film, 1996\t1996\tComedy\t0.5',
            "1\tToy Story\t1995\tAnimation Comedy\t0.1",
        ],
    )
    domain = read_recbole(folder, cache_dir=tmp_path / "cache")
    assert domain.name == "ml"
    assert list(domain.interactions.features) == ["user_id", "item_id", "timestamp"]
    assert domain.interactions.features["timestamp"].dtype == "float64"
    assert rows(domain.interactions) == [("196", "242", 881250949.0), ("7", "1", 12.5)]
    assert domain.text_fields == ["movie_title", "release_year", "class"]
    assert list(domain.items.features) == ["item_id", "movie_title", "release_year", "class"]
    assert domain.items[0] == {
        "item_id": "242",
        "movie_title": 'Kolya "the" film, 1996',
        "release_year": "1996",
        "class": "Comedy",
    }
    assert domain.counts == {"duplicate_item_rows": 0}


def test_recbole_without_timestamp_uses_position_per_user(tmp_path: Path, caplog) -> None:
    folder = recbole(tmp_path / "d", ["user_id:token\titem_id:token", "u1\ta", "u2\tb", "u1\tb", "u1\ta", "u2\ta"])
    with caplog.at_level(logging.INFO, logger="rec_transfer.data.readers"):
        domain = read_recbole(folder, cache_dir=tmp_path / "cache")
    assert [r["timestamp"] for r in domain.interactions] == [0.0, 0.0, 1.0, 2.0, 1.0]
    assert "no timestamp" in caplog.text


def test_recbole_duplicate_items_counted_and_cache_reused_then_invalidated(tmp_path: Path) -> None:
    folder = recbole(
        tmp_path / "d",
        ["user_id:token\titem_id:token\ttimestamp:float", "u\ta\t1"],
        ["item_id:token\ttext:token_seq", "a\tfirst", "a\tsecond", "b\tB"],
    )
    first = read_recbole(folder, cache_dir=tmp_path / "cache")
    again = read_recbole(folder, cache_dir=tmp_path / "cache")
    assert first.counts == again.counts == {"duplicate_item_rows": 1}
    assert again.items.cache_files == first.items.cache_files
    assert rows(again.items) == [("a", "first"), ("b", "B")]

    inter = folder / "d.inter"
    write(inter, ["user_id:token\titem_id:token\ttimestamp:float", "u\tb\t2"])
    os.utime(inter, ns=(inter.stat().st_atime_ns, inter.stat().st_mtime_ns + 10**9))
    changed = read_recbole(folder, cache_dir=tmp_path / "cache")
    assert rows(changed.interactions) == [("u", "b", 2.0)]


def test_recbole_missing_file_lists_folder(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    write(folder / "d.inter", ["user_id:token\titem_id:token", "u\ta"])
    write(folder / "other.item", ["item_id:token\ttext:token_seq", "a\tA"])
    with pytest.raises(DataFormatError) as exc:
        read_recbole(folder, cache_dir=tmp_path / "cache")
    assert_error(exc, folder / "d.item", None, "not found", "d.inter", "other.item")


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        ("item_id:token\ttimestamp:float", "no user_id field"),
        ("user_id:token\titem_id:float\ttimestamp:float", "item_id has type float, not token"),
        ("user_id:token\titem_id:token\ttimestamp:token", "timestamp has type token, not float"),
        ("user_id\titem_id:token", "not field:type"),
    ],
)
def test_recbole_bad_header(tmp_path: Path, header: str, fragment: str) -> None:
    folder = recbole(tmp_path / "d", [header, "u\ta\t1"])
    with pytest.raises(DataFormatError) as exc:
        read_recbole(folder, cache_dir=tmp_path / "cache")
    assert_error(exc, folder / "d.inter", 1, fragment)
    if "field:type" not in fragment:
        assert "expected user_id:token, item_id:token" in str(exc.value)


def test_recbole_malformed_row(tmp_path: Path) -> None:
    folder = recbole(tmp_path / "d", ["user_id:token\titem_id:token\ttimestamp:float", "u\ta\t1", "u\tb"])
    with pytest.raises(DataFormatError) as exc:
        read_recbole(folder, cache_dir=tmp_path / "cache")
    assert_error(exc, folder / "d.inter", 3, "expected 3 fields, got 2")


def test_recbole_malformed_item_row(tmp_path: Path) -> None:
    folder = recbole(
        tmp_path / "d", ["user_id:token\titem_id:token", "u\ta"], ["item_id:token\ttext:token_seq", "a\tA\textra"]
    )
    with pytest.raises(DataFormatError) as exc:
        read_recbole(folder, cache_dir=tmp_path / "cache")
    assert_error(exc, folder / "d.item", 2, "expected 2 fields, got 3")


def test_recbole_non_numeric_timestamp(tmp_path: Path) -> None:
    folder = recbole(tmp_path / "d", ["user_id:token\titem_id:token\ttimestamp:float", "u\ta\t1", "u\tb\tyesterday"])
    with pytest.raises(DataFormatError) as exc:
        read_recbole(folder, cache_dir=tmp_path / "cache")
    assert_error(exc, folder / "d.inter", 3, "'yesterday'")


def test_recbole_empty_file_and_header_only(tmp_path: Path) -> None:
    folder = recbole(tmp_path / "d", [])
    (folder / "d.inter").write_bytes(b"")
    with pytest.raises(DataFormatError) as exc:
        read_recbole(folder, cache_dir=tmp_path / "cache")
    assert_error(exc, folder / "d.inter", 1, "empty")

    write(folder / "d.inter", ["user_id:token\titem_id:token"])
    with pytest.raises(DataFormatError) as exc:
        read_recbole(folder, cache_dir=tmp_path / "cache")
    assert_error(exc, folder / "d.inter", 2, "no data rows")


# ---------------------------------------------------------------- UniSRec


def unisrec(folder: Path, train: list[str], valid: list[str], test: list[str]) -> Path:
    header = "user_id:token\titem_id_list:token_seq\titem_id:token"
    for split, lines in (("train", train), ("valid", valid), ("test", test)):
        write(folder / f"{folder.name}.{split}.inter", [header, *lines])
    write(folder / f"{folder.name}.text", ["item_id:token\ttext:token_seq", "1\tone", "2\ttwo", "3\tthree", "4\tfour"])
    return folder


def test_unisrec_sequences_from_test_rows(tmp_path: Path) -> None:
    folder = unisrec(
        tmp_path / "Sci",
        ["1\t1\t2", "2\t3\t4", "3\t1\t3", "3\t1 3\t4"],
        ["1\t1 2\t3", "2\t3 4\t1"],
        ["1\t1 2 3\t4", "2\t3 4 1\t2"],
    )
    domain = read_unisrec(folder, cache_dir=tmp_path / "cache")
    assert rows(domain.interactions) == [
        ("1", "1", 0.0), ("1", "2", 1.0), ("1", "3", 2.0), ("1", "4", 3.0),
        ("2", "3", 0.0), ("2", "4", 1.0), ("2", "1", 2.0), ("2", "2", 3.0),
        ("3", "1", 0.0), ("3", "3", 1.0), ("3", "4", 2.0),
    ]  # fmt: skip
    assert domain.text_fields == ["text"]
    assert rows(domain.items)[:2] == [("1", "one"), ("2", "two")]


def test_unisrec_accepts_truncated_histories(tmp_path: Path) -> None:
    # Histories cut to the last 2 items: valid "1 2 -> 3", test "2 3 -> 4".
    folder = unisrec(tmp_path / "Sci", ["1\t1\t2"], ["1\t1 2\t3"], ["1\t2 3\t4"])
    domain = read_unisrec(folder, cache_dir=tmp_path / "cache")
    assert [r["item_id"] for r in domain.interactions] == ["2", "3", "4"]


def test_unisrec_valid_row_contradicting_test_row(tmp_path: Path) -> None:
    folder = unisrec(tmp_path / "Sci", ["1\t1\t2"], ["9\t1 2\t3", "1\t1 4\t3"], ["9\t1 2 3\t4", "1\t1 2 3\t4"])
    with pytest.raises(DataFormatError) as exc:
        read_unisrec(folder, cache_dir=tmp_path / "cache")
    assert_error(exc, folder / "Sci.valid.inter", 3, "prefix")


def test_unisrec_missing_text_file(tmp_path: Path) -> None:
    folder = unisrec(tmp_path / "Sci", ["1\t1\t2"], ["1\t1 2\t3"], ["1\t1 2 3\t4"])
    (folder / "Sci.text").unlink()
    with pytest.raises(DataFormatError) as exc:
        read_unisrec(folder, cache_dir=tmp_path / "cache")
    assert_error(exc, folder / "Sci.text", None, "not found", "Sci.train.inter")


# ---------------------------------------------------------------- Amazon

META_2018 = [
    {"asin": "A1", "title": "Game <b>One</b> &amp; more", "category": ["Video Games", "PC"], "brand": "Acme",
     "description": ["<p>Fun.</p>", "Really fun."]},
    {"asin": "A2", "title": "Game Two", "category": [], "description": "Plain"},
    {"asin": "A1", "title": "Duplicate"},
]  # fmt: skip
REVIEWS_2018 = [
    {"reviewerID": "U1", "asin": "A1", "unixReviewTime": 100, "overall": 5.0},
    {"reviewerID": "U1", "asin": "NOMETA", "unixReviewTime": 150},
    {"reviewerID": "U2", "asin": "A2", "unixReviewTime": 200},
]


@pytest.mark.parametrize("compress", [False, True])
def test_amazon_2018(tmp_path: Path, compress: bool, caplog) -> None:
    suffix = ".json.gz" if compress else ".json"
    reviews = write_jsonl(tmp_path / f"Games_5{suffix}", REVIEWS_2018, compress)
    meta = write_jsonl(tmp_path / f"meta_Games{suffix}", META_2018, compress)
    with caplog.at_level(logging.WARNING, logger="rec_transfer.data.readers"):
        domain = read_amazon(reviews, meta, cache_dir=tmp_path / "cache")
    assert domain.name == "Games_5"
    assert rows(domain.interactions) == [("U1", "A1", 100.0), ("U2", "A2", 200.0)]
    assert domain.text_fields == ["title", "category", "brand", "description"]
    assert rows(domain.items) == [
        ("A1", "Game One & more", "Video Games, PC", "Acme", "Fun. Really fun."),
        ("A2", "Game Two", "", "", "Plain"),
    ]
    assert domain.counts == {"duplicate_item_rows": 1, "interactions_without_metadata": 1}
    assert "1 reviews of items without metadata" in caplog.text
    assert read_amazon(reviews, meta, cache_dir=tmp_path / "cache").counts == domain.counts


def test_amazon_2023_parent_asin_and_milliseconds(tmp_path: Path) -> None:
    reviews = write_jsonl(
        tmp_path / "Toys.jsonl",
        [{"user_id": "U1", "asin": "child", "parent_asin": "P1", "timestamp": 1588615855070, "rating": 5}],
    )
    meta = write_jsonl(
        tmp_path / "meta_Toys.jsonl",
        [{"parent_asin": "P1", "title": "Toy", "categories": ["Toys", "Cars"], "store": None,
          "features": ["Red", "Fast"], "description": ["Nice", "car"]}],
    )  # fmt: skip
    domain = read_amazon(reviews, meta, cache_dir=tmp_path / "cache")
    assert domain.name == "Toys"
    assert rows(domain.interactions) == [("U1", "P1", 1588615855.07)]
    assert domain.text_fields == ["title", "categories", "store", "features", "description"]
    assert rows(domain.items) == [("P1", "Toy", "Toys, Cars", "", "Red, Fast", "Nice car")]


def test_amazon_gzip_detected_by_magic_bytes_and_template_fields(tmp_path: Path) -> None:
    reviews = write_jsonl(tmp_path / "reviews.json", REVIEWS_2018, compress=True)
    meta = write_jsonl(tmp_path / "meta.json", META_2018)
    domain = read_amazon(reviews, meta, name="G", template_fields=["brand", "title"], cache_dir=tmp_path / "cache")
    assert domain.name == "G" and domain.text_fields == ["brand", "title"]
    assert len(domain.interactions) == 2 and domain.items[0] == {
        "item_id": "A1",
        "brand": "Acme",
        "title": "Game One & more",
    }


def test_amazon_invalid_json(tmp_path: Path) -> None:
    reviews = tmp_path / "r.json"
    reviews.write_text(json.dumps(REVIEWS_2018[0]) + "\n{not json\n")
    meta = write_jsonl(tmp_path / "meta_r.json", META_2018)
    with pytest.raises(DataFormatError) as exc:
        read_amazon(reviews, meta, cache_dir=tmp_path / "cache")
    assert_error(exc, reviews, 2, "invalid JSON")


def test_amazon_record_missing_user_key(tmp_path: Path) -> None:
    reviews = write_jsonl(tmp_path / "r.json", [REVIEWS_2018[0], {"asin": "A1", "unixReviewTime": 1}])
    meta = write_jsonl(tmp_path / "meta_r.json", META_2018)
    with pytest.raises(DataFormatError) as exc:
        read_amazon(reviews, meta, cache_dir=tmp_path / "cache")
    assert_error(exc, reviews, 2, "'reviewerID'")


def test_amazon_first_record_with_unknown_keys(tmp_path: Path) -> None:
    reviews = write_jsonl(tmp_path / "r.json", [{"who": "U1", "what": "A1"}])
    meta = write_jsonl(tmp_path / "meta_r.json", META_2018)
    with pytest.raises(DataFormatError) as exc:
        read_amazon(reviews, meta, cache_dir=tmp_path / "cache")
    assert_error(exc, reviews, 1, "'reviewerID'", "'user_id'")


def test_amazon_non_numeric_timestamp(tmp_path: Path) -> None:
    reviews = write_jsonl(tmp_path / "r.json", [{"reviewerID": "U", "asin": "A1", "unixReviewTime": "soon"}])
    meta = write_jsonl(tmp_path / "meta_r.json", META_2018)
    with pytest.raises(DataFormatError) as exc:
        read_amazon(reviews, meta, cache_dir=tmp_path / "cache")
    assert_error(exc, reviews, 1, "'soon'")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_amazon_corrupt_gzip(tmp_path: Path, damage: str) -> None:
    data = gzip.compress("".join(json.dumps(r) + "\n" for r in REVIEWS_2018 * 200).encode())
    reviews = tmp_path / "r.json.gz"
    reviews.write_bytes(data[: len(data) // 2] if damage == "truncated" else data[:10] + b"\x00garbage" * 50)
    meta = write_jsonl(tmp_path / "meta_r.json", META_2018)
    with pytest.raises(DataFormatError) as exc:
        read_amazon(reviews, meta, cache_dir=tmp_path / "cache")
    assert_error(exc, reviews, None, "not a readable gzip")
    assert exc.value.line is not None


def test_amazon_empty_meta(tmp_path: Path) -> None:
    reviews = write_jsonl(tmp_path / "r.json", REVIEWS_2018)
    meta = tmp_path / "meta_r.json.gz"
    meta.write_bytes(gzip.compress(b""))
    with pytest.raises(DataFormatError) as exc:
        read_amazon(reviews, meta, cache_dir=tmp_path / "cache")
    assert_error(exc, meta, 1, "empty")


# ---------------------------------------------------------------- read_domain


def test_read_domain_auto_detects_each_format(tmp_path: Path) -> None:
    rb = recbole(tmp_path / "rb", ["user_id:token\titem_id:token", "u\ta"])
    assert read_domain(rb, cache_dir=tmp_path / "cache").text_fields == ["text"]

    us = unisrec(tmp_path / "us", ["1\t1\t2"], ["1\t1 2\t3"], ["1\t1 2 3\t4"])
    assert len(read_domain(us, cache_dir=tmp_path / "cache").interactions) == 4

    az = tmp_path / "az"
    write_jsonl(az / "Games_5.json.gz", REVIEWS_2018, compress=True)
    write_jsonl(az / "meta_Games.json.gz", META_2018, compress=True)
    domain = read_domain(az, cache_dir=tmp_path / "cache")
    assert domain.name == "Games_5" and len(domain.interactions) == 2

    kw = read_domain(tmp_path, reviews=az / "Games_5.json.gz", meta=az / "meta_Games.json.gz", cache_dir=tmp_path / "c")
    assert len(kw.interactions) == 2


def test_read_domain_unknown_or_missing_folder(tmp_path: Path) -> None:
    folder = tmp_path / "x"
    write(folder / "notes.txt", ["hello"])
    with pytest.raises(DataFormatError) as exc:
        read_domain(folder, cache_dir=tmp_path / "cache")
    assert_error(exc, folder, None, "notes.txt")
    with pytest.raises(DataFormatError):
        read_domain(tmp_path / "absent", cache_dir=tmp_path / "cache")


def test_read_domain_names_the_missing_half_of_a_format(tmp_path: Path) -> None:
    folder = write(tmp_path / "posters" / "posters.inter", ["user_id:token\titem_id:token", "u\ta"]).parent
    with pytest.raises(DataFormatError) as exc:
        read_domain(folder, cache_dir=tmp_path / "cache")
    assert (
        str(exc.value)
        == f"{folder}: no posters.item beside posters.inter: RecBole atomic files need both; found: posters.inter"
    )
    folder = write(tmp_path / "s" / "s.train.inter", ["user_id:token\titem_id_list:token_seq\titem_id:token"]).parent
    with pytest.raises(DataFormatError, match=r"no s\.text beside s\.train\.inter: UniSRec processed files need both"):
        read_domain(folder, cache_dir=tmp_path / "cache")


def test_a_domain_path_or_data_root_that_is_a_file_says_so(tmp_path: Path) -> None:
    inter = recbole(tmp_path / "posters", ["user_id:token\titem_id:token", "u\ta"]) / "posters.inter"
    with pytest.raises(DataFormatError) as exc:
        read_domain(inter, cache_dir=tmp_path / "cache")
    assert str(exc.value) == f"{inter}: is a file; a domain is the folder holding its files ({inter.parent})"
    with pytest.raises(DataFormatError) as exc:
        read_domain(inter / "toys", cache_dir=tmp_path / "cache")  # data_root: posters.inter
    assert str(exc.value).endswith(f"it does not exist ({inter} is a file, not a folder)")


def test_read_domain_amazon_folder_needs_one_meta_file(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "az" / "Games.json", REVIEWS_2018)
    with pytest.raises(DataFormatError) as exc:
        read_domain(tmp_path / "az", format="amazon", cache_dir=tmp_path / "cache")
    assert_error(exc, tmp_path / "az", None, "meta_", "Games.json")


# ---------------------------------------------------------------- real data


def test_real_scientific_domain(tmp_path: Path) -> None:
    if not SCIENTIFIC.is_dir():
        pytest.skip(f"shared data not found at {SCIENTIFIC}")
    domain = read_domain(SCIENTIFIC, cache_dir=tmp_path / "cache")
    assert len(domain.interactions) == 59384
    assert len(domain.items) == 4385
    assert domain.text_fields == ["text"]
