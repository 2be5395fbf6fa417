"""HRF: the training form merges into exactly the plain backbone, with the same outputs."""

from __future__ import annotations

import pytest
import torch

from edgewise.cloud.models import (
    ARCHS,
    HRFConfig,
    ModelConfig,
    build_model,
    count_parameters,
    plain_config,
    reparameterize_model,
)
from edgewise.cloud.models.layers import FeedForward

TOL = {"atol": 1e-5, "rtol": 1e-4}
LENGTHS = (37, 101, 299)

CASES = [(arch, "tiny", HRFConfig()) for arch in ARCHS]
CASES += [(arch, "small", HRFConfig()) for arch in ARCHS]
CASES += [(arch, "micro", HRFConfig()) for arch in ARCHS]
CASES += [(arch, "tiny", HRFConfig(rank=16)) for arch in ARCHS]  # rank < d_model
CASES += [(arch, "tiny", HRFConfig(expansion=2.0)) for arch in ARCHS]


def _structure(model: torch.nn.Module) -> list[tuple[str, type]]:
    return [(name, type(module)) for name, module in model.named_modules()]


def _shapes(model: torch.nn.Module) -> dict[str, torch.Size]:
    return {key: value.shape for key, value in model.state_dict().items()}


@pytest.mark.parametrize(("arch", "size", "hrf"), CASES, ids=lambda v: str(v).replace(" ", ""))
def test_merged_model_gives_the_same_outputs(arch, size, hrf, randomize):
    model = randomize(build_model(ModelConfig(arch=arch, size=size, hrf=hrf))).eval()
    merged = reparameterize_model(model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for length in LENGTHS:
            for batch in (1, 3):
                x = torch.randn(batch, length, 64, generator=gen)
                logits, hidden = model.forward_with_hidden(x)
                merged_logits, merged_hidden = merged.forward_with_hidden(x)
                torch.testing.assert_close(merged_logits, logits, **TOL)
                torch.testing.assert_close(merged_hidden, hidden, **TOL)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_merged_model_is_the_plain_backbone(arch, randomize):
    cfg = ModelConfig(arch=arch, hrf=HRFConfig(expansion=1.5))
    merged = reparameterize_model(randomize(build_model(cfg)).eval())
    plain = build_model(plain_config(cfg)).eval()

    assert count_parameters(merged) == count_parameters(plain)
    assert _structure(merged) == _structure(plain)
    assert _shapes(merged) == _shapes(plain)
    assert merged.config.hrf is None
    assert merged.config == plain_config(cfg)

    plain.load_state_dict(merged.state_dict(), strict=True)
    x = torch.randn(2, 77, 64)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), merged(x), rtol=0, atol=0)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_training_form_has_the_extra_layers(arch):
    cfg = ModelConfig(arch=arch, hrf=HRFConfig())
    with_hrf, plain = build_model(cfg), build_model(plain_config(cfg))
    n_ffn = sum(isinstance(m, FeedForward) for m in plain.modules())
    d = plain.d_model
    assert n_ffn > 0
    assert count_parameters(with_hrf) - count_parameters(plain) == n_ffn * (d * d + d)
    assert all(m.hrf is not None for m in with_hrf.modules() if isinstance(m, FeedForward))


def test_hrf_layer_receives_gradients():
    model = build_model(ModelConfig(arch="conformer", hrf=HRFConfig(rank=8))).train()
    model(torch.randn(1, 45, 64)).sum().backward()
    hrf_layers = [m.hrf for m in model.modules() if isinstance(m, FeedForward)]
    assert all(layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0 for layer in hrf_layers)


def test_reparameterize_is_idempotent(randomize):
    model = randomize(build_model(ModelConfig(arch="speechformer", hrf=HRFConfig()))).eval()
    once = reparameterize_model(model)
    twice = reparameterize_model(once)
    assert _structure(twice) == _structure(once)
    for key, value in once.state_dict().items():
        assert torch.equal(twice.state_dict()[key], value), key

    ffn = FeedForward(16, 32, hrf_dim=8)
    ffn.reparameterize()
    fc1 = ffn.fc1
    ffn.reparameterize()
    assert ffn.fc1 is fc1 and ffn.hrf is None and ffn.deploy


def test_reparameterize_model_copies_by_default(randomize):
    cfg = ModelConfig(arch="conv_transformer", hrf=HRFConfig())
    model = randomize(build_model(cfg))
    before = {key: value.clone() for key, value in model.state_dict().items()}
    structure = _structure(model)

    merged = reparameterize_model(model)

    assert merged is not model
    assert _structure(model) == structure
    assert model.config.hrf == HRFConfig()
    assert all(torch.equal(model.state_dict()[key], value) for key, value in before.items())


def test_reparameterize_model_inplace_returns_the_same_object():
    model = build_model(ModelConfig(hrf=HRFConfig()))
    assert reparameterize_model(model, inplace=True) is model
    assert model.config.hrf is None
    assert not any(isinstance(m, FeedForward) and m.hrf is not None for m in model.modules())


def test_deploy_flag_builds_the_plain_block():
    deploy = FeedForward(16, 32, hrf_dim=8, deploy=True)
    plain = FeedForward(16, 32)
    assert _structure(deploy) == _structure(plain)
    assert _shapes(deploy) == _shapes(plain)
