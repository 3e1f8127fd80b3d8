import numpy as np
import pytest
import torch

from benchmarks.paired_groups import grouped, table, user_features
from rec_transfer.data import DomainDataModule


def scores(ndcg: list[float]) -> dict[str, torch.Tensor]:
    values = torch.tensor(ndcg)
    return {"user": torch.arange(len(ndcg)), "ndcg@10": values, "recall@10": (values > 0).float()}


def test_groups_pool_each_groups_users_over_the_seeds():
    features = {"held_out_item_training_count": np.array([0, 0, 3, 30]), "history_length": np.array([4, 5, 8, 12])}
    a = [scores([0.5, 0.3, 0.2, 1.0]), scores([0.3, 0.3, 0.0, 1.0])]
    b = [scores([0.1, 0.1, 0.2, 1.0]), scores([0.1, 0.1, 0.0, 0.5])]
    report = grouped(a, b, features)
    cold = report["held_out_item_training_count"]["0"]
    assert cold["users"] == 2
    assert cold["ndcg@10"]["a"] == pytest.approx(0.35) and cold["ndcg@10"]["b"] == pytest.approx(0.1)
    # Each user's difference averaged over the seeds (0.3 and 0.2), then their mean and its standard error.
    assert cold["ndcg@10"]["difference"] == pytest.approx(0.25)
    assert cold["ndcg@10"]["standard_error"] == pytest.approx(np.std([0.3, 0.2], ddof=1) / np.sqrt(2), abs=1e-5)
    assert cold["ndcg@10"]["a_ahead_in"] == "2 of 2"
    assert report["held_out_item_training_count"]["1-4"] == {"users": 1}  # one user: no error to give
    assert report["history_length"]["10+"] == {"users": 1}
    assert report["held_out_item_training_count"]["5-19"] == {"users": 0}
    assert "| held_out_item_training_count 5-19 | 0 | - | - | - | - |" in table(report).splitlines()


def test_features_are_the_held_out_items_training_count_and_the_history_length(tmp_path):
    data = DomainDataModule("synthetic:books", synthetic={"num_users": 30, "num_items": 20}, cache_dir=str(tmp_path),
                            text_encoder=None)  # fmt: skip
    data.prepare_data()
    data.setup("fit")
    features = user_features(data)
    view = data.view("test")
    for u in range(30):
        history = view.values[view.offsets[u] : view.offsets[u + 1]]
        trained_targets = np.concatenate(
            [view.values[view.offsets[v] + 1 : view.offsets[v + 1] - 2] for v in range(30)]
        )
        assert features["history_length"][u] == len(history) - 1
        assert features["held_out_item_training_count"][u] == (trained_targets == history[-1]).sum()
