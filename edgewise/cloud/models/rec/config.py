"""Configs of the recommenders and of their training runs (YAML presets + ``--set``).

Three model kinds train and evaluate on the same data under one protocol:

- ``sasrec``: the classic baseline; causal self-attention over the history, a score per item;
- ``encdec``: a generative encoder-decoder (TIGER / OneRec-V1 style): a bidirectional encoder over
  the history, a decoder that emits the next item's semantic ID one level at a time, with its own
  K/V projections of the encoder output in every layer;
- ``lazy``: the lazy decoder-only generator (OneRec-V2): a context processor computes the history's
  keys and values once, shared by groups of decoder layers, which have no K/V projections of their
  own; grouped-query attention.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from edgewise.cloud.models.hrf import HRFConfig
from edgewise.cloud.rec.tokenizer import TokenizerConfig
from edgewise.config import StrictModel

PRESET_DIR = Path(__file__).resolve().parents[2] / "configs" / "rec"
KINDS = ("sasrec", "encdec", "lazy")


class RecModelConfig(StrictModel):
    kind: Literal["sasrec", "encdec", "lazy"] = "lazy"
    d_model: int = Field(64, gt=0)
    n_heads: int = Field(2, ge=1)
    n_layers: int = Field(2, ge=1)  # sasrec blocks, or decoder layers (encdec, lazy)
    encoder_layers: int = Field(2, ge=1)  # encdec only
    context_layers: int = Field(0, ge=0)  # lazy only: causal self-attention layers in the context processor
    n_kv_heads: int = Field(1, ge=1)  # lazy only: grouped-query attention
    kv_group: int = Field(2, ge=1)  # lazy only: decoder layers sharing one set of context K/V
    d_ff: int = Field(256, gt=0)
    max_len: int = Field(50, ge=2)  # history items the model reads (the most recent)
    dropout: float = Field(0.2, ge=0, lt=1)
    item_id_embedding: bool = True  # generative kinds: add a per-item embedding to the history's code sum
    context_positions: bool = False  # lazy only: a learned embedding of each history item's place (oldest 0)
    hrf: HRFConfig | None = HRFConfig(expansion=1.0)

    @model_validator(mode="after")
    def _heads_fit(self) -> RecModelConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not divisible by n_kv_heads={self.n_kv_heads}")
        return self


class OptimConfig(StrictModel):
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    batch_size: int = Field(128, gt=0)  # users per step (sasrec, lazy) or (history, target) pairs (encdec)
    steps: int = Field(3000, gt=0)
    warmup_steps: int = Field(100, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    # an exponential moving average of the weights, scored beside them at every evaluation; the
    # better one on validation NDCG@10 is kept (edgewise/cloud/train/weight_average.py). None: off
    ema: float | None = Field(None, gt=0, lt=1)


class KDConfig(StrictModel):
    """Distillation from a larger run of the same kind and semantic IDs (``--teacher RUN``)."""

    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1)  # weight of the soft loss; 1 - alpha for the targets


class RecTrainConfig(StrictModel):
    name: str = "rec"
    task: Literal["rec"] = "rec"
    seed: int = 0
    threads: int | None = Field(2, gt=0)
    model: RecModelConfig = RecModelConfig()
    tokenizer: TokenizerConfig = TokenizerConfig()
    optim: OptimConfig = OptimConfig()
    kd: KDConfig = KDConfig()
    constrained_loss: bool = True  # generative kinds: softmax over the trie's valid next codes only
    # lazy only: train on this many positions of each history window (the last one always), not all
    # of them; the context is computed once either way, the decoder's cost scales with it
    targets_per_sequence: int | None = Field(None, ge=1)
    eval_every: int = Field(200, gt=0)
    eval_users: int = Field(0, ge=0)  # validation users scored at each evaluation (0: all)
    patience: int | None = Field(5, gt=0)  # evaluations without a better validation NDCG@10
    beam: int = Field(20, ge=10)  # beam width of the generative kinds' evaluation
    top_k: int = Field(10, ge=10)  # items ranked per user in evaluation (HR@10 and NDCG@10 need 10)

    @model_validator(mode="after")
    def _beam_holds_top_k(self) -> RecTrainConfig:
        if self.beam < self.top_k:
            raise ValueError(f"beam ({self.beam}) must be at least top_k ({self.top_k})")
        return self


def preset_names() -> list[str]:
    """The shipped ``edgewise train rec`` presets (``align-*`` files configure ``edgewise train align``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml") if not p.stem.startswith("align-"))


def resolve_rec_config(name_or_path: str, overrides: list[str] | None = None) -> RecTrainConfig:
    """A shipped preset (``lazy``, ``lazy-small``, ``encdec``, ``sasrec``) or a YAML path, with ``--set`` overrides."""
    from edgewise.cloud.train.config import resolve_preset

    return resolve_preset(RecTrainConfig, PRESET_DIR, name_or_path, overrides, "rec config", preset_names())
