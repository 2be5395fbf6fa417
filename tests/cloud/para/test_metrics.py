"""The benchmark's metrics: CCC and MAE for regression, the SER module's UA/WA/F1 for classification."""

import numpy as np
import pytest

from edgewise.cloud.para.metrics import ccc, regression_report, task_report


def test_ccc_of_a_perfect_prediction_is_1():
    y = np.array([1.0, 4.0, 2.5, 9.0, -3.0])
    assert ccc(y, y.copy()) == pytest.approx(1.0)


def test_ccc_of_a_constant_prediction_is_0():
    y = np.array([1.0, 4.0, 2.5, 9.0, -3.0])
    assert ccc(y, np.full_like(y, y.mean())) == 0.0
    assert ccc(y, np.full_like(y, 100.0)) == 0.0


def test_ccc_punishes_bias_and_scale_that_pearson_ignores():
    y = np.linspace(0, 10, 50)
    shifted, scaled = y + 3.0, 2.0 * y
    assert np.corrcoef(y, shifted)[0, 1] == pytest.approx(1.0)
    # 2 cov / (var_t + var_p + (mean_t - mean_p)^2)
    expected = 2 * y.var() / (2 * y.var() + 9.0)
    assert ccc(y, shifted) == pytest.approx(expected)
    assert ccc(y, scaled) == pytest.approx(2 * 2 * y.var() / (y.var() + 4 * y.var() + y.mean() ** 2))
    centred = y - y.mean()
    assert ccc(centred, -centred) == pytest.approx(-1.0)


def test_ccc_with_a_constant_target():
    assert ccc([2.0, 2.0, 2.0], [2.0, 2.0, 2.0]) == 1.0
    assert ccc([2.0, 2.0, 2.0], [1.0, 2.0, 3.0]) == 0.0


def test_regression_report_is_in_the_targets_units():
    report = regression_report([100.0, 150.0, 200.0], [110.0, 140.0, 200.0])
    assert report["mae"] == pytest.approx(20.0 / 3)
    assert report["n"] == 3
    assert 0.9 < report["ccc"] < 1.0


def test_classification_uses_the_ser_metrics():
    report = task_report("classification", [0, 0, 0, 1], [0, 0, 1, 1], ("a", "b"))
    assert report["ua"] == pytest.approx((2 / 3 + 1) / 2)
    assert report["wa"] == pytest.approx(0.75)
    assert report["labels"] == ["a", "b"]
    assert set(task_report("regression", [1.0, 2.0], [1.0, 2.0], None)) >= {"ccc", "mae"}
