"""``ser:RUN``: a finished SER run's backbone, frozen, as a layered encoder.

The layers are the backbone's own stages of ``encode``: the subsampled, position-encoded input
(``pos``), then the output of every block (ConvTransformer, Conformer) or stage (SpeechFormer),
read with forward hooks so the backbone's code is untouched. A backbone without ``blocks`` or
``stages`` falls back to its pooled hidden state (``forward_with_hidden``), one layer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgewise.cloud.para.encoders import FrameEncoder, file_sha256


class SerEncoder(FrameEncoder):
    def __init__(self, run: Path, threads: int = 1) -> None:
        import torch

        from edgewise.cloud.train.run import load_frozen_ser_run

        self.model, self.info = load_frozen_ser_run(run, f"encoder ser:{run}")
        torch.set_num_threads(threads)
        self.run = run
        self.sha256 = file_sha256(run / "model.safetensors")
        self.front_end = self.info.features.to_dict()  # the log-mel settings and their fitted stats
        self.taps = [self.model.pos, *_layer_modules(self.model)] if hasattr(self.model, "pos") else []

    def fingerprint(self) -> dict[str, Any]:
        return {
            "encoder": "ser",
            "version": 1,
            "weights_sha256": self.sha256,
            "features": self.front_end,
            "layers": len(self.taps),
        }

    def frames(self, audio: np.ndarray) -> list[np.ndarray]:
        import torch

        from edgewise.features import log_mel

        x = torch.from_numpy(log_mel(audio, self.info.features))[None]
        with torch.no_grad():
            if len(self.taps) < 2:  # no per-layer states to tap: the pooled hidden state
                return [self.model.forward_with_hidden(x)[1].numpy()]
            return [h[0].numpy() for h in hidden_states(self.model.encode, self.taps, x)]


def _layer_modules(model) -> list:
    for name in ("blocks", "stages"):
        layers = getattr(model, name, None)
        if layers is not None:
            return list(layers)
    return []


def hidden_states(run, modules, *inputs) -> list:
    """Run ``run(*inputs)`` and return each module's output, in the order of ``modules``."""
    outputs: dict[int, Any] = {}
    handles = [
        m.register_forward_hook(lambda _m, _i, out, k=k: outputs.__setitem__(k, out))
        for k, m in enumerate(modules)
    ]
    try:
        run(*inputs)
    finally:
        for h in handles:
            h.remove()
    return [outputs[k] for k in range(len(modules))]
