"""SER backbones (conv-transformer, Conformer, SpeechFormer) and HRF re-parameterization."""

from edgewise.cloud.models.backbones import Conformer, ConvTransformer, SERBackbone, SpeechFormer
from edgewise.cloud.models.hrf import (
    HRFConfig,
    count_parameters,
    fold_batchnorm,
    fuse_linear_linear,
    reparameterize_model,
)
from edgewise.cloud.models.registry import ARCHS, SIZES, ModelConfig, build_model, plain_config

__all__ = [
    "ARCHS",
    "SIZES",
    "Conformer",
    "ConvTransformer",
    "HRFConfig",
    "ModelConfig",
    "SERBackbone",
    "SpeechFormer",
    "build_model",
    "count_parameters",
    "fold_batchnorm",
    "fuse_linear_linear",
    "plain_config",
    "reparameterize_model",
]
