"""The transfer benchmark: variant configs, earlier rows kept, table and chart; the fine-tuning study's configs."""

import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def test_variant_configs_swap_target_sources_and_encoder(monkeypatch, tmp_path):
    from benchmarks.transfer_table import default_sources, variant_config
    from benchmarks.variants import TRANSFER, VARIANTS

    monkeypatch.chdir(tmp_path)  # configs are found in the checkout, whatever the working directory
    sources = default_sources("Office")
    assert "Office" not in sources and "Scientific" in sources
    for variant in VARIANTS:
        cfg = variant_config(variant, "Office", sources, source_epochs=3)
        data = cfg["data"]["init_args"]
        assert data["target"]["init_args"]["path"] == "amazon/Office"
        if variant.startswith(("transfer", "zero_shot")):
            assert [s["init_args"]["path"].split("/")[-1] for s in data["sources"]] == sources
            (transfer,) = [cb for cb in cfg["trainer"]["callbacks"] if cb["class_path"].endswith("DomainTransfer")]
            assert transfer["init_args"]["source_epochs"] == 3
            # The default recipe fine-tunes every layer; a variant freezes what its spec names.
            assert transfer["init_args"]["freeze"] == VARIANTS[variant].get("freeze", [])
            assert transfer["init_args"].get("handover", "last") == VARIANTS[variant].get("handover", "last")
            if variant.startswith("zero_shot"):  # stops at the switch, never earlier
                assert cfg["trainer"]["max_epochs"] == 3 and transfer["init_args"]["source_patience"] is None
            else:
                assert cfg["trainer"]["max_epochs"] > 3 and transfer["init_args"]["source_patience"] is not None
        else:
            assert not data.get("sources")
            assert not [cb for cb in cfg["trainer"]["callbacks"] if cb["class_path"].endswith("DomainTransfer")]
    # The text baseline is the transfer config's target-only version: the same model and target settings
    # (uncentred, as the adaptor-only recipe it was measured against).
    alone, transfer = (variant_config(v, "Office", sources) for v in ("text_target_only", "transfer_text"))
    assert alone["model"].pop("lr_scale") == transfer["model"].pop("target_lr_scale") == {}
    assert alone["model"] == {k: v for k, v in transfer["model"].items() if k != "target_lr"}
    assert alone["data"]["init_args"]["target"] == transfer["data"]["init_args"]["target"]
    # Target-only rows train at their transfer row's target learning rate: 1e-3 measured before, 5e-4 the default.
    lrs = {
        v: variant_config(v, "Office", sources)["model"]["lr"]
        for v in ("text_target_only_history", "text_target_only_history_half_lr")
    }
    assert lrs == {"text_target_only_history": 1e-3, "text_target_only_history_half_lr": 5e-4}
    # The default recipe's text adaptor trains at twice the target rate, in both arms; rows measured before it, and
    # their reruns, at the target rate (target_lr_scale {}); the shipped transfer config names the scale.
    names = ("transfer_ema_fast_adaptor", "text_target_only_ema_fast_adaptor", "transfer_ema", "text_target_only_ema")
    scales = {v: variant_config(v, "Office", sources)["model"] for v in names}
    assert scales["transfer_ema_fast_adaptor"]["target_lr_scale"] == {"item_tower.adaptor": 2.0}
    assert scales["text_target_only_ema_fast_adaptor"]["lr_scale"] == {"item_tower.adaptor": 2.0}
    assert scales["transfer_ema"]["target_lr_scale"] == {} and scales["text_target_only_ema"]["lr_scale"] == {}
    assert yaml.safe_load((REPO / TRANSFER).read_text())["model"]["target_lr_scale"] == {"item_tower.adaptor": 2.0}
    # The default recipe averages both arms' target weights (the target-only config keeps every callback but the
    # transfer's); rows measured before it, and their reruns, do not: decay 0, since a fit with sources and no
    # averaging callback would get the default one. Configs without sources (SASRec) name none.
    for variant in VARIANTS:
        averaging = [cb for cb in variant_config(variant, "Office", sources)["trainer"]["callbacks"]
                     if cb["class_path"].endswith("TargetWeightAveraging")]  # fmt: skip
        if variant.startswith(("transfer_ema", "text_target_only_ema")):
            decay = VARIANTS[variant].get("average", {}).get("decay", 0.99)
            assert decay == {"98": 0.98, "995": 0.995}.get(variant.rsplit("ema", 1)[-1], 0.99)
        elif VARIANTS[variant]["config"] == TRANSFER:
            decay = 0.0
        else:
            assert not averaging, variant
            continue
        assert averaging == [{"class_path": "rec_transfer.callbacks.TargetWeightAveraging",
                              "init_args": {"decay": decay}}], variant  # fmt: skip
    smol = variant_config("transfer_smollm2", "Office", sources)["data"]["init_args"]
    encoders = [d["init_args"]["text_encoder"] for d in [smol["target"], *smol["sources"]]]
    assert all(e == {"model_name": "smollm2", "center": True} for e in encoders) and len(encoders) == 1 + len(sources)
    for variant, centred in (
        ("transfer_text_center", True),
        ("transfer_text_full_center", True),
        ("transfer_text", False),
    ):
        data = variant_config(variant, "Office", sources)["data"]["init_args"]
        encoders = [d["init_args"]["text_encoder"] for d in [data["target"], *data["sources"]]]
        assert all(e == {"model_name": "minilm", "center": centred} for e in encoders)
        assert len(encoders) == 1 + len(sources)
    lm = variant_config("transfer_lm", "Office", sources)
    lm_alone = variant_config("text_target_only_lm", "Office", sources)
    assert "sources" not in lm_alone["data"]["init_args"] and lm_alone["model"]["text_lr"] == lm["model"]["text_lr"]
    assert lm_alone["data"]["init_args"]["target"] == lm["data"]["init_args"]["target"]
    assert lm["data"]["init_args"]["target"]["init_args"]["text_encoder"]["train_layers"] == 1
    lm_all = variant_config("transfer_ema_lm_all", "Office", sources)
    lm_all_alone = variant_config("text_target_only_ema_lm_all", "Office", sources)
    assert lm_all_alone["data"]["init_args"]["target"] == lm_all["data"]["init_args"]["target"]
    assert lm_all["data"]["init_args"]["target"]["init_args"]["text_encoder"]["train_layers"] == 6
    for key, value in (("text_lr", 1e-5), ("text_items_per_step", 8192)):
        assert lm_all["model"][key] == lm_all_alone["model"][key] == value
    assert (
        lm["model"]["text_lr"] == 3e-5 and variant_config("transfer_align", "Office", sources)["model"]["align_weight"]
    )
    assert variant_config("transfer_text+id", "Office", sources)["model"]["mode"] == "text+id"
    assert variant_config("transfer_joint", "Office", sources)["data"]["init_args"]["joint"] is True
    assert "joint" not in variant_config("transfer_history_half_lr", "Office", sources)["data"]["init_args"]
    assert variant_config("transfer_rehearsal", "Office", sources)["data"]["init_args"]["rehearsal"] == 0.25
    with pytest.raises(ValueError, match="cannot also be a source"):
        variant_config("transfer_text", "Office", ["Office"])


