"""Model config: validated once, errors name the field."""

from __future__ import annotations

import pytest

from edgewise.cloud.models import HRFConfig, ModelConfig, build_model, plain_config
from edgewise.config import load_config
from edgewise.errors import ConfigError


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"archh": "conformer"}, "archh"),
        ({"arch": "lstm"}, "arch"),
        ({"size": "huge"}, "size"),
        ({"n_mels": "abc"}, "n_mels"),
        ({"n_classes": 1}, "n_classes"),
        ({"dropout": 1.5}, "dropout"),
        ({"hrf": {"expansion": "wide"}}, "hrf.expansion"),
        ({"hrf": {"rank": 0}}, "hrf.rank"),
        ({"hrf": {"ranks": 8}}, "hrf.ranks"),
        ({"hrf": {"expansion": None, "rank": None}}, "hrf"),
    ],
)
def test_bad_values_name_the_field(data, field):
    with pytest.raises(ConfigError, match=f"'{field}'"):
        load_config(ModelConfig, data, name="model")


def test_build_model_accepts_a_mapping_and_validates_it():
    model = build_model({"arch": "speechformer", "n_classes": 6})
    assert model.config.arch == "speechformer" and model.n_classes == 6
    with pytest.raises(ConfigError, match="'bogus'"):
        build_model({"bogus": 1})


def test_hrf_width_rank_wins_over_expansion():
    assert HRFConfig().hidden_dim(64) == 64
    assert HRFConfig(expansion=1.5).hidden_dim(64) == 96
    assert HRFConfig(expansion=2.0, rank=8).hidden_dim(64) == 8


def test_plain_config_drops_only_hrf():
    cfg = ModelConfig(arch="conformer", size="small", n_mels=40, hrf=HRFConfig(rank=8))
    plain = plain_config(cfg)
    assert plain.hrf is None
    assert plain.model_dump(exclude={"hrf"}) == cfg.model_dump(exclude={"hrf"})
    assert cfg.hrf is not None
