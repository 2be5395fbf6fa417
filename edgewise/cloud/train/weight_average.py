"""An exponential moving average of a model's weights, evaluated beside the trained weights.

``optim.ema: 0.999`` in a step-loop config (tests/cloud/train/test_weight_average.py). After every
optimizer step the averaged copy moves towards the trained weights,

    avg <- d * avg + (1 - d) * w,   d = min(ema, (1 + t) / (10 + t))

(the ramp keeps the first steps' random weights from dominating). At each evaluation the loop
scores both copies and keeps whichever is better on the validation metric, so the average is one
more candidate for model selection, never a forced choice. Buffers (none in the merged models, but
BatchNorm would have them) are copied, not averaged.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch


class WeightAverage:
    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def rate(self) -> float:
        """The decay used for the next update (ramped up over the first steps)."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        d = self.rate()
        for avg, new in zip(self.model.parameters(), model.parameters(), strict=True):
            avg.mul_(d).add_(new.detach(), alpha=1.0 - d)
        for avg, new in zip(self.model.buffers(), model.buffers(), strict=True):
            avg.copy_(new)
        self.updates += 1

    def save(self, path: Path, step: int) -> None:
        from edgewise.cloud.train.checkpoint import save_weights

        save_weights(self.model, path, {"step": step, "updates": self.updates})

    def load(self, path: Path, step: int) -> bool:
        """Take the average saved at ``step``; False (the average restarts from the trained weights,
        which the caller has loaded) when the file is missing or from another step."""
        from edgewise.cloud.train.checkpoint import load_tensors, load_weights_into

        if not path.is_file() or int(load_tensors(path)[1].get("step", -1)) != step:
            return False
        meta = load_weights_into(self.model, path)
        self.updates = int(meta.get("updates", step))
        return True

    def restart_from(self, model: torch.nn.Module) -> None:
        self.model.load_state_dict(model.state_dict())
