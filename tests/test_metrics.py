import math

import pytest
import torch

from rec_transfer.metrics import RankingMetrics, UserScores, paired_comparison, paired_difference, pessimistic_rank


def brute_force(scores: torch.Tensor, target: torch.Tensor, k: int) -> tuple[float, float, float]:
    recall = ndcg = mrr = 0.0
    for s, t in zip(scores.tolist(), target.tolist(), strict=True):
        ranked = sorted(range(1, len(s)), key=lambda i: (-s[i], i == t))  # ties: target goes last
        rank = ranked.index(t) + 1
        recall += rank <= k
        ndcg += 1 / math.log2(rank + 1) if rank <= k else 0.0
        mrr += 1 / rank
    n = len(target)
    return recall / n, ndcg / n, mrr / n


def _scores(b: int, n: int, gen: torch.Generator, ties: bool) -> torch.Tensor:
    s = torch.randn(b, n + 1, generator=gen)
    if ties:
        s = (s * 2).round() / 2  # few distinct values: many ties
    s[:, 0] = float("-inf")
    return s


@pytest.mark.parametrize("ties", [False, True])
def test_matches_brute_force(ties):
    gen = torch.Generator().manual_seed(0)
    metric = RankingMetrics(ks=(1, 5, 10))
    all_s, all_t = [], []
    for _ in range(3):
        s = _scores(16, 30, gen, ties)
        t = torch.randint(1, 31, (16,), generator=gen)
        metric.update(s, t)
        all_s.append(s)
        all_t.append(t)
    out = metric.compute()
    s, t = torch.cat(all_s), torch.cat(all_t)
    for k in (1, 5, 10):
        r, n, m = brute_force(s, t, k)
        assert out[f"recall@{k}"].item() == pytest.approx(r, abs=1e-6)
        assert out[f"ndcg@{k}"].item() == pytest.approx(n, abs=1e-6)
    assert out["mrr"].item() == pytest.approx(m, abs=1e-6)


def test_ties_are_pessimistic_and_padding_never_counts():
    scores = torch.tensor([[float("-inf"), 1.0, 1.0, 1.0, 0.0]])
    assert pessimistic_rank(scores, torch.tensor([1])).item() == 3  # all three tied items rank above
    scores = torch.tensor([[float("-inf"), 0.5, 0.1]])
    assert pessimistic_rank(scores, torch.tensor([1])).item() == 1  # padding column at -inf is never above


def test_reset_and_sum_states_merge_like_ddp():
    gen = torch.Generator().manual_seed(1)
    s, t = _scores(10, 20, gen, False), torch.randint(1, 21, (10,), generator=gen)
    whole, a, b = RankingMetrics(), RankingMetrics(), RankingMetrics()
    whole.update(s, t)
    a.update(s[:3], t[:3])
    b.update(s[3:], t[3:])
    a.merge_state(b)  # what the DDP sum-reduction does
    for key, value in whole.compute().items():
        assert a.compute()[key].item() == pytest.approx(value.item())
    whole.reset()
    assert whole.count.item() == 0


def test_user_scores_keep_each_user_in_user_order_and_merge_like_ddp():
    gen = torch.Generator().manual_seed(2)
    s, t = _scores(10, 20, gen, True), torch.randint(1, 21, (10,), generator=gen)
    users = torch.randperm(10, generator=gen)
    rank = pessimistic_rank(s, t)
    a, b = UserScores(), UserScores()
    a.update(users[:4], rank[:4])
    b.update(users[4:], rank[4:])
    a.merge_state(b)  # what the DDP gather does: each rank's users, concatenated
    out = a.compute()
    assert torch.equal(out["user"], torch.arange(10))
    whole = RankingMetrics((10,))
    whole.update(s, t)
    assert out["ndcg@10"].mean().item() == pytest.approx(whole.compute()["ndcg@10"].item(), abs=1e-6)
    by_user = rank[users.argsort()]  # the rank of user 0, 1, ...
    assert torch.equal(out["recall@10"], (by_user <= 10).double())


def test_paired_difference_is_the_mean_user_difference_with_its_standard_error():
    a = torch.tensor([1.0, 0.0, 1.0, 1.0])
    b = torch.tensor([0.0, 0.0, 1.0, 0.0])
    out = paired_difference(a, b)
    diff = torch.tensor([1.0, 0.0, 0.0, 1.0])
    se = diff.std().item() / 2
    assert out["a"] == 0.75 and out["b"] == 0.25 and out["difference"] == 0.5
    assert out["standard_error"] == pytest.approx(se, abs=1e-5) and out["z"] == pytest.approx(0.5 / se, abs=0.01)
    assert paired_difference(a, a)["z"] == 0.0  # no spread, no z


def test_models_tested_on_other_users_are_not_compared():
    a = {"user": torch.tensor([1, 2]), "ndcg@10": torch.ones(2), "recall@10": torch.ones(2)}
    assert paired_comparison(a, a)["users"] == 2 and paired_comparison(a, a)["ndcg@10"]["difference"] == 0
    with pytest.raises(ValueError, match="same users"):
        paired_comparison(a, dict(a, user=torch.tensor([1, 3])))
