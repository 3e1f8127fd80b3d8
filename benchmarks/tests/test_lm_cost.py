"""The language-model cost benchmark measures the shipped Scientific text config, frozen and trained in the loop."""

from pathlib import Path


def test_rows_differ_only_in_the_trained_layers(tmp_path):
    from benchmarks.lm_cost import TEXT_LR, lm_config, markdown

    frozen, trained = (lm_config("/data", tmp_path, layers) for layers in (0, 2))
    encoder = trained["data"]["init_args"]["target"]["init_args"]["text_encoder"]
    assert encoder["train_layers"] == 2 and trained["model"]["text_lr"] == TEXT_LR
    assert "train_layers" not in frozen["data"]["init_args"]["target"]["init_args"]["text_encoder"]
    assert {k: v for k, v in trained["model"].items() if k != "text_lr"} == frozen["model"]
    assert frozen["data"]["init_args"]["target"]["init_args"]["cache_dir"] == str(Path(tmp_path))
    row = {"train_layers": 1, "train_epoch_s": 2.0, "train_cpu_s": 1.9, "eval_s": 0.5, "peak_rss_mb": 900}
    report = {"command": "c", "git_commit": "abc", "when": "now", "machine": {"torch": "2"}, "rows": [row]}
    assert "| 1 | 32-true | 2.0 | 1.9 | 0.5 | 900 |" in markdown(report)


def test_another_language_model_replaces_minilm_for_every_domain(tmp_path):
    from benchmarks.lm_cost import lm_config

    cfg = lm_config("/data", tmp_path, 1, "smollm2")
    assert cfg["data"]["init_args"]["target"]["init_args"]["text_encoder"]["model_name"] == "smollm2"
    assert "sources" not in cfg["data"]["init_args"]  # the target-only config: one domain, one model


def test_a_row_measures_at_the_precision_it_is_given(tmp_path):
    from benchmarks.scale import one_epoch

    cfg = one_epoch({"model": {}, "data": {}}, tmp_path, {"precision": "bf16-mixed", "max_epochs": 5})
    assert cfg["trainer"]["precision"] == "bf16-mixed"
    assert cfg["trainer"]["max_epochs"] == 1  # one measured epoch whatever the extra settings say
