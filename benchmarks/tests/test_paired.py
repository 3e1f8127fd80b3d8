"""The paired comparison of two trained models over the same test users."""

import math

import pytest
import torch

from benchmarks.paired import per_user, pooled
from rec_transfer.metrics import RankingMetrics


def test_per_user_scores_average_to_the_ranking_metrics():
    torch.manual_seed(0)
    batches = [
        {
            "user": torch.arange(8 * i, 8 * i + 8).flip(0),
            "target": torch.randint(1, 30, (8,)),
            "scores": torch.randn(8, 31),
        }
        for i in range(3)
    ]
    for batch in batches:
        batch["scores"][:, 0] = float("-inf")
        batch["scores"][0, 1:] = 0.0  # every item tied: the held-out item ranks last
    users = per_user(lambda batch: batch["scores"], batches)
    metric = RankingMetrics((10,))
    for batch in batches:
        metric.update(batch["scores"], batch["target"])
    expected = metric.compute()
    assert users["ndcg@10"].mean().item() == pytest.approx(expected["ndcg@10"].item(), abs=1e-6)
    assert users["recall@10"].mean().item() == pytest.approx(expected["recall@10"].item(), abs=1e-6)
    assert torch.equal(users["user"], torch.arange(24))  # in user order
    assert users["recall@10"][7] == 0  # the first batch's first row, user 7


def test_pooled_difference_over_seeds_and_the_margin_every_seed_needs():
    seeds = [
        torch.tensor([1.0, 0.0, 0.0, 1.0]),
        torch.tensor([1.0, -1.0, 0.0, 0.0]),
        torch.tensor([1.0, 0.0, 1.0, -1.0]),
    ]
    out = pooled(seeds)
    per_user = torch.tensor([1.0, -1 / 3, 1 / 3, 0.0])  # each user's difference averaged over the seeds
    assert out["difference"] == pytest.approx(per_user.mean().item(), abs=1e-5)
    assert out["standard_error"] == pytest.approx(per_user.std().item() / 2, abs=1e-5)
    assert out["a_ahead_in"] == "2 of 3"
    widest = max(s.std().item() / 2 for s in seeds)
    assert out["margin_for_every_seed"] == pytest.approx(1.82 * widest, abs=1e-5)


def test_a_user_who_favours_a_on_every_seed_counts_once_in_the_pooled_error():
    """The seeds share their test users: the same differences twice are one draw, not two independent ones."""
    one = torch.tensor([1.0, 0.0, -1.0, 1.0, 0.0, 1.0])
    twice = pooled([one, one])
    assert twice["standard_error"] == pytest.approx(one.std().item() / math.sqrt(len(one)), abs=1e-5)
    assert twice["standard_error"] > pooled([one, one.flip(0)])["standard_error"]


def test_checkpoints_outside_the_checkout_are_named_by_run_folder_and_file(tmp_path):
    from benchmarks.paired import checkpoint_name

    best = tmp_path / "transfer-seed1" / "epoch=3-step=9.ckpt"
    assert checkpoint_name(str(best)) == "transfer-seed1/epoch=3-step=9.ckpt"
    assert checkpoint_name("runs/a/best.ckpt") == "runs/a/best.ckpt"


def test_run_folders_are_compared_from_the_scores_their_fits_wrote(tmp_path, monkeypatch, capsys):
    import json
    import sys

    from benchmarks.paired import main
    from rec_transfer.metrics import paired_comparison
    from rec_transfer.runs import write_user_scores

    users = torch.arange(6)
    ndcg_a, recall_a = torch.tensor([1, 0.5, 0, 0, 0.3, 1]), torch.tensor([1.0, 1, 0, 0, 1, 1])
    ndcg_b, recall_b = torch.tensor([0.5, 0.5, 0, 1, 0, 0]), torch.tensor([1.0, 1, 0, 1, 0, 0])
    a = {"user": users, "ndcg@10": ndcg_a, "recall@10": recall_a}
    b = {"user": users, "ndcg@10": ndcg_b, "recall@10": recall_b}
    for name, scores in (("transfer", a), ("target_only", b)):
        (tmp_path / name).mkdir()
        write_user_scores(tmp_path / name, scores)
    out = tmp_path / "paired.json"
    argv = ["paired", "--a", str(tmp_path / "transfer"), "--b", str(tmp_path / "target_only" / "test_users.pt")]
    monkeypatch.setattr(sys, "argv", [*argv, "--output", str(out)])
    main()
    [pair] = json.loads(out.read_text())["pairs"]
    assert {k: pair[k] for k in ("users", "ndcg@10", "recall@10")} == paired_comparison(a, b)
    assert pair["ndcg@10"]["difference"] == pytest.approx((a["ndcg@10"] - b["ndcg@10"]).mean().item(), abs=1e-5)
    monkeypatch.setattr(sys, "argv", ["paired", "--a", str(tmp_path), "--b", str(tmp_path / "transfer")])
    with pytest.raises(SystemExit):  # one line, naming the pair
        main()
    assert f"{tmp_path}: no test_users.pt (a fit writes it" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["paired", "--a", "c", "k", "x", "--b", str(tmp_path / "transfer")])
    with pytest.raises(SystemExit):
        main()
    assert "CONFIG CKPT or one run folder" in capsys.readouterr().err
