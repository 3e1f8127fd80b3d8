"""Pure components and the recommender's maths: shapes, causality, learning."""

import pytest
import torch
from model_helpers import TinyTop
from model_helpers import batches as _batches
from model_helpers import tiny_model as _model

from rec_transfer.metrics import pessimistic_rank
from rec_transfer.models.components import ItemTower, MoEAdaptor, SequenceEncoder
from rec_transfer.models.components.item_text import FrozenItemText
from rec_transfer.models.recommender import TransferRecommender


def test_sequence_encoder_is_causal():
    torch.manual_seed(0)
    enc = SequenceEncoder(hidden=32, layers=2, heads=2, dropout=0.0, max_len=10).eval()
    x = torch.randn(2, 6, 32)
    y = enc(x)
    assert y.shape == (2, 6, 32)
    x2 = x.clone()
    x2[:, 4:] = torch.randn(2, 2, 32)  # change the future of position 3
    y2 = enc(x2)
    torch.testing.assert_close(y[:, :4], y2[:, :4])
    assert not torch.allclose(y[:, 4:], y2[:, 4:])


def test_right_padding_does_not_change_real_positions():
    torch.manual_seed(0)
    enc = SequenceEncoder(hidden=32, layers=2, heads=2, dropout=0.0, max_len=10).eval()
    x = torch.randn(1, 3, 32)
    padded = torch.cat([x, torch.zeros(1, 4, 32)], dim=1)
    torch.testing.assert_close(enc(x), enc(padded)[:, :3])


def test_item_tower_modes():
    vectors = torch.randn(6, 16)
    vectors[0] = 0
    for mode in ("text", "text+id", "id"):
        tower = ItemTower(8, mode, FrozenItemText(16) if mode != "id" else None, experts=3)
        tower.add_domain("a", 5, vectors if mode != "id" else None)
        table = tower("a")
        assert table.shape == (6, 8)
        assert torch.all(table[0] == 0)  # padding row
    text_only = ItemTower(8, "text", FrozenItemText(16), experts=3)
    text_only.add_domain("a", 5, vectors)
    # Vectors are rebuilt from the cache, not checkpointed.
    assert not any("vectors" in k for k in text_only.state_dict())
    assert MoEAdaptor(16, 8, experts=3)(torch.randn(4, 16)).shape == (4, 8)


def test_packed_rows_give_the_same_scores_and_loss(tiny_domain):
    """Packing several histories into one row changes the work, not the result."""
    torch.manual_seed(0)
    model = _model(similarity="dot", temperature=1.0).eval()
    model.add_domain("books", tiny_domain.num_items, None)
    for split in ("valid", "predict"):
        for plain, packed in zip(_batches(tiny_domain, split), _batches(tiny_domain, split, pack_to=10), strict=True):
            assert len(packed["input"]) < len(plain["input"])  # several histories per row
            torch.testing.assert_close(model(packed), model(plain))
    for plain, packed in zip(_batches(tiny_domain, "train"), _batches(tiny_domain, "train", pack_to=10), strict=True):
        torch.testing.assert_close(model.loss(packed), model.loss(plain))


def test_packed_attention_stays_inside_each_history():
    torch.manual_seed(0)
    enc = SequenceEncoder(hidden=16, layers=1, heads=2, dropout=0.0, max_len=4).eval()
    x = torch.randn(1, 6, 16)
    positions, segments = torch.tensor([[0, 1, 2, 0, 1, 0]]), torch.tensor([[1, 1, 1, 2, 2, 0]])
    y = enc(x, positions, segments)
    x2 = x.clone()
    x2[:, :3] = torch.randn(1, 3, 16)  # change the first history only
    y2 = enc(x2, positions, segments)
    torch.testing.assert_close(y[:, 3:], y2[:, 3:])
    torch.testing.assert_close(y[:, 3:5], enc(x[:, 3:5]))  # the second history alone, unpacked


def test_scores_and_loss_shapes(tiny_domain):
    model = _model(similarity="dot", temperature=1.0)
    model.add_domain("books", tiny_domain.num_items, None)
    batch = _batches(tiny_domain, "valid")[0]
    scores = model(batch)
    assert scores.shape == (len(batch["user"]), tiny_domain.num_items + 1)
    assert torch.isinf(scores[:, 0]).all()  # padding is never recommended
    loss = model.loss(_batches(tiny_domain, "train")[0])
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_tiny_model_overfits_tiny_domain(tiny_domain):
    torch.manual_seed(0)
    model = _model(similarity="dot", temperature=1.0, lr=1e-2)
    model.add_domain("books", tiny_domain.num_items, None)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batches = _batches(tiny_domain, "train")
    first = None
    for _ in range(150):
        for b in batches:
            loss = model.loss(b)
            opt.zero_grad()
            loss.backward()
            opt.step()
        first = first or loss.item()
    assert loss.item() < 0.3 * first