def test_earlier_results_kept_only_for_the_same_settings(tmp_path):
    from benchmarks.transfer_table import earlier_results, in_table_order

    path = tmp_path / "Scientific.json"
    assert earlier_results(path, ["sasrec"], ["Office"], 4, [0, 1]) == {}  # no earlier report
    report = {"command": "python old", "git_commit": "abc", "machine": {"device": "cpu"}, "sources": ["Office"],
              "source_epochs": 4, "seeds": [0, 1], "results": {"sasrec": {}, "transfer_text": {}}}  # fmt: skip
    path.write_text(json.dumps(report))
    kept = earlier_results(path, ["sasrec", "zero_shot_text"], ["Office"], 4, [0, 1])
    assert list(kept) == ["transfer_text"]  # the variant run now replaces its earlier row
    assert kept["transfer_text"]["provenance"] == {
        "command": "python old",
        "git_commit": "abc",
        "machine": {"device": "cpu"},
    }
    for changed in ((["Food"], 4, [0, 1]), (["Office"], 2, [0, 1]), (["Office"], 4, [0])):
        with pytest.raises(ValueError, match="write this run elsewhere"):
            earlier_results(path, ["sasrec"], *changed)
    # Rerunning every earlier variant needs nothing from the old report, whatever its settings.
    assert earlier_results(path, ["sasrec", "transfer_text"], ["Food"], 1, [0]) == {}
    assert list(in_table_order({"zero_shot_text": 1, "sasrec": 2, "transfer_text": 3})) == [
        "sasrec", "transfer_text", "zero_shot_text"]  # fmt: skip


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
    from benchmarks.transfer_table import markdown_table
    from benchmarks.variants import PUBLISHED

    table = markdown_table(fake_results(), "Scientific", [0, 1, 2], PUBLISHED["Scientific"]).splitlines()
    assert "3 seeds" in table[0]
    (zero,) = [line for line in table if "zero-shot (before" in line]
    assert "0.0300 ± 0.0010" in zero and zero.count("—") == 2  # no @50 values were given
    assert any(line.startswith("| SASRec (IDs), target only | 0.0500 ± 0.0010") for line in table)
    assert any("published: VQ-Rec (re-released ckpt)" in line and "0.0645" in line for line in table)
    # A report whose runs train on part of the target (train_users) carries no published numbers, and shows none.
    assert not any("published" in line for line in markdown_table(fake_results(), "Scientific", [0], {}).splitlines())


