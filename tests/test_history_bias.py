"""The learned offset for items already in a user's history (model.history_bias): the same numbers on every path."""

import pytest
import torch
import torch.nn.functional as F
from model_helpers import batches as _batches
from model_helpers import tiny_model as _model

from rec_transfer.metrics import pessimistic_rank
from rec_transfer.models.components.history import in_history, last_histories, token_histories
from rec_transfer.models.components.losses import chunked_cross_entropy
from rec_transfer.models.components.ranking import chunked_ranks, chunked_top_k
from rec_transfer.models.components.scoring import ItemScorer


def test_histories_of_packed_rows_stay_inside_each_history():
    inputs = torch.tensor([[3, 4, 5, 7, 8, 0], [1, 2, 0, 0, 0, 0]])
    segments = torch.tensor([[1, 1, 1, 2, 2, 0], [1, 1, 0, 0, 0, 0]])
    seen = token_histories(inputs, segments)
    assert seen[0, 2].tolist() == [3, 4, 5, 0, 0, 0]  # the first history so far
    assert seen[0, 4].tolist() == [0, 0, 0, 7, 8, 0]  # the second: nothing of the first
    assert seen[1, 0].tolist() == [1, 0, 0, 0, 0, 0]  # only what came before or at the position
    last = last_histories(inputs, segments, torch.tensor([2, 4, 7]))  # flat indices of each history's end
    assert last.tolist() == [[3, 4, 5, 0, 0, 0], [0, 0, 0, 7, 8, 0], [1, 2, 0, 0, 0, 0]]
    assert last_histories(inputs[1:, :3], None, None).tolist() == [[1, 2, 0]]  # unpacked: up to the last real token


def test_in_history_matches_any_sorted_ids_and_never_padding():
    histories = torch.tensor([[2, 5, 5, 0], [9, 0, 0, 0]])
    assert in_history(histories, torch.tensor([1, 2, 5, 9])).tolist() == [[0, 1, 1, 0], [0, 0, 0, 1]]
    assert in_history(histories, torch.tensor([1, 3])).sum() == 0


def test_chunked_cross_entropy_with_history_offset_is_exact_in_value_and_every_gradient():
    torch.manual_seed(0)
    states, items = torch.randn(20, 8, requires_grad=True), torch.randn(30, 8, requires_grad=True)
    targets = torch.randint(0, 30, (20,))
    histories = torch.randint(-1, 30, (20, 5))
    histories[:4, 0] = targets[:4]  # some targets are repeats
    offset = torch.tensor(-1.3, requires_grad=True)
    chunked = chunked_cross_entropy(states, items, targets, 7, histories, offset)
    dense = F.cross_entropy(states @ items.T + offset * in_history(histories, torch.arange(30)), targets)
    torch.testing.assert_close(chunked, dense)
    wrt = [states, items, offset]
    for a, b in zip(torch.autograd.grad(chunked, wrt), torch.autograd.grad(dense, wrt), strict=True):
        torch.testing.assert_close(a, b)


def test_the_offset_learns_whether_users_return_to_their_items():
    """Trained alone by the next-item loss, the offset falls where targets are never in the history and rises
    where they always are."""
    torch.manual_seed(0)
    table = torch.randn(21, 8)
    histories = torch.randint(1, 21, (64, 4))
    states = table[histories[:, -1]] + 0.1 * torch.randn(64, 8)  # a text model: close to the last item
    repeat = histories[:, 0]
    fresh = torch.tensor([next(i for i in range(1, 21) if i not in h) for h in histories.tolist()])
    for targets, direction in ((fresh, -1), (repeat, 1)):
        scorer = ItemScorer("cosine", 0.07, history_bias=True)
        optimizer = torch.optim.SGD(scorer.parameters(), lr=0.01)
        for _ in range(20):
            optimizer.zero_grad()
            scorer.loss(states[:, None], targets[:, None], table, None, histories[:, None]).backward()
            optimizer.step()
        assert scorer.history_bias.weight.item() * direction > 0.01


def test_every_loss_and_the_ranking_score_with_the_same_offset(tiny_domain):
    torch.manual_seed(0)
    model = _model(history_bias=True).eval()
    model.add_domain("books", tiny_domain.num_items, None)
    with torch.no_grad():
        model.scorer.history_bias.weight.fill_(-0.5)
    train = _batches(tiny_domain, "train", pack_to=10)[0]
    full = model.loss(train)
    model.hparams.loss = "chunked"
    model.hparams.item_chunk = 7
    torch.testing.assert_close(model.loss(train), full)
    (grad,) = torch.autograd.grad(model.loss(train), [model.scorer.history_bias.weight])
    assert grad.abs() > 0
    without = _model(history_bias=False, loss="chunked", item_chunk=7).eval()
    without.add_domain("books", tiny_domain.num_items, None)
    without.load_state_dict({k: v for k, v in model.state_dict().items() if "history_bias" not in k})
    assert not torch.allclose(without.loss(train), full)  # the offset changes the loss
    for packed, plain in zip(_batches(tiny_domain, "test", pack_to=10), _batches(tiny_domain, "test"), strict=True):
        for batch in (packed, plain):
            scores = model(batch)
            torch.testing.assert_close(model.ranks(batch), pessimistic_rank(scores, batch["target"]))
        torch.testing.assert_close(model(packed), model(plain))


def test_sampled_loss_offsets_the_candidates_in_the_history(tiny_domain):
    torch.manual_seed(0)
    model = _model(history_bias=True, loss="sampled", num_negatives=8)
    model.add_domain("books", tiny_domain.num_items, None)
    loss = model.loss(_batches(tiny_domain, "train", size=8)[0])
    (grad,) = torch.autograd.grad(loss, [model.scorer.history_bias.weight])
    assert torch.isfinite(loss) and grad.abs() > 0


def test_ranking_and_top_k_apply_the_offset_like_dense_scores():
    torch.manual_seed(0)
    queries, keys = torch.randn(6, 4), torch.randn(12, 4)
    histories = torch.randint(0, 12, (6, 3))
    targets = torch.randint(1, 12, (6,))
    dense = queries @ keys.T - 2.0 * in_history(histories, torch.arange(12))
    dense[:, 0] = float("-inf")
    ranks = chunked_ranks(queries, keys, targets, 5, histories, -2.0)
    torch.testing.assert_close(ranks, pessimistic_rank(dense, targets))
    scores, items = chunked_top_k(queries, keys, 3, 5, None, histories, -2.0)
    torch.testing.assert_close(scores, dense.topk(3).values)


def test_checkpoints_from_before_the_offset_keep_scoring_without_it(tmp_path, tiny_domain):
    from rec_transfer.models.hparams import checkpoint_hparams
    from rec_transfer.models.pretrained import load_pretrained_weights

    hparams, _ = checkpoint_hparams({"mode": "id", "hidden_size": 32}, {})
    assert hparams["history_bias"] is False  # its weights were trained without one
    with pytest.raises(ValueError, match="history_bias"):  # the weights fix whether the model has the offset
        checkpoint_hparams({"mode": "id"}, {"history_bias": True})
    old = _model(history_bias=False)
    old.add_domain("books", tiny_domain.num_items, None)
    torch.save({"state_dict": old.state_dict()}, tmp_path / "old.ckpt")
    new = _model(history_bias=True)
    new.add_domain("books", tiny_domain.num_items, None)
    load_pretrained_weights(new, tmp_path / "old.ckpt")  # the offset starts at its init; every other weight loads
    torch.testing.assert_close(new.encoder.state_dict(), old.encoder.state_dict())
    assert new.scorer.history_bias.logit.item() == 0.0
