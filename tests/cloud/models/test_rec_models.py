"""The recommenders' models: HRF merge equivalence, the lazy decoder's shared K/V, teacher forcing against
incremental decoding, and trie-constrained beam search against exhaustive scoring."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgewise.cloud.models.hrf import count_parameters, reparameterize_model
from edgewise.cloud.models.rec.beam import TorchTrie, beam_search
from edgewise.cloud.models.rec.config import RecModelConfig
from edgewise.cloud.models.rec.generative import EncoderDecoderRec, LazyDecoderRec
from edgewise.cloud.models.rec.sasrec import SASRec
from edgewise.rec_ids import PrefixTrie, SemanticIds
from tests.cloud.models.conftest import randomize_

SIZES = (4, 4, 3)
N_ITEMS = 40


def _ids() -> SemanticIds:
    # 40 of the 48 possible code rows, so the unconstrained decoder can emit rows that are no item
    codes = np.array([[i // 12, (i // 3) % 4, i % 3] for i in range(N_ITEMS)], dtype=np.int32)
    return SemanticIds(codes=codes, level_sizes=SIZES)


def _tokens(ids: SemanticIds) -> torch.Tensor:
    tokens = np.zeros((ids.n_items + 1, ids.n_levels), dtype=np.int64)
    tokens[1:] = ids.tokens()
    return torch.from_numpy(tokens)


def _model(cls, **overrides):
    settings = dict(d_model=32, n_heads=4, n_kv_heads=2, kv_group=2, n_layers=3, context_layers=1, max_len=12)
    cfg = RecModelConfig(kind=cls.kind, dropout=0.0, **{**settings, **overrides})
    if cls is SASRec:
        return SASRec(cfg, N_ITEMS)
    return cls(cfg, _tokens(_ids()), SIZES)


def _history(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    history = torch.randint(1, N_ITEMS + 1, (3, 9), generator=gen)
    history[0, :4] = 0  # a short, left-padded history
    return history


@pytest.mark.parametrize("cls", [LazyDecoderRec, EncoderDecoderRec, SASRec])
def test_hrf_merges_into_the_plain_model(cls):
    model = randomize_(_model(cls)).eval()
    merged = reparameterize_model(model)
    plain = _model(cls, hrf=None)
    assert set(merged.state_dict()) == set(plain.state_dict())
    assert count_parameters(merged) < count_parameters(model)
    plain.load_state_dict(merged.state_dict())
    history = _history()
    with torch.no_grad():
        if cls is SASRec:
            a, b = model(history), plain.eval()(history)
        else:
            target = _tokens(_ids())[history[:, -1:]]
            a, b = model(history, target), plain.eval()(history, target)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_lazy_decoder_layers_have_no_kv_projections_and_groups_share_one():
    model = _model(LazyDecoderRec, n_layers=4, kv_group=2)
    assert all(block.cross.kv is None for block in model.blocks)
    assert len(model.ctx_kv) == 2  # 4 layers in groups of 2
    assert model.ctx_kv[0].out_features == 2 * 2 * (32 // 4)  # K and V, 2 KV heads (GQA), head dim 8
    ctx = model.eval().context(_history(), every_position=False)
    assert ctx.kv[0][0] is ctx.kv[1][0] and ctx.kv[2][0] is ctx.kv[3][0]
    assert ctx.kv[0][0] is not ctx.kv[2][0]
    encdec = _model(EncoderDecoderRec)
    assert all(block.cross.kv is not None for block in encdec.blocks)


@pytest.mark.parametrize("positions", [False, True])
def test_lazy_every_position_pass_equals_one_pass_per_prefix(positions):
    model = randomize_(_model(LazyDecoderRec, context_positions=positions), seed=1).eval()
    history = _history()
    tokens = model.embed.item_tokens[history]
    with torch.no_grad():
        every = model(history, tokens)  # (B, T, L, V): target at t is read after history[:t + 1]
        for t in (4, 6, 8):
            single = model(history[:, : t + 1], tokens[:, t : t + 1])
            torch.testing.assert_close(every[1:, t], single[1:, 0], atol=1e-5, rtol=1e-4)


def test_lazy_context_positions_are_read_and_padding_does_not_move_them():
    model = randomize_(_model(LazyDecoderRec, context_positions=True), seed=3).eval()
    history = _history()[1:]  # two full histories
    padded = torch.cat([torch.zeros(2, 3, dtype=torch.long), history], 1)  # the same, with more padding
    target = model.embed.item_tokens[history[:, -1:]]
    with torch.no_grad():
        out = model(history, target)
        torch.testing.assert_close(model(padded, target), out, atol=1e-5, rtol=1e-4)
        model.position.weight.zero_()
        assert not torch.allclose(model(history, target), out, atol=1e-4)


def test_lazy_sampled_positions_equal_the_every_position_pass():
    from edgewise.cloud.train.rec_job import sample_positions

    model = randomize_(_model(LazyDecoderRec), seed=7).eval()
    history = _history()
    targets = torch.cat([history[:, 1:], torch.zeros(3, 1, dtype=torch.long)], 1) * (history > 0)
    positions, chosen = sample_positions(targets.numpy(), 3, np.random.default_rng(0))
    assert (chosen[:, -1] > 0).all() and (np.diff(positions, axis=1) > 0).all()
    assert (chosen == np.take_along_axis(targets.numpy(), positions, 1)).all()
    tokens = model.embed.item_tokens[history]
    with torch.no_grad():
        every = model(history, tokens)
        picked = torch.from_numpy(positions)
        sampled = model(history, tokens.gather(1, picked[..., None].expand(-1, -1, tokens.shape[2])), picked)
    expected = every.gather(1, picked[:, :, None, None].expand(-1, -1, *every.shape[2:]))
    torch.testing.assert_close(sampled, expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("cls", [LazyDecoderRec, EncoderDecoderRec])
def test_incremental_decoding_with_the_cache_equals_teacher_forcing(cls):
    model = randomize_(_model(cls), seed=2).eval()
    history = _history()
    target = model.embed.item_tokens[torch.tensor([[3], [17], [40]])]  # (B, 1, L)
    with torch.no_grad():
        forced = model(history, target)[:, 0]
        ctx = model.context(history, every_position=False)
        tokens, caches = None, None
        for level in range(len(SIZES)):
            logits, caches = model.step(ctx, tokens, level, caches)
            torch.testing.assert_close(logits[:, 0], forced[:, level], atol=1e-5, rtol=1e-4)
            tokens = target[:, :, level]


def _item_log_probs(model, history, trie: PrefixTrie, constrained: bool) -> torch.Tensor:
    """(B, n_items) log-probability of every item, teacher-forced, level by level: the softmax of a
    level over the trie's children of the item's prefix (``constrained``), or over the whole level."""
    tokens = model.embed.item_tokens[1:]  # (n, L)
    codes = tokens.numpy() - np.asarray(model.level_offsets)
    scores = []
    with torch.no_grad():
        for item in range(N_ITEMS):
            logits = model(history, tokens[item].expand(history.shape[0], 1, -1))[:, 0]
            total = torch.zeros(history.shape[0])
            node = np.zeros(1, dtype=np.int64)
            for level, (offset, size) in enumerate(zip(model.level_offsets, SIZES, strict=True)):
                lg = logits[:, level, offset : offset + size]
                if constrained:
                    allowed = torch.from_numpy(trie.allowed(node, level)[0])
                    lg = lg.masked_fill(~allowed, float("-inf"))
                total = total + torch.log_softmax(lg, -1)[:, codes[item, level]]
                node = trie.step(node, codes[item, level : level + 1])
            scores.append(total)
    return torch.stack(scores, 1)


@pytest.mark.parametrize("cls", [LazyDecoderRec, EncoderDecoderRec])
def test_beam_search_finds_the_exhaustive_best_items(cls):
    trie = PrefixTrie.build(_ids())
    model = randomize_(_model(cls), seed=3).eval()
    history = _history()
    exhaustive = _item_log_probs(model, history, trie, constrained=True)
    result = beam_search(model, history, TorchTrie.from_trie(trie), beam=N_ITEMS)  # wide enough to be exact
    best = exhaustive.topk(10, dim=1)
    assert (result.items[:, :10] == best.indices.numpy()).all()
    np.testing.assert_allclose(result.scores[:, :10], best.values.numpy(), atol=1e-4)
    narrow = beam_search(model, history, TorchTrie.from_trie(trie), beam=5)
    assert (narrow.items >= 0).all() and narrow.items.shape == (3, 5)
    assert all(len(set(row)) == 5 for row in narrow.items.tolist())


def test_a_beam_score_is_minus_the_constrained_training_loss():
    """Beam search scores an item with the normalization training optimizes (constrained_loss)."""
    from types import SimpleNamespace

    from edgewise.cloud.train.rec_job import generative_loss_terms

    ids = _ids()
    trie = PrefixTrie.build(ids)
    model = randomize_(_model(LazyDecoderRec), seed=6).eval()
    history = _history()
    targets = torch.tensor([[7], [20], [33]])  # 1-based
    data = SimpleNamespace(torch_trie=lambda device: TorchTrie.from_trie(trie))
    with torch.no_grad():
        per_level, labels = generative_loss_terms(model, data, history, targets, constrained=True)
        ce = sum(
            torch.nn.functional.cross_entropy(lg, y, reduction="none") for lg, y in zip(per_level, labels)
        )
    result = beam_search(model, history, TorchTrie.from_trie(trie), beam=N_ITEMS)
    for row, target in enumerate(targets[:, 0].tolist()):
        position = list(result.items[row]).index(target - 1)
        assert result.scores[row, position] == pytest.approx(-float(ce[row]), abs=1e-4)


def test_without_the_trie_the_decoder_can_emit_ids_that_are_no_item():
    ids = _ids()
    model = randomize_(_model(LazyDecoderRec), seed=4).eval()
    trie = TorchTrie.from_trie(PrefixTrie.build(ids))
    free = beam_search(model, _history(), trie, beam=48, constrained=False)
    assert (free.items < 0).any()  # 8 of the 48 code rows are no item
    rows = {tuple(r) for r in ids.codes.tolist()}
    for items, codes in zip(free.items.reshape(-1), free.codes.reshape(-1, 3), strict=True):
        assert (items >= 0) == (tuple(codes.tolist()) in rows)
    constrained = beam_search(model, _history(), trie, beam=40)
    assert (constrained.items >= 0).all()


def test_sasrec_scores_every_item_and_ignores_padding():
    model = randomize_(_model(SASRec), seed=5).eval()
    history = _history()
    with torch.no_grad():
        hidden = model(history)
        scores = model.scores(hidden[:, -1])
        # more left padding does not change the last position's output
        wider = torch.cat([torch.zeros(3, 2, dtype=torch.long), history], 1)
        again = model.scores(model(wider)[:, -1])
    assert scores.shape == (3, N_ITEMS)
    torch.testing.assert_close(scores[0], again[0], atol=1e-5, rtol=1e-4)
