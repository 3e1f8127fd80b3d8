from pathlib import Path

import pytest
import yaml

from rec_transfer.bench.runs import prepare_config, summarize

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_prepared_runs_never_share_checkpoints_or_logs(config, tmp_path):
    # Parallel seeds writing into one checkpoint folder would test each other's "best" checkpoints.
    seen = set()
    for run in ("a-seed0", "a-seed1"):
        cfg = yaml.safe_load(prepare_config(config, run, tmp_path).read_text())
        dirpaths = [cb["init_args"]["dirpath"] for cb in cfg["trainer"]["callbacks"] if "dirpath" in cb["init_args"]]
        assert dirpaths and all(run in d for d in dirpaths)
        assert cfg["trainer"]["logger"]["init_args"]["name"].endswith(run)
        assert cfg["results_json"].endswith(f"{run}.json")
        seen.update(dirpaths)
    assert len(seen) == 2


def test_summarize_mean_and_sample_std():
    out = summarize([{"test/x": 1.0, "other": 5}, {"test/x": 3.0}], "test/")
    assert out == {"test/x": {"mean": 2.0, "std": 1.41421, "values": [1.0, 3.0]}}


# ---------------------------------------------------------------- transfer benchmark table
def test_variant_configs_swap_target_sources_and_encoder(monkeypatch):
    from rec_transfer.bench.transfer_table import VARIANTS, default_sources, variant_config

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # configs are named relative to the repository
    sources = default_sources("Office")
    assert "Office" not in sources and "Scientific" in sources
    for variant in VARIANTS:
        cfg = variant_config(variant, "Office", sources, source_epochs=3)
        data = cfg["data"]["init_args"]
        assert data["target"]["init_args"]["path"] == "amazon/Office"
        if variant.startswith("transfer"):
            assert [s["init_args"]["path"].split("/")[-1] for s in data["sources"]] == sources
            (transfer,) = [cb for cb in cfg["trainer"]["callbacks"] if cb["class_path"].endswith("DomainTransfer")]
            assert transfer["init_args"]["source_epochs"] == 3
        else:
            assert not data.get("sources")
    smol = variant_config("transfer_smollm2", "Office", sources)["data"]["init_args"]
    assert {d["init_args"]["text_encoder"]["model_name"] for d in [smol["target"], *smol["sources"]]} == {"smollm2"}
    assert variant_config("transfer_text+id", "Office", sources)["model"]["mode"] == "text+id"
    with pytest.raises(ValueError, match="cannot also be a source"):
        variant_config("transfer_text", "Office", ["Office"])


def fake_results():
    def summary(prefix, mean):
        stats = {"mean": mean, "std": 0.001, "values": [mean]}
        return {f"{prefix}/Scientific/{m}": stats for m in ("ndcg@10", "recall@10")}

    return {
        "sasrec": {"summary": summary("test", 0.05), "mean_train_epoch_seconds": 4.0},
        "transfer_text": {
            "summary": summary("test", 0.06) | summary("zeroshot_test", 0.03),
            "mean_train_epoch_seconds": 9.0,
        },
    }  # fmt: skip


def test_markdown_table_has_each_variant_zero_shot_and_published_rows():
    from rec_transfer.bench.transfer_table import markdown_table

    table = markdown_table(fake_results(), "Scientific", [0, 1, 2]).splitlines()
    assert "3 seeds" in table[0]
    (zero,) = [line for line in table if "zero-shot (before" in line]
    assert "0.0300 ± 0.0010" in zero and zero.count("—") == 2  # no @50 values were given
    assert any(line.startswith("| SASRec (IDs), target only | 0.0500 ± 0.0010") for line in table)
    assert any("published: VQ-Rec (re-released ckpt)" in line and "0.0645" in line for line in table)


def test_plot_writes_a_png(tmp_path):
    from rec_transfer.bench.transfer_table import plot

    plot(fake_results(), "Scientific", tmp_path / "chart.png")
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
