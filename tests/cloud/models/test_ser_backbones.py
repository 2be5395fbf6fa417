"""Backbones: shapes for any length and batch, size table, and the windowing helpers."""

from __future__ import annotations

import pytest
import torch

from edgewise.cloud.models import ARCHS, SIZES, ModelConfig, build_model, count_parameters
from edgewise.cloud.models.layers import MultiHeadSelfAttention, merge_tokens, windowed_self_attention


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize(("batch", "length"), [(1, 20), (3, 21), (2, 37), (1, 1000)])
def test_any_length_and_batch_gives_logits_and_hidden(arch, batch, length):
    model = build_model(ModelConfig(arch=arch, n_classes=5)).eval()
    x = torch.randn(batch, length, 64)
    with torch.no_grad():
        logits, hidden = model.forward_with_hidden(x)
        assert torch.equal(model(x), logits)
    assert logits.shape == (batch, 5)
    assert hidden.shape == (batch, model.d_model)
    assert model.n_classes == 5
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("arch", list(ARCHS))
def test_batch_items_do_not_see_each_other(arch):
    model = build_model(ModelConfig(arch=arch)).eval()
    x = torch.randn(3, 53, 64)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_trains_with_batch_one(arch):
    model = build_model(ModelConfig(arch=arch, n_mels=40)).train()
    loss = torch.nn.functional.cross_entropy(model(torch.randn(1, 33, 40)), torch.tensor([2]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_size_table_ranges():
    for arch in ARCHS:
        params = {
            size: count_parameters(build_model(ModelConfig(arch=arch, size=size))) for size in SIZES[arch]
        }
        assert 50_000 <= params["tiny"] <= 150_000, (arch, params)
        assert 3 <= params["small"] / params["tiny"] <= 5, (arch, params)
        assert 1_000_000 <= params["base"] <= 3_000_000, (arch, params)


def test_windowed_attention_equals_attention_within_each_window():
    torch.manual_seed(0)
    attn = MultiHeadSelfAttention(16, 4).eval()
    x = torch.randn(2, 19, 16)  # windows of 8: 8 + 8 + 3 frames, the last one padded
    with torch.no_grad():
        out = windowed_self_attention(attn, x, window=8)
        expected = torch.cat([attn(x[:, s : s + 8]) for s in range(0, 19, 8)], dim=1)
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)


def test_windowed_attention_longer_window_than_sequence():
    attn = MultiHeadSelfAttention(16, 2).eval()
    x = torch.randn(1, 5, 16)
    with torch.no_grad():
        torch.testing.assert_close(windowed_self_attention(attn, x, window=8), attn(x), atol=1e-6, rtol=1e-5)


def test_merge_tokens_averages_groups_and_a_short_last_group():
    x = torch.arange(5.0).view(1, 5, 1)
    assert merge_tokens(x, 2).flatten().tolist() == [0.5, 2.5, 4.0]
    assert merge_tokens(x[:, :4], 2).flatten().tolist() == [0.5, 2.5]
