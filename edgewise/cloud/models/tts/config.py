"""Configs of the TTS acoustic model and vocoder, and of their training runs (YAML presets + --set)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from edgewise.cloud.models.hrf import HRFConfig
from edgewise.config import StrictModel, load_config, read_yaml
from edgewise.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parents[2] / "configs" / "tts"


class EncoderConfig(StrictModel):
    d_model: int = Field(128, gt=0)
    n_layers: int = Field(4, ge=1)
    n_heads: int = Field(2, ge=1)
    d_ff: int = Field(384, gt=0)
    pos_kernel: int = Field(15, ge=3)
    dropout: float = Field(0.1, ge=0, lt=1)


class DecoderConfig(StrictModel):
    """The flow's vector-field estimator: conv + windowed self-attention + FFN blocks (local, so
    the device can decode a long utterance chunk by chunk)."""

    channels: int = Field(160, gt=0)
    n_blocks: int = Field(4, ge=1)
    n_heads: int = Field(2, ge=1)
    d_ff: int = Field(480, gt=0)
    window: int = Field(32, ge=4)  # attention window, frames
    kernel: int = Field(5, ge=3)
    dropout: float = Field(0.0, ge=0, lt=1)


class ProsodyConfig(StrictModel):
    phrase_breaks: bool = True  # the phrase-break encoder (ablation: false)
    terminal_intonation: bool = True  # the terminal-intonation encoder (ablation: false)
    n_tokens: int = Field(6, ge=2)  # intonation shape tokens
    token_dim: int = Field(32, gt=0)
    contour_points: int = Field(16, ge=4)  # the last word's pitch contour, resampled
    break_min_frames: int = Field(7, ge=1)  # a word boundary with >= this many frames (~80 ms) is a break


class FlowConfig(StrictModel):
    sigma_min: float = Field(1e-4, ge=0)
    steps: int = Field(4, ge=1)  # ODE steps at inference (Euler)
    temperature: float = Field(0.667, ge=0)
    segment_frames: int = Field(128, ge=16)  # decoder training crop (a multiple of decoder.window)


class AcousticConfig(StrictModel):
    n_symbols: int = Field(256, gt=0)
    n_mels: int = Field(80, gt=0)
    encoder: EncoderConfig = EncoderConfig()
    decoder: DecoderConfig = DecoderConfig()
    prosody: ProsodyConfig = ProsodyConfig()
    flow: FlowConfig = FlowConfig()
    hrf: HRFConfig | None = HRFConfig(expansion=2.0)


class VocoderConfig(StrictModel):
    n_mels: int = Field(80, gt=0)
    dim: int = Field(192, gt=0)
    d_ff: int = Field(576, gt=0)
    n_layers: int = Field(6, ge=1)
    kernel: int = Field(7, ge=3)
    n_fft: int = Field(1024, gt=0)
    hop: int = Field(256, gt=0)
    hrf: HRFConfig | None = HRFConfig(expansion=2.0)


class OptimConfig(StrictModel):
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(16, gt=0)
    steps: int = Field(6000, gt=0)
    warmup_steps: int = Field(300, ge=0)
    grad_clip: float = Field(1.0, gt=0)


class LossWeights(StrictModel):
    duration: float = Field(1.0, ge=0)
    prior: float = Field(1.0, ge=0)
    flow: float = Field(1.0, ge=0)
    breaks: float = Field(0.2, ge=0)
    intonation: float = Field(0.2, ge=0)


class TTSTrainConfig(StrictModel):
    name: str = "tts"
    task: Literal["tts"] = "tts"
    seed: int = 0
    threads: int | None = Field(1, gt=0)
    model: AcousticConfig = AcousticConfig()
    optim: OptimConfig = OptimConfig()
    loss: LossWeights = LossWeights()
    eval_every: int = Field(500, gt=0)  # steps between validation losses and checkpoints
    eval_sentences: int = Field(24, ge=0)  # validation sentences scored for WER at each eval (0: none)


class VocoderTrainConfig(StrictModel):
    name: str = "vocoder"
    task: Literal["vocoder"] = "vocoder"
    seed: int = 0
    threads: int | None = Field(1, gt=0)
    model: VocoderConfig = VocoderConfig()
    optim: OptimConfig = OptimConfig(lr=1e-3, batch_size=8, steps=6000, warmup_steps=200)
    segment_frames: int = Field(32, ge=8)  # training crop: 32 frames = 8192 samples
    eval_every: int = Field(500, gt=0)


def preset_names(prefix: str = "") -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob(f"{prefix}*.yaml"))


def resolve_tts_config(name_or_path: str, overrides: list[str] | None = None, *, vocoder: bool = False):
    """A shipped preset (``tiny``, ``base``; ``vocoder-tiny`` ...) or a YAML path, with ``--set`` overrides."""
    from edgewise.cloud.train.config import apply_overrides

    path = Path(name_or_path)
    preset = (
        f"vocoder-{name_or_path}" if vocoder and not name_or_path.startswith("vocoder-") else name_or_path
    )
    if not path.suffix and (PRESET_DIR / f"{preset}.yaml").is_file():
        path = PRESET_DIR / f"{preset}.yaml"
    elif not path.is_file():
        kind = "vocoder" if vocoder else "tts"
        names = [n for n in preset_names() if n.startswith("vocoder-") == vocoder]
        raise ConfigError(
            f"{kind} config {name_or_path!r}: not a shipped preset ({', '.join(names)}) nor a YAML file"
        )
    data = apply_overrides(read_yaml(path), overrides or [])
    label = str(path) if not overrides else f"{path} (with --set {' '.join(overrides)})"
    return load_config(VocoderTrainConfig if vocoder else TTSTrainConfig, data, name=label)
