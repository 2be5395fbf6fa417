"""Model config, the size table of each architecture, and :func:`build_model`.

Adding a size is one row in :data:`SIZES`; adding an architecture is one class in
:mod:`edgewise.cloud.models.backbones`, one entry in :data:`ARCHS` and its size table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from pydantic import Field

from edgewise.cloud.models.backbones import (
    Conformer,
    ConvTransformer,
    DynamicGraph,
    SERBackbone,
    SpeechFormer,
)
from edgewise.cloud.models.hrf import HRFConfig
from edgewise.config import StrictModel, load_config

Arch = Literal["conv_transformer", "conformer", "speechformer", "dynamic_graph"]
Size = Literal["micro", "tiny", "small", "base"]


class ModelConfig(StrictModel):
    """Which backbone to build; ``hrf`` adds the training-time HRF layer to every FFN."""

    arch: Arch = "conv_transformer"
    size: Size = "tiny"
    n_mels: int = Field(default=64, ge=1)
    n_classes: int = Field(default=4, ge=2)
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    hrf: HRFConfig | None = None


@dataclass(frozen=True)
class TransformerSize:
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int


@dataclass(frozen=True)
class ConformerSize:
    d_model: int
    n_layers: int
    n_heads: int
    d_ff: int
    conv_kernel: int


@dataclass(frozen=True)
class SpeechFormerSize:
    d_model: int
    n_heads: int
    d_ff: int
    stages: tuple[tuple[int, int | None], ...]  # (depth, window); None attends over everything
    merge_factor: int = 2


@dataclass(frozen=True)
class DynamicGraphSize:
    d_model: int
    d_ff: int
    window: int  # frames per local graph (after the stride-4 front-end: 8 frames = 320 ms)
    local_layers: int
    global_layers: int


SizeSpec = TransformerSize | ConformerSize | SpeechFormerSize | DynamicGraphSize

# micro: ~30k parameters, for microcontroller-class budgets and capacity studies (benchmarks/ser_capacity.py);
# tiny: ~0.1M parameters, trains in minutes on 2 CPU cores; small: ~4x; base: the 1-3M teacher.
SIZES: dict[str, dict[str, SizeSpec]] = {
    "conv_transformer": {
        "micro": TransformerSize(d_model=32, n_layers=2, n_heads=4, d_ff=64),
        "tiny": TransformerSize(d_model=64, n_layers=2, n_heads=4, d_ff=128),
        "small": TransformerSize(d_model=128, n_layers=2, n_heads=4, d_ff=256),
        "base": TransformerSize(d_model=256, n_layers=4, n_heads=4, d_ff=512),
    },
    "conformer": {
        "micro": ConformerSize(d_model=32, n_layers=2, n_heads=4, d_ff=48, conv_kernel=15),
        "tiny": ConformerSize(d_model=64, n_layers=2, n_heads=4, d_ff=96, conv_kernel=15),
        "small": ConformerSize(d_model=128, n_layers=2, n_heads=4, d_ff=192, conv_kernel=15),
        "base": ConformerSize(d_model=192, n_layers=4, n_heads=4, d_ff=384, conv_kernel=31),
    },
    "speechformer": {
        "micro": SpeechFormerSize(d_model=32, n_heads=4, d_ff=64, stages=((1, 8), (1, 8), (1, None))),
        "tiny": SpeechFormerSize(d_model=64, n_heads=4, d_ff=128, stages=((1, 8), (1, 8), (1, None))),
        "small": SpeechFormerSize(d_model=128, n_heads=4, d_ff=256, stages=((1, 8), (1, 8), (1, None))),
        "base": SpeechFormerSize(d_model=256, n_heads=4, d_ff=512, stages=((1, 8), (2, 8), (1, None))),
    },
    "dynamic_graph": {
        "micro": DynamicGraphSize(d_model=32, d_ff=64, window=8, local_layers=1, global_layers=1),
        "tiny": DynamicGraphSize(d_model=64, d_ff=128, window=8, local_layers=2, global_layers=1),
        "small": DynamicGraphSize(d_model=128, d_ff=256, window=8, local_layers=2, global_layers=1),
        "base": DynamicGraphSize(d_model=256, d_ff=512, window=8, local_layers=3, global_layers=2),
    },
}

ARCHS: dict[str, type[SERBackbone]] = {
    "conv_transformer": ConvTransformer,
    "conformer": Conformer,
    "speechformer": SpeechFormer,
    "dynamic_graph": DynamicGraph,
}


def build_model(cfg: ModelConfig | dict[str, Any]) -> SERBackbone:
    """Build the backbone ``cfg`` names (training form if ``cfg.hrf``); ``model.config`` is ``cfg``."""
    if isinstance(cfg, dict):
        cfg = load_config(ModelConfig, cfg, name="model")
    size = SIZES[cfg.arch][cfg.size]
    hrf_dim = cfg.hrf.hidden_dim(size.d_model) if cfg.hrf is not None else None
    model = ARCHS[cfg.arch](
        n_mels=cfg.n_mels,
        n_classes=cfg.n_classes,
        dropout=cfg.dropout,
        hrf_dim=hrf_dim,
        **asdict(size),
    )
    model.config = cfg
    return model


def plain_config(cfg: ModelConfig) -> ModelConfig:
    """The same model without HRF: the architecture that is deployed after merging."""
    return cfg.model_copy(update={"hrf": None})