def test_evaluation_builds_the_item_table_once_and_never_scores_with_stale_weights(tiny_domain):
    torch.manual_seed(0)
    model = _model(mode="text", similarity="dot", temperature=1.0, item_chunk=7)  # several chunks of items
    model.add_domain("books", tiny_domain.num_items, torch.randn(tiny_domain.num_items + 1, 16))
    calls = []
    model.item_tower.register_forward_hook(lambda *_: calls.append(1))
    batches = _batches(tiny_domain, "valid", size=8)
    assert len(batches) > 1

    def full_ranks():  # the whole score matrix, built afresh for every batch
        with torch.no_grad():
            return torch.cat([pessimistic_rank(model(b), b["target"]) for b in batches])

    model.eval()
    with torch.no_grad():
        cached = torch.cat([model.ranks(b) for b in batches])
    assert len(calls) == 1  # one table for the whole pass
    assert torch.equal(cached, full_ranks())  # chunked ranking = full ranking
    model.train()  # a training step changes the adaptor; the next evaluation must see it
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.loss(_batches(tiny_domain, "train")[0]).backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        after = torch.cat([model.ranks(b) for b in batches])
    assert not torch.equal(after, cached) and torch.equal(after, full_ranks())


def test_chunked_ranks_count_ties_against_the_target_and_top_k_skips_exclusions():
    from rec_transfer.models.components.ranking import chunked_ranks, chunked_top_k

    keys = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [-1.0, 0.0]])  # 3 = 1's twin
    queries = torch.tensor([[1.0, 0.1], [-0.1, 1.0]])
    for chunk in (1, 2, 5):
        # Item 1 ties with item 3: ranked below it whichever comes first.
        assert chunked_ranks(queries, keys, torch.tensor([1, 2]), chunk).tolist() == [2, 1]
        assert chunked_ranks(queries, keys, torch.tensor([3, 5]), chunk).tolist() == [2, 3]
        scores, items = chunked_top_k(queries, keys, 3, chunk, exclude=torch.tensor([[1, 0], [2, 4]]))
        assert items[0].tolist() == [3, 4, 2] and items[1][0] == 5 and set(items[1][1:].tolist()) == {1, 3}
    assert chunked_top_k(queries, keys, 10, 2)[1].shape == (2, 5)  # at most N


def test_chunked_cross_entropy_is_exact_in_value_and_gradients():
    from rec_transfer.models.components.losses import chunked_cross_entropy

    torch.manual_seed(0)
    states, items = torch.randn(7, 5, requires_grad=True), torch.randn(23, 5, requires_grad=True)
    targets = torch.randint(0, 23, (7,))
    expected = torch.nn.functional.cross_entropy(states @ items.T, targets)
    expected_grads = torch.autograd.grad(expected, (states, items))
    loss = chunked_cross_entropy(states, items, targets, chunk=4)  # 23 items in 6 uneven chunks
    torch.testing.assert_close(loss, expected)
    for got, want in zip(torch.autograd.grad(loss, (states, items)), expected_grads, strict=True):
        torch.testing.assert_close(got, want)


def test_sampled_softmax_candidates_and_log_q():
    from rec_transfer.models.components.losses import sample_candidates, sampled_softmax

    torch.manual_seed(0)
    popularity = torch.tensor([0.0, 0.7, 0.2, 0.1, 0.0, 0.0])  # item 0 is padding
    targets = torch.tensor([1, 1, 2, 3])
    candidates, labels, log_q = sample_candidates(targets, 5, 3, popularity)
    assert torch.equal(candidates[labels], targets) and torch.equal(candidates, torch.unique(candidates))
    assert log_q[candidates == 1] > log_q[candidates == 3]  # the popular item is drawn more often
    assert bool((log_q <= 0).all())
    # With every item certain to be drawn, the correction vanishes and the loss is the full softmax's.
    candidates, labels, log_q = sample_candidates(targets, 5, 10_000, popularity)
    assert torch.equal(candidates, torch.arange(1, 6)) and float(log_q.abs().max()) < 1e-6
    states, items = torch.randn(4, 3), torch.randn(5, 3)
    torch.testing.assert_close(
        sampled_softmax(states, items, labels, log_q), torch.nn.functional.cross_entropy(states @ items.T, targets - 1)
    )