def test_plot_writes_a_png(tmp_path):
    from benchmarks.transfer_table import plot
    from benchmarks.variants import PUBLISHED

    plot(fake_results(), "Scientific", tmp_path / "chart.png", PUBLISHED["Scientific"])
    assert (tmp_path / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("strategy", ["scratch", "adaptor_only", "text+id", "adaptor+id", "full_lr1e-4"])
def test_finetune_configs_instantiate_with_pretrained_weights(strategy, tmp_path, monkeypatch):
    from benchmarks.negative_transfer import finetune_config
    from rec_transfer.callbacks import DomainTransfer
    from rec_transfer.cli import build_cli

    monkeypatch.chdir(REPO)
    cfg = finetune_config("Office", strategy, tmp_path / "pre.ckpt")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    c = build_cli(["--config", str(tmp_path / "c.yaml"), "--trainer.logger", "false"], run=False)
    transfer = [cb for cb in c.trainer.callbacks if isinstance(cb, DomainTransfer)]
    assert c.datamodule.target.path.endswith("amazon/Office") and not c.datamodule.sources
    if strategy == "scratch":
        assert c.model.hparams.pretrained is None and not transfer
    else:
        assert c.model.hparams.pretrained == str(tmp_path / "pre.ckpt")
        frozen = ["encoder"] if strategy.startswith("adaptor") else []
        assert transfer[0].source_epochs == 0 and transfer[0].freeze == frozen
    assert c.model.hparams.mode == ("text+id" if strategy.endswith("+id") else "text")
    # Fine-tuning trains at the strategy's lr: no target_lr (the learning rate after a switch) overrides it.
    assert c.model.hparams.target_lr is None and c.model.hparams.lr == (1e-4 if strategy == "full_lr1e-4" else 1e-3)


def test_rows_of_another_report_are_added_with_their_provenance():
    from benchmarks.transfer_table import add_rows

    def report(command, variants, seeds=(0, 1, 2)):
        measured = {"command": command, "git_commit": command + "-commit", "machine": {"device": "cpu"}}
        settings = {"target": "Office", "sources": ["Scientific"], "source_epochs": 4, "seeds": list(seeds)}
        return measured | settings | {"results": {v: {"per_seed": [v]} for v in variants}}

    old, new = report("old", ["transfer_text", "sasrec"]), report("new", ["transfer_text_full_center", "sasrec"])
    merged = add_rows(old, new)
    assert list(merged["results"]) == ["sasrec", "transfer_text_full_center", "transfer_text"]  # table order
    assert merged["results"]["sasrec"]["provenance"]["command"] == "new"  # replaced by the later report
    assert merged["results"]["transfer_text"]["provenance"]["git_commit"] == "old-commit"
    with pytest.raises(ValueError, match="other settings"):
        add_rows(report("old", ["sasrec"]), report("new", ["sasrec"], seeds=(0,)))


def test_seeds_of_another_report_are_added_to_each_variant(tmp_path):
    from benchmarks.transfer_table import add_seeds, write_report

    def report(command, seeds, ndcg):
        measured = {"command": command, "git_commit": command + "-commit", "machine": {"device": "cpu"}}
        settings = {"target": "Office", "sources": ["Scientific"], "source_epochs": 4, "seeds": list(seeds)}
        per_seed = [{"seed": s, "mean_train_epoch_seconds": 2.0, "test/Office/ndcg@10": ndcg} for s in seeds]
        return measured | settings | {"results": {"sasrec": {"config": "c.yaml", "per_seed": per_seed}}}

    merged = add_seeds(report("first", [0], 0.01), report("later", [2, 1], 0.04))
    sasrec = merged["results"]["sasrec"]
    assert merged["seeds"] == [0, 1, 2] and [r["seed"] for r in sasrec["per_seed"]] == [0, 1, 2]
    assert sasrec["summary"]["test/Office/ndcg@10"]["mean"] == pytest.approx(0.03)  # over every seed
    assert [p["command"] for p in sasrec["provenance"]] == ["first", "later"]
    write_report(merged, tmp_path / "Office")
    md = (tmp_path / "Office.md").read_text()
    assert "Command: `first`" in md and "Command: `later`" in md and "| 0.0300 ± 0.0173 |" in md
    with pytest.raises(ValueError, match="overlap"):
        add_seeds(report("first", [0], 0.01), report("later", [0, 1], 0.04))
    with pytest.raises(ValueError, match="other settings"):
        add_seeds(report("first", [0], 0.01), report("later", [1], 0.04) | {"sources": ["Food"]})
