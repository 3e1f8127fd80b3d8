"""The scale benchmark: its synthetic domain, a row measured end to end (in-process), the goals and the report."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmarks import scale
from benchmarks.scale_data import synthetic_interactions, write_synthetic_domain, write_tiny_encoder
from benchmarks.scale_report import check_goals, peak_rss_mb
from rec_transfer.data.domain import PreprocessConfig, preprocess
from rec_transfer.data.formats import read_domain


def test_synthetic_interactions_are_exact_grouped_and_use_every_item():
    user, item, position = synthetic_interactions(num_items=500, num_users=120, num_interactions=3000, seed=1)
    assert len(user) == len(item) == len(position) == 3000
    assert np.all(np.diff(user) >= 0)  # grouped by user
    counts = np.bincount(user, minlength=120)
    assert counts.min() >= 25 - 10 and counts.max() <= 26 + 10 and counts.sum() == 3000 and counts.std() > 3
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    assert np.array_equal(position, np.arange(3000) - np.repeat(starts, counts))
    assert set(item.tolist()) == set(range(500))
    again = synthetic_interactions(num_items=500, num_users=120, num_interactions=3000, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(again, (user, item, position), strict=True))
    with pytest.raises(ValueError, match="cannot"):
        synthetic_interactions(num_items=500, num_users=120, num_interactions=300)


def test_the_synthetic_folder_reads_back_whole_through_the_package(tmp_path):
    folder = write_synthetic_domain(tmp_path / "synthetic_tiny", num_items=400, num_users=150, num_interactions=3000)
    stamp = (folder / "synthetic_tiny.inter").stat().st_mtime_ns
    assert write_synthetic_domain(folder, 400, 150, 3000) == folder  # complete: not written again
    assert (folder / "synthetic_tiny.inter").stat().st_mtime_ns == stamp
    domain = preprocess(read_domain(folder, cache_dir=tmp_path / "raw"), PreprocessConfig())
    assert (domain.num_items, domain.num_users, domain.num_interactions) == (400, 150, 3000)
    assert all(t for t in domain.texts())


def test_shapes_of_the_rows():
    assert scale.synthetic_shape(1_000_000) == {"items": 1_000_000, "users": 125_000, "interactions": 5_000_000}
    assert scale.synthetic_shape(10_000)["users"] == scale.MIN_USERS
    assert [scale.size_name(n) for n in scale.SIZES] == ["synthetic_10k", "synthetic_100k", "synthetic_1M"]
    cfg = scale.scientific_config("text", "/data", Path("/cache"), "sampled")
    shipped = yaml.safe_load((scale.ROOT / "configs/scientific_target_only.yaml").read_text())
    assert cfg["model"] == shipped["model"] | {"loss": "sampled"}
    assert cfg["data"]["init_args"]["data_root"] == "/data"
    assert cfg["data"]["init_args"]["target"]["init_args"]["cache_dir"] == "/cache"
    assert "trainer" not in cfg and scale.one_epoch(cfg, Path("/x"))["trainer"]["max_epochs"] == 1


def test_a_row_prepared_and_measured_in_process(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # the child resets it
    folder = write_synthetic_domain(tmp_path / "synthetic_tiny", num_items=300, num_users=100, num_interactions=2000)
    encoder = write_tiny_encoder(tmp_path / "encoder", ["alpha beta gamma", "delta epsilon"] * 50, vocab_size=80)
    cfg = scale.synthetic_config(folder, encoder, tmp_path / "cache", "sampled")
    cfg["data"]["init_args"]["target"]["init_args"]["batch_size"] = 32
    path = tmp_path / "row.yaml"
    path.write_text(yaml.safe_dump(cfg))
    prepared = scale.child("prepare", path)
    assert prepared["peak_rss_mb"] > 0
    assert len(list((tmp_path / "cache" / "text_vectors").glob("*.safetensors"))) == 1
    path.write_text(yaml.safe_dump(scale.one_epoch(cfg, tmp_path / "run")))
    row = scale.child("measure", path)
    assert (tmp_path / "run" / "config.yaml").is_file() and not (Path.cwd() / "config.yaml").exists()
    assert (row["items"], row["users"], row["interactions"], row["loss"]) == (300, 100, 2000, "sampled")
    assert row["train_targets"] == 2000 - 3 * 100
    assert row["train_targets_per_s"] > 0 and row["eval_users_per_s"] > 0 and row["peak_rss_mb"] > 0
    assert row["train_cpu_s"] > 0 and row["eval_cpu_s"] > 0


def test_peak_rss_of_a_child_is_its_own_not_its_parents(tmp_path):
    ballast = np.ones(300_000_000 // 8)  # 300 MB in this (parent) process
    code = "from benchmarks.scale_report import peak_rss_mb; print(peak_rss_mb())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=scale.ROOT)
    assert 0 < float(out.stdout) < 150 < peak_rss_mb()
    del ballast


def _row(items, targets_per_s, user_items_per_s, rss=1000.0, domain=None, model="text", loss="sampled"):
    row = {"domain": domain or scale.size_name(items), "model": model, "loss": loss, "items": items}
    row |= {"users": items // 4, "interactions": 5 * items, "train_targets_per_s": targets_per_s}
    row |= {"train_epoch_s": 10.0, "eval_users_per_s": user_items_per_s / items, "eval_s": 1.0}
    row |= {"eval_user_items_per_s": user_items_per_s, "peak_rss_mb": rss}
    return row | {"prepare": {"peak_rss_mb": 500.0, "read_preprocess_s": 1.0, "text_vectors_s": 2.0}}


def test_goals_pass_and_fail_on_their_thresholds():
    rows = [_row(10_000, 3000, 1e9), _row(100_000, 2500, 1e9), _row(1_000_000, 2000, 9e8, rss=4000)]
    scientific = {"sasrec_epoch_s": 2.0, "text_epoch_s": 3.5, "text_loss": "full"}
    assert [g["passed"] for g in check_goals(rows, scientific)] == [True, True, True, True]
    rows = [_row(10_000, 3000, 1e9), _row(100_000, 2500, 1e9), _row(1_000_000, 1000, 5e8, rss=13_000)]
    scientific["text_epoch_s"] = 30.0
    assert [g["passed"] for g in check_goals(rows, scientific)] == [False, False, False, False]
    assert [g["passed"] for g in check_goals(rows[:1], None)] == [None, None, None, None]


def test_main_writes_the_report_and_reuses_finished_rows(tmp_path, monkeypatch, capsys):
    measured: list[str] = []

    def fake_child(stage, config, work, name):
        measured.append(f"{name}.{stage}")
        if stage == "prepare":
            return {"peak_rss_mb": 100.0, "read_preprocess_s": 0.1, "text_vectors_s": 0.2}
        items = {"synthetic_1k": 1000, "synthetic_2k": 2000}.get(name, 4385)
        model = "sasrec" if "sasrec" in name else "text"
        row = _row(items, 1000.0, 1e8, domain=name if items < 4385 else "Scientific", model=model)
        return {k: v for k, v in row.items() if k != "prepare"} | {"loss": config["model"].get("loss", "full")}

    monkeypatch.setattr(scale, "run_child", fake_child)
    monkeypatch.setattr(scale, "write_tiny_encoder", lambda folder, texts: folder)
    monkeypatch.setattr(scale, "write_synthetic_domain", lambda folder, *shape: folder)
    argv = ["scale", "--sizes", "1000", "2000", "--work-dir", str(tmp_path / "work"), "--output-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", [*argv, "--reuse"])
    scale.main()
    report = json.loads((tmp_path / "scale.json").read_text())
    domains = ["synthetic_1k", "synthetic_2k", "Scientific", "Scientific", "Scientific"]
    assert [r["domain"] for r in report["rows"]] == domains
    assert [r["loss"] for r in report["rows"][2:]] == ["full", "sampled", "full"]
    assert report["scientific"] == {"sasrec_epoch_s": 10.0, "text_epoch_s": 10.0, "text_loss": "full"}
    assert {"command", "git_commit", "machine", "when", "goals"} <= report.keys()
    for key in ("domain", "items", "interactions", "loss", "train_targets_per_s", "eval_users_per_s", "peak_rss_mb"):
        assert all(key in r for r in report["rows"])
    printed = capsys.readouterr().out
    assert "PASS: Scientific" in printed and "NOT RUN: 1M items" in printed
    assert "| synthetic_1k | text | sampled | 1,000 |" in (tmp_path / "scale.md").read_text()
    assert len(measured) == 10
    scale.main()  # the same commit and configs: every row is read back
    assert len(measured) == 10