def test_sampled_loss_runs_the_item_tower_on_the_batch_items_only(tiny_domain):
    torch.manual_seed(0)
    model = _model(mode="text", loss="sampled", num_negatives=4)
    model.add_domain("books", tiny_domain.num_items, torch.randn(tiny_domain.num_items + 1, 16))
    rows = []
    model.item_tower.adaptor.register_forward_hook(lambda m, args, out: rows.append(len(out)))
    batch = _batches(tiny_domain, "train", size=4)[0]
    loss = model.loss(batch)
    loss.backward()
    needed = torch.unique(torch.cat([batch["input"].flatten(), batch["target"].flatten()]))
    assert len(rows) == 1 and len(needed) <= rows[0] <= len(needed) + 4 < tiny_domain.num_items
    assert torch.isfinite(loss)


def test_contrast_views_read_each_history_at_its_last_token_packed_or_not(tiny_domain):
    from rec_transfer.models.components.history import history_ends

    packed = _batches(tiny_domain, "valid", size=16, pack_to=10)[0]
    assert torch.equal(history_ends(packed["input"], packed["segments"]), packed["last"])
    train = [_batches(tiny_domain, "train", size=16, pack_to=p)[0] for p in (None, 10)]
    assert len(history_ends(train[1]["input"], train[1]["segments"])) == len(train[1]["user"])
    torch.manual_seed(0)
    model = _model(mode="text", contrast_mask=0.0)
    model.add_domain("books", tiny_domain.num_items, torch.randn(tiny_domain.num_items + 1, 8))
    model.eval()
    unpacked, packed = (model.contrast_loss(batch) for batch in train)  # no dropout, nothing masked: two equal views
    torch.testing.assert_close(unpacked, packed)


@pytest.mark.parametrize("bad", [{"contrast_mask": 1.0}, {"contrast_mask": -0.1}, {"contrast_weight": -1.0}])
def test_contrast_settings_out_of_range_are_refused(bad):
    with pytest.raises(ValueError, match="contrast_mask .*: a share in \\[0, 1\\); contrast_weight .*: >= 0"):
        _model(**bad)


def test_mask_items_masks_about_its_share_and_never_padding():
    from rec_transfer.models.components.contrast import mask_items

    torch.manual_seed(0)
    inputs = torch.randint(1, 50, (64, 40))
    inputs[:, 30:] = 0
    assert torch.equal(mask_items(inputs, 0.0), inputs)
    masked = mask_items(inputs, 0.2)
    assert torch.equal(masked[:, 30:], inputs[:, 30:]) and ((masked == inputs) | (masked == 0)).all()
    assert 0.17 < (masked[:, :30] == 0).float().mean() < 0.23


def test_sequence_contrast_is_low_for_matching_views_and_high_for_swapped_ones():
    from rec_transfer.models.components.contrast import sequence_contrast

    torch.manual_seed(0)
    a = torch.randn(32, 16)
    b = a + 0.1 * torch.randn(32, 16)
    matched, swapped = sequence_contrast(a, b, 0.07), sequence_contrast(a, b.roll(1, dims=0), 0.07)
    assert matched < 0.1 < 5.0 < swapped
    same = torch.ones(32, 16)  # every history alike: no pair can be told apart
    torch.testing.assert_close(sequence_contrast(same, same, 0.07), torch.log(torch.tensor(32.0)))


