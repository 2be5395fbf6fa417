"""The report: mean ± sample std over seeds, tasks as rows and encoders as columns, the best in bold."""

import pytest

from edgewise.cloud.para.report import markdown, mean_std, short_labels, summarize

TASKS = {
    "emotion": {"kind": "classification", "primary": "ua", "classes": ["a", "b", "c", "d"]},
    "rate": {"kind": "regression", "primary": "ccc", "classes": None},
}


def _result(task, encoder, seed, value):
    metrics = {"ua": value, "wa": value, "macro_f1": value} if task == "emotion" else {}
    metrics |= {"ccc": value, "mae": 1 - value, "pearson": value} if task == "rate" else {}
    return {"task": task, "encoder": encoder, "seed": seed, "test": metrics, "layer_weights": [1.0]}


def test_mean_and_sample_std_over_seeds():
    assert mean_std([0.5, 0.6, 0.7]) == {"mean": pytest.approx(0.6), "std": pytest.approx(0.1), "n": 3}
    assert mean_std([0.4]) == {"mean": 0.4, "std": 0.0, "n": 1}


def test_short_labels_keep_encoders_apart():
    assert short_labels(["logmel", "ser:runs/a/tiny-s0"]) == {
        "logmel": "logmel",
        "ser:runs/a/tiny-s0": "ser:tiny-s0",
    }
    clash = ["ser:runs/a/tiny", "ser:runs/b/tiny"]
    assert short_labels(clash) == {e: e for e in clash}


def test_markdown_table_rows_are_tasks_columns_encoders_best_in_bold():
    results = [_result("emotion", "logmel", s, v) for s, v in enumerate((0.5, 0.6, 0.7))]
    results += [_result("emotion", "ser:runs/tiny", s, v) for s, v in enumerate((0.8, 0.8, 0.8))]
    results += [_result("rate", "logmel", 0, 0.9)]  # ser:runs/tiny has no rate row: a dash
    encoders = ["logmel", "ser:runs/tiny"]
    report = {
        "tasks": TASKS,
        "encoders": {
            e: {
                "layers": False,
                "n_layers": 1,
                "dims": 2,
                "description": e,
                "timing": {"encoded": 3, "cached": 0, "encode_s": 1.0, "s_per_utterance": 0.3},
            }
            for e in encoders
        },
        "summary": summarize(results, TASKS, encoders),
        "results": results,
        "corpus": {"path": "c", "source": "edgewise", "utterances": {"train": 6, "val": 2, "test": 2}},
        "protocol": {"seeds": [0, 1, 2], "head": {"hidden": 8, "dropout": 0.1, "lr": 0.01, "patience": 3}},
        "command": "edgewise bench para ...",
        "environment": {"threads": 1},
        "wall_s": 1.0,
    }
    text = markdown(report)
    assert "| task (metric) | logmel | ser:tiny |" in text
    assert "| emotion (UA, chance 0.25) | 0.600 ± 0.100 | **0.800 ± 0.000** |" in text
    assert "| rate (CCC) | **0.900 ± 0.000** | – |" in text
