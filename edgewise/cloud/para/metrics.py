"""The benchmark's metrics: UA, WA and macro-F1 for classification (the SER metrics module), CCC and
MAE for regression, in the targets' own units."""

from __future__ import annotations

import numpy as np

from edgewise.cloud.train.metrics import classification_report


def ccc(y_true, y_pred) -> float:
    """Lin's concordance correlation coefficient: ``2 cov / (var_t + var_p + (mean_t - mean_p)^2)``.

    1 for a perfect prediction, 0 for a constant one (no covariance); with a constant target it is 1
    only when the prediction equals it."""
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    denom = t.var() + p.var() + (t.mean() - p.mean()) ** 2
    if denom == 0:
        return 1.0 if np.array_equal(t, p) else 0.0
    return float(2 * np.mean((t - t.mean()) * (p - p.mean())) / denom)


def regression_report(y_true, y_pred) -> dict:
    t = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(y_pred, dtype=np.float64)
    pearson = float(np.corrcoef(t, p)[0, 1]) if t.std() > 0 and p.std() > 0 else 0.0
    return {"ccc": ccc(t, p), "mae": float(np.abs(t - p).mean()), "pearson": pearson, "n": int(t.size)}


def task_report(kind: str, y_true, y_pred, classes: tuple[str, ...] | None) -> dict:
    """The metrics of one task's predictions: ``classification_report``'s (ua, wa, macro_f1, ...) or
    :func:`regression_report`'s (ccc, mae, pearson)."""
    if kind == "classification":
        return classification_report(np.asarray(y_true), np.asarray(y_pred), classes or ())
    return regression_report(y_true, y_pred)
