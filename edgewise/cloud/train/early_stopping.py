"""Early stopping on a validation metric, shared by the SER trainer (per epoch) and the step loop
(per evaluation): the best value so far, the evaluations since it improved, and whether patience
ran out. Its state rides in the training checkpoint's metadata, so ``--resume`` carries it on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class EarlyStopping:
    patience: int | None  # evaluations without a better value before stopping (None: never stop)
    best: float | None = None
    bad: int = 0
    stopped: bool = False

    def update(self, value: float) -> bool:
        """Record one evaluation (higher is better); True when it is the best so far."""
        improved = self.best is None or value > self.best
        if improved:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
        self.stopped = bool(self.patience) and self.bad >= self.patience
        return improved

    def state(self, best_key: str, bad_key: str) -> dict[str, Any]:
        """The checkpoint metadata (under the caller's key names)."""
        return {best_key: self.best, bad_key: self.bad, "stopped": self.stopped}

    @classmethod
    def from_state(
        cls, meta: dict[str, Any], patience: int | None, best_key: str, bad_key: str
    ) -> EarlyStopping:
        best = meta.get(best_key)
        return cls(
            patience,
            None if best is None else float(best),
            int(meta.get(bad_key, 0)),
            bool(meta.get("stopped")),
        )