def test_gradient_reversal_and_the_discriminator():
    from rec_transfer.models.components.alignment import DomainDiscriminator, reverse_gradient

    x = torch.randn(3, 4, requires_grad=True)
    (reverse_gradient(x, 0.5) * 2).sum().backward()
    torch.testing.assert_close(x.grad, torch.full((3, 4), -1.0))
    torch.manual_seed(0)
    disc = DomainDiscriminator(8)
    source, target = torch.randn(32, 8) + 1, torch.randn(32, 8) - 1
    vectors = source.clone().requires_grad_()
    loss, _ = disc(vectors, target)
    (reversed_grad,) = torch.autograd.grad(loss, vectors)
    labels = torch.cat([torch.zeros(32), torch.ones(32)])
    logits = disc.net(torch.cat([vectors, target])).squeeze(-1)
    plain = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
    (plain_grad,) = torch.autograd.grad(plain, vectors)
    torch.testing.assert_close(reversed_grad, -plain_grad)  # the vectors move to confuse the discriminator
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2)
    for _ in range(50):  # ... while the discriminator itself learns to separate the domains
        loss, accuracy = disc(source, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert accuracy > 0.9


def test_trainable_text_bank_is_refreshed_before_evaluation_and_carries_gradients(tiny_domain):
    from rec_transfer.models.components.item_text import TrainableItemText
    from rec_transfer.text.trainable import TokenStates, gather_tokens

    torch.manual_seed(0)
    lengths = torch.tensor([0, 3, 1, 2, 4])  # item 0: padding, no tokens
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    tokens = TokenStates(torch.randn(int(lengths.sum()), 6), offsets)
    text = TrainableItemText(TinyTop(6))
    text.add_domain("d", tokens)
    text.train()
    opt = torch.optim.SGD(text.parameters(), lr=0.5)
    rows = text("d", torch.tensor([1, 2, 3, 4]), train_items=torch.tensor([2]))
    (rows * torch.tensor([[0.0], [1.0], [0.0], [0.0]])).sum().backward()  # only item 2's row counts
    assert text.top.lin.weight.grad is not None and text.top.lin.weight.grad.abs().sum() > 0
    opt.step()
    text.eval()
    with torch.no_grad():
        full = text("d")  # refreshed: the weights moved since the bank was filled
        expected = text.top(*gather_tokens(tokens.values, tokens.offsets, torch.arange(1, 5)))
    torch.testing.assert_close(full[1:], expected)
    assert torch.all(full[0] == 0)


def test_trainable_text_scores_every_row_of_a_step_with_the_same_weights():
    # Recomputed rows take the bank's values and carry the gradients: a batch's own items cannot be told from the
    # bank's rows by how recent their vectors are.
    from rec_transfer.models.components.item_text import TrainableItemText
    from rec_transfer.text.trainable import TokenStates

    torch.manual_seed(0)
    text = TrainableItemText(TinyTop(4))
    text.add_domain("d", TokenStates(torch.randn(6, 4), torch.tensor([0, 0, 2, 4, 6])))
    opt = torch.optim.SGD(text.parameters(), lr=0.5)
    text.train()
    text.new_epoch()
    for step in range(2):
        rows = text("d", torch.tensor([1, 2, 3]), train_items=torch.tensor([2]))
        if step == 1:  # the weights moved at step 0; values stay those of the epoch's start
            torch.testing.assert_close(rows.detach(), text.bank_d[[1, 2, 3]])
            moved = text._encode("d", torch.tensor([2])).detach()
            assert not torch.allclose(moved, rows[1:2].detach())
        opt.zero_grad()
        rows[1].sum().backward()  # item 2's row alone
        assert text.top.lin.weight.grad.abs().sum() > 0
        opt.step()


def test_trainable_text_writes_back_each_recomputed_row_for_the_next_step():
    from rec_transfer.models.components.item_text import TrainableItemText
    from rec_transfer.text.trainable import TokenStates

    torch.manual_seed(0)
    tokens = TokenStates(torch.randn(6, 4), torch.tensor([0, 0, 2, 4, 6]))
    text = TrainableItemText(TinyTop(4), write_back=True)
    text.add_domain("d", tokens)
    opt = torch.optim.SGD(text.parameters(), lr=0.5)
    text.train()
    text.new_epoch()
    start = previous = None  # the bank at the epoch's start; item 2's vector under the weights of the step before
    for step in range(3):
        weights_now = text._encode("d", torch.tensor([2])).detach()[0]
        rows = text("d", torch.tensor([1, 2, 3]), train_items=torch.tensor([2]))
        if step == 0:
            start = text.bank_d.clone()
        else:  # item 2 reads its vector of the step before; item 3, never trained, that of the epoch's start
            torch.testing.assert_close(rows[1].detach(), previous)
            assert not torch.allclose(rows[1].detach(), weights_now)
            torch.testing.assert_close(rows[2].detach(), start[3])
        torch.testing.assert_close(text.bank_d[2], weights_now)  # written after the read
        previous = weights_now
        opt.zero_grad()
        rows[1].sum().backward()
        opt.step()


def test_trainable_text_whitens_each_domain_with_the_bank_of_its_refresh():
    from rec_transfer.models.components.item_text import TrainableItemText
    from rec_transfer.text.trainable import TokenStates
    from rec_transfer.text.whitening import whitened

    torch.manual_seed(0)
    lengths = torch.tensor([0] + [2] * 12)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
    text = TrainableItemText(TinyTop(6), whiten=True)
    text.add_domain("d", TokenStates(torch.randn(24, 6) * torch.arange(1.0, 7.0), offsets))
    text.eval()
    with torch.no_grad():
        full = text("d")
        some = text("d", torch.tensor([3, 5]))
    torch.testing.assert_close(full[1:], whitened(text.bank_d[1:]))
    torch.testing.assert_close(some, full[[3, 5]])
    assert torch.all(full[0] == 0)


def test_trainable_text_centres_on_the_items_with_interactions_only():
    from rec_transfer.models.components.item_text import TrainableItemText
    from rec_transfer.text.trainable import TokenStates

    torch.manual_seed(0)
    values = torch.randn(12, 6) + 3.0  # six items of two tokens each, far from the origin
    offsets = torch.arange(0, 14, 2)
    for whiten in (False, True):
        text = TrainableItemText(TinyTop(6), whiten=whiten)
        text.add_domain("old", TokenStates(values[:8], offsets[:5]).with_padding_item())  # 4 items
        # The same 4 items and 2 more ranked by their text alone (catalogue: all), numbered after them.
        text.add_domain("all", TokenStates(values, offsets).with_padding_item(), centred_items=4)
        text.eval()
        with torch.no_grad():
            old, every = text("old"), text("all")
        torch.testing.assert_close(every[:5], old)  # the 4 items' vectors do not move
        assert not torch.allclose(text.mean_all, text.bank_all[1:].mean(dim=0))


def test_item_tower_refuses_text_vectors_of_another_width() -> None:
    tower = ItemTower(hidden=8, mode="text", text=FrozenItemText(6))
    tower.add_domain("books", 3, torch.randn(4, 6))
    with pytest.raises(ValueError, match=r"'toys' has text vectors of width 5, the other domains 6"):
        tower.add_domain("toys", 3, torch.randn(4, 5))


def test_param_groups_scale_named_parts_and_give_the_text_top_its_rate():
    from rec_transfer.models.optim import param_groups

    model = torch.nn.ModuleDict({"encoder": torch.nn.Linear(2, 2), "adaptor": torch.nn.Linear(2, 2)})
    text = torch.nn.Linear(3, 3)
    model["text"] = text
    groups = param_groups(model, 1e-3, text, 1e-5, {"encoder": 0.1})
    lrs = [g["lr"] for g in groups]
    assert lrs == pytest.approx([1e-4, 1e-5, 1e-3])
    assert [len(g["params"]) for g in groups] == [2, 2, 2]  # every parameter in exactly one group
    model["encoder"].requires_grad_(False)  # frozen parts are in none
    assert [g["lr"] for g in param_groups(model, 1e-3, None, None, {"encoder": 0.1})] == [1e-3]
    with pytest.raises(ValueError, match="'decoder'"):
        param_groups(model, 1e-3, None, None, {"decoder": 0.5})


def test_the_learning_rate_scales_follow_the_phase():
    model = _model(lr=1e-3, lr_scale={"encoder": 2.0}, target_lr=5e-4, target_lr_scale={"encoder": 0.5})
    encoder = {id(p) for p in model.encoder.parameters()}

    def rates() -> tuple[float, float]:  # the encoder's learning rate, and the rest's
        groups = model._param_groups()
        inside = [g["lr"] for g in groups if id(g["params"][0]) in encoder]
        return inside[0], next(g["lr"] for g in groups if id(g["params"][0]) not in encoder)

    assert rates() == pytest.approx((2e-3, 1e-3))  # the source phase, or a run without transfer
    model.on_transfer_phase("target")
    assert rates() == pytest.approx((2.5e-4, 5e-4))


def test_the_default_recipe_trains_the_text_adaptor_at_twice_the_target_rate():
    text = _model(mode="text", lr=1e-3, target_lr=5e-4)  # target_lr_scale left out: the recipe's
    text.add_domain("books", 20, torch.randn(21, 16))
    adaptor = {id(p) for p in text.item_tower.adaptor.parameters()}

    def rates(model) -> dict[str, float]:  # the learning rate of the adaptor's parameters, and of the rest's
        return {("adaptor" if id(g["params"][0]) in adaptor else "rest"): g["lr"] for g in model._param_groups()}

    assert rates(text) == {"rest": 1e-3}  # the source phase: one rate
    text.on_transfer_phase("target")
    assert rates(text) == pytest.approx({"adaptor": 1e-3, "rest": 5e-4})
    text.hparams.target_lr_scale = {}  # every part at the target rate
    assert rates(text) == {"rest": 5e-4}
    ids = _model(mode="id", target_lr=5e-4)  # no adaptor: the default names none
    ids.on_transfer_phase("target")
    assert [g["lr"] for g in ids._param_groups()] == [5e-4]


def test_trainable_text_bank_refreshes_once_per_epoch_and_after_loaded_weights():
    from rec_transfer.models.components.item_text import TrainableItemText
    from rec_transfer.text.trainable import TokenStates

    torch.manual_seed(0)
    text = TrainableItemText(TinyTop(4))
    text.add_domain("d", TokenStates(torch.randn(6, 4), torch.tensor([0, 0, 2, 4, 6])))
    refreshes = []
    real = text.refresh
    text.refresh = lambda domain: (refreshes.append(domain), real(domain))
    opt = torch.optim.SGD(text.parameters(), lr=0.1)
    text.train()
    for _ in range(2):  # two epochs of two steps, each followed by an evaluation
        text.new_epoch()
        for _ in range(2):
            text("d", torch.tensor([1, 2, 3]), train_items=torch.tensor([2])).sum().backward()
            opt.step()
        text.eval()
        with torch.no_grad():
            text("d")
        text.train()
    assert len(refreshes) == 3  # the first training step, then each evaluation; the epoch after one reuses it
    state = {k: v + 1 for k, v in text.state_dict().items()}
    text.load_state_dict(state)  # new weights from outside (a checkpoint, a handed-over source epoch)
    text.eval()
    with torch.no_grad():
        text("d")
    assert len(refreshes) == 4


def test_vector_shapes_undo_what_they_apply():
    from rec_transfer.text.whitening import VectorShape

    torch.manual_seed(0)
    raw = torch.randn(20, 6) * torch.arange(1.0, 7.0) + 3.0
    for whiten in (False, True):
        shape = VectorShape.fit(raw[:15], whiten)
        torch.testing.assert_close(shape.undo(shape.apply(raw)), raw, atol=1e-4, rtol=0)
        assert shape.same_as(VectorShape.from_state(shape.state())) and not shape.same_as(VectorShape.fit(raw, whiten))


@pytest.mark.parametrize("whiten", [False, True])
def test_a_checkpoint_sees_its_items_centred_as_when_it_trained(tmp_path, whiten):
    from types import SimpleNamespace

    from rec_transfer.text.whitening import VectorShape

    torch.manual_seed(0)
    raw = torch.randn(7, 8) * torch.arange(1.0, 9.0) + 2.0  # 7 items' text vectors as the language model gives them

    def text_model(rows: int) -> TransferRecommender:  # its data centres the vectors on the first `rows` items
        shape = VectorShape.fit(raw[:rows], whiten)
        vectors = torch.cat([torch.zeros(1, 8), shape.apply(raw)])
        shop = SimpleNamespace(num_items=7, centred_items=rows, item_text=vectors, item_popularity=None,
                               vector_shape=shape)  # fmt: skip
        model = TransferRecommender(mode="text", hidden_size=16, layers=1, heads=2, max_len=5)
        model.add_domains(SimpleNamespace(domains={"shop": shop}))
        return model

    trained, path = text_model(5), tmp_path / "trained.ckpt"
    checkpoint = {"state_dict": trained.state_dict()}
    trained.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    seen = trained.item_tower.text.vectors_shop
    served = text_model(7)  # the data has moved on: two more items with interactions move its centre
    assert not torch.allclose(served.item_tower.text.vectors_shop, seen, atol=1e-3)
    served.load_pretrained(str(path))  # --model.pretrained, Recommender
    torch.testing.assert_close(served.item_tower.text.vectors_shop, seen, atol=1e-4, rtol=0)
    resumed = text_model(7)
    resumed.prepare_for(checkpoint, path)  # --ckpt_path
    torch.testing.assert_close(resumed.item_tower.text.vectors_shop, seen, atol=1e-4, rtol=0)
    again = {}
    resumed.on_save_checkpoint(again)  # and its own checkpoints keep the shape it trained on
    assert VectorShape.from_state(again["text_shapes"]["shop"]).same_as(VectorShape.fit(raw[:5], whiten))
