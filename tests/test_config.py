"""Config ergonomics (MiniLM by default, ``max_len`` in one place, the Python API taking YAML's dicts) and the metric
cut-offs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from cli_helpers import REPO
from lightning.pytorch.callbacks import StochasticWeightAveraging

from rec_transfer.callbacks import DomainTransfer, LatestCheckpoint, TargetWeightAveraging
from rec_transfer.callbacks.defaults import default_callbacks
from rec_transfer.cli import build_cli
from rec_transfer.data import DomainDataModule, TransferDataModule
from rec_transfer.data.datamodule import DEFAULT_MAX_LEN
from rec_transfer.metrics import RankingMetrics
from rec_transfer.models.recommender import TransferRecommender
from rec_transfer.text import TextEncoderConfig

QUICKSTART = str(REPO / "configs" / "quickstart.yaml")


def parse(*args: str):
    return build_cli(["--config", QUICKSTART, *args], run=False)


def test_a_text_model_without_text_encoder_uses_minilm() -> None:
    c = parse()  # configs/quickstart.yaml names no text_encoder
    assert all(d.text_encoder == TextEncoderConfig(model_name="minilm") for d in c.datamodule.domains.values())
    assert DomainDataModule("synthetic:books").text_encoder.model_name == "minilm"


def test_an_id_only_model_encodes_no_text() -> None:
    c = parse("--model.mode", "id")
    assert all(d.text_encoder is None for d in c.datamodule.domains.values())


def test_max_len_is_set_once_under_data_and_the_model_reads_it() -> None:
    c = parse("--data.init_args.max_len", "12")
    assert c.model.hparams.max_len == 12 and {d.max_len for d in c.datamodule.domains.values()} == {12}
    with pytest.raises(SystemExit):  # jsonargparse: 'Linked "model.max_len" must be given via "data"'
        parse("--model.max_len", "12")
    # A domain may read shorter histories than the others; the model reads the longest.
    dm = TransferDataModule(
        target={"path": "synthetic:posters", "max_len": 8}, sources=[{"path": "synthetic:books"}], max_len=30
    )
    assert (dm.target.max_len, dm.sources[0].max_len, dm.max_len) == (8, 30, 30)
    assert DomainDataModule("synthetic:books").max_len == DEFAULT_MAX_LEN
    with pytest.raises(ValueError, match="train_stride must be between 1 and max_len"):
        TransferDataModule(target={"path": "synthetic:posters", "train_stride": 20}, max_len=10)


def test_the_python_api_takes_the_dicts_of_a_yaml_config() -> None:
    dm = DomainDataModule("synthetic:books", text_encoder={"model_name": "minilm", "center": True})
    assert dm.text_encoder == TextEncoderConfig(model_name="minilm", center=True)
    transfer = TransferDataModule(
        target={"path": "synthetic:posters", "batch_size": 16, "text_encoder": {"model_name": "minilm"}},
        sources=[{"class_path": "rec_transfer.data.DomainDataModule", "init_args": {"path": "synthetic:books"}}],
    )
    assert isinstance(transfer.target, DomainDataModule) and transfer.target.batch_size == 16
    assert transfer.target.text_encoder == TextEncoderConfig() and transfer.source_names == ["books"]
    with pytest.raises(TypeError, match="is not a DomainDataModule"):
        TransferDataModule(target={"class_path": "rec_transfer.data.TransferDataModule", "init_args": {}})


# ---------------------------------------------------------------- metrics
def test_precision_hitrate_and_f1_at_every_cutoff() -> None:
    metric = RankingMetrics(ks=(1, 5))
    ranks = torch.tensor([1, 3, 7, 12])
    metric.update_ranks(ranks)
    out = {k: v.item() for k, v in metric.compute().items()}
    assert metric.ks == (1, 5, 10)  # NDCG@10 is always there: it chooses checkpoints
    for k in metric.ks:
        hits = (ranks <= k).float()  # one relevant item per user: precision = hits / K, recall = hits
        precision, recall = (hits / k).mean().item(), hits.mean().item()
        f1 = (2 * (hits / k) * hits / (hits / k + hits)).nan_to_num().mean().item()  # F1 per user, averaged
        assert out[f"hitrate@{k}"] == pytest.approx(recall) and out[f"recall@{k}"] == pytest.approx(recall)
        assert out[f"precision@{k}"] == pytest.approx(precision)
        assert out[f"f1@{k}"] == pytest.approx(f1) == pytest.approx(2 * precision * recall / (precision + recall))
    assert out["mrr"] == pytest.approx(sum(1 / r for r in ranks.tolist()) / 4)
    assert metric.update_count == 1  # through torchmetrics' update: no "compute before update" warning
    with pytest.raises(ValueError, match="cut-offs"):
        RankingMetrics(ks=(0,))


def test_the_model_evaluates_at_its_cutoffs() -> None:
    model = TransferRecommender(mode="id", hidden_size=8, layers=1, heads=1, cutoffs=(5, 20))
    model.add_domain("books", 30)
    model.val_metrics["books"].update_ranks(torch.tensor([4, 15]))
    out = model.val_metrics["books"].compute()
    assert {"precision@5", "hitrate@20", "f1@5", "ndcg@10", "recall@20", "mrr"} <= out.keys()
    assert out["hitrate@5"] == 0.5 and out["hitrate@20"] == 1.0 and not any(math.isnan(v) for v in out.values())


def test_a_transfer_without_transfer_or_checkpoint_callbacks_gets_the_defaults(tmp_path: Path) -> None:
    config = yaml.safe_load(Path(QUICKSTART).read_text())
    config["trainer"]["callbacks"] = []
    path = tmp_path / "bare.yaml"
    path.write_text(yaml.safe_dump(config))
    c = build_cli(["--config", str(path)], run=False)
    transfer = [cb for cb in c.trainer.callbacks if isinstance(cb, DomainTransfer)]
    checkpoint = [cb for cb in c.trainer.callbacks if isinstance(cb, LatestCheckpoint)]
    assert len(transfer) == 1 and transfer[0].source_epochs == DomainTransfer().source_epochs
    assert len(checkpoint) == 1 and checkpoint[0].monitor == "hp/val_ndcg@10" and checkpoint[0].save_last
    averaging = [cb for cb in c.trainer.callbacks if isinstance(cb, TargetWeightAveraging)]
    assert len(averaging) == 1 and averaging[0].decay == TargetWeightAveraging().decay == 0.99


def test_weight_averaging_is_added_to_a_fit_with_sources_that_names_none() -> None:
    def averaging(configured: list, transfer: bool) -> list:
        return [type(cb) for cb in default_callbacks(configured, transfer=transfer, logger=False)
                if isinstance(cb, TargetWeightAveraging | StochasticWeightAveraging)]  # fmt: skip

    assert averaging([], transfer=True) == [TargetWeightAveraging]
    assert averaging([TargetWeightAveraging(0.0)], transfer=True) == []  # configured: off, not doubled
    assert averaging([StochasticWeightAveraging(swa_lrs=1e-3)], transfer=True) == []  # a user's own averaging
    assert averaging([], transfer=False) == []  # no sources: the config decides
