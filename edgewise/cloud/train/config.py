"""Training configs: shipped presets (``tiny``, ``small``, ``base``) or a YAML path, plus ``--set`` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import Field

from edgewise.cloud.models.registry import ModelConfig
from edgewise.config import StrictModel, load_config, read_yaml
from edgewise.errors import ConfigError
from edgewise.features import LogMelConfig

PRESET_DIR = Path(__file__).resolve().parent.parent / "configs" / "ser"
T = TypeVar("T")


class FeatureSettings(StrictModel):
    """Front-end parameters (defaults from :class:`edgewise.features.LogMelConfig`, which also checks
    how they fit together); the normalization stats are fitted on the training split, not set."""

    sample_rate: int = Field(LogMelConfig.sample_rate, gt=0)
    n_fft: int = Field(LogMelConfig.n_fft, gt=0)
    win_length: int = Field(LogMelConfig.win_length, gt=0)
    hop_length: int = Field(LogMelConfig.hop_length, gt=0)
    n_mels: int = Field(LogMelConfig.n_mels, gt=0)
    f_min: float = Field(LogMelConfig.f_min, ge=0)
    f_max: float = Field(LogMelConfig.f_max, gt=0)


class OptimConfig(StrictModel):
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.01, ge=0)
    batch_size: int = Field(32, gt=0)
    epochs: int = Field(40, gt=0)
    warmup_epochs: int = Field(2, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    label_smoothing: float = Field(0.05, ge=0, lt=1)


class AugmentConfig(StrictModel):
    """On-the-fly training augmentation: random crops and SpecAugment-style masks."""

    crop_seconds: float = Field(2.5, gt=0)
    time_masks: int = Field(2, ge=0)
    time_mask_frames: int = Field(20, ge=0)
    freq_masks: int = Field(2, ge=0)
    freq_mask_bins: int = Field(8, ge=0)


class KDConfig(StrictModel):
    """Knowledge distillation; active when a teacher run is given (``--teacher RUN`` or ``teacher``)."""

    teacher: str | None = None
    temperature: float = Field(4.0, gt=0)
    alpha: float = Field(0.7, ge=0, le=1)  # weight of the soft-label loss; 1 - alpha for the hard labels
    hidden_weight: float = Field(0.0, ge=0)  # weight of the pooled hidden-state MSE (0 = logits only)


class TrainConfig(StrictModel):
    name: str = "ser"
    seed: int = 0
    threads: int | None = Field(None, gt=0)
    patience: int = Field(8, gt=0)  # early stopping: epochs without a better validation UA
    # weight of a backbone's graph-structure loss (model.arch dynamic_graph) beside the classification loss
    graph_loss: float = Field(0.1, ge=0)
    model: ModelConfig = ModelConfig()
    features: FeatureSettings = FeatureSettings()
    optim: OptimConfig = OptimConfig()
    augment: AugmentConfig = AugmentConfig()
    kd: KDConfig = KDConfig()


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested mapping."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. model.arch=conformer")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is not a section")
            node = child
        node[parts[-1]] = value
    return data


def resolve_preset(
    model_cls: type[T],
    preset_dir: Path,
    name_or_path: str,
    overrides: list[str] | None,
    what: str,
    names: list[str],
) -> T:
    """A shipped preset (``preset_dir/NAME.yaml``, one of ``names``) or a YAML path, with ``--set``
    overrides, validated as ``model_cls``; ``what`` names the config in the error."""
    path = Path(name_or_path)
    if not path.suffix and name_or_path in names and (preset_dir / f"{name_or_path}.yaml").is_file():
        path = preset_dir / f"{name_or_path}.yaml"
    elif not path.is_file():
        raise ConfigError(
            f"{what} {name_or_path!r}: not a shipped preset ({', '.join(names)}) nor a YAML file"
        )
    data = apply_overrides(read_yaml(path), overrides or [])
    label = str(path) if not overrides else f"{path} (with --set {' '.join(overrides)})"
    return load_config(model_cls, data, name=label)


def resolve_config(name_or_path: str, overrides: list[str] | None = None) -> TrainConfig:
    """A shipped preset name or a YAML path, validated, with overrides applied."""
    return resolve_preset(TrainConfig, PRESET_DIR, name_or_path, overrides, "config", preset_names())
