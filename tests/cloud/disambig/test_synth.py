"""``edgewise data disambig``: rows and columns, speaker splits, audible cues, determinism, bad input."""

from __future__ import annotations

import csv
import json
from collections import Counter, defaultdict

import numpy as np
import pytest

from edgewise.audio import load_audio
from edgewise.cli import main
from edgewise.cloud.data.corpus import SPLITS, load_corpus
from edgewise.cloud.disambig.corpus import load_disambig
from edgewise.cloud.disambig.synth import DisambigSettings, choose_speakers, trim_silence
from edgewise.errors import ConfigError
from edgewise.prosody import NAMES, prosody_features

from .conftest import N_SPEAKERS, READINGS, TEMPLATES, require_tools

COLUMNS = ("path", "label", "speaker", "text", "template", "kind", "reading", "meaning", "n_readings")


def manifest_rows(root):
    rows = []
    for split in SPLITS:
        with (root / f"{split}.csv").open(newline="") as fh:
            rows += [{**r, "split": split} for r in csv.DictReader(fh)]
    return rows


def features_by(root):
    """(speaker, template, reading) -> the prosody functionals as a dict."""
    out = {}
    for it in load_disambig(root).items:
        values = prosody_features(load_audio(it.path, 16000))
        out[(it.speaker, it.template, it.reading)] = dict(zip(NAMES, values))
    return out


def test_every_reading_by_every_speaker_with_the_extra_columns(disambig_corpus):
    rows = manifest_rows(disambig_corpus)
    assert len(rows) == N_SPEAKERS * READINGS
    assert set(COLUMNS) <= set(rows[0])
    assert all(r["label"] == r["reading"] for r in rows)
    per_speaker = Counter(r["speaker"] for r in rows)
    assert len(per_speaker) == N_SPEAKERS and set(per_speaker.values()) == {READINGS}
    assert {r["template"] for r in rows} == set(TEMPLATES)
    assert {r["kind"] for r in rows} == {"grouping", "focus", "question"}
    texts = defaultdict(set)
    for r in rows:
        texts[r["template"]].add(r["text"])
    assert all(len(t) == 1 for t in texts.values())  # the text never tells the readings apart
    info = json.loads((disambig_corpus / "corpus.json").read_text())
    assert info["labels"] == ["0", "1", "2"] and info["task"] == "disambig"
    assert set(info["templates"]) == set(TEMPLATES)
    money = next(r for r in rows if r["template"] == "took-money" and r["reading"] == "2")
    assert money["meaning"] == info["templates"]["took-money"]["readings"][2]["meaning"]
    assert money["meaning"] == "I only hinted at it, I never said it"


def test_split_by_speaker_and_readable_by_the_ser_trainer(disambig_corpus):
    corpus = load_corpus(disambig_corpus)  # what `edgewise train ser --data` reads
    assert corpus.labels == ("0", "1", "2")
    speakers = {s: set(corpus.speakers(s)) for s in SPLITS}
    assert [len(speakers[s]) for s in SPLITS] == [2, 1, 1]
    assert not (speakers["train"] & speakers["val"] or speakers["train"] & speakers["test"])
    genders = {spk.rsplit("_", 1)[1][0] for s in ("val", "test") for spk in speakers[s]}
    assert genders == {"m", "f"}


def test_a_break_lengthens_the_pauses(disambig_corpus):
    feats = features_by(disambig_corpus)
    speakers = {k[0] for k in feats}
    for spk in speakers:
        pause = {
            r: f["pause_mean_s"] * f["pauses_per_s"] * f["duration_s"]
            for (s, t, r), f in feats.items()
            if s == spk and t == "eat-grandma"
        }
        assert pause[0] > pause[1] + 0.1, (spk, pause)  # "Let's eat, | grandma" vs "Let's eat grandma"


def test_the_question_reading_ends_rising(disambig_corpus):
    feats = features_by(disambig_corpus)
    asked = {
        (it.template, it.reading)
        for it in load_disambig(disambig_corpus).items
        if it.meaning.startswith("asks")
    }
    assert asked == {("going-home", 1), ("passed-exam", 0)}
    for (spk, template, reading), f in feats.items():
        if (template, reading) in asked:
            statement = feats[(spk, template, 1 - reading)]
            assert f["f0_final_st"] > statement["f0_final_st"] + 2.0, (spk, template)
            assert f["f0_slope_st_per_s"] > statement["f0_slope_st_per_s"], (spk, template)


def test_same_seed_same_bytes_other_seed_other_audio(tmp_path):
    require_tools()
    args = ["data", "disambig", "--n-speakers", "3", "--templates", "going-home", "--no-progress"]
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        assert main([*args, "--out", str(tmp_path / name), "--seed", seed]) == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 2 * 3 + 4
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    # another seed: other voices or other settings, so other manifests
    assert (tmp_path / "c" / "train.csv").read_text() != (tmp_path / "a" / "train.csv").read_text()


def test_an_existing_out_needs_force(tmp_path, capsys):
    require_tools()
    out = tmp_path / "c"
    args = [
        "data",
        "disambig",
        "--out",
        str(out),
        "--n-speakers",
        "3",
        "--templates",
        "eat-grandma",
        "--no-progress",
    ]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert main([*args[:-2], "going-home", "--force", "--no-progress"]) == 0
    assert {r["template"] for r in manifest_rows(out)} == {"going-home"}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".c.")]  # no staging left behind


@pytest.mark.parametrize(
    "bad, message",
    [
        (["--kinds", "grouping,tone"], "unknown template kind(s) tone"),
        (["--templates", "eat-grandma,nope"], "unknown template id(s) nope"),
        (["--n-speakers", "2"], "--n-speakers must be between 3 and 60"),
        (["--n-speakers", "61"], "--n-speakers must be between 3 and 60"),
        (["--debate", "somewhere", "--n-speakers", "4"], "--n-speakers: only for synthesis"),
    ],
)
def test_bad_input_exits_2_naming_it(tmp_path, capsys, bad, message):
    assert main(["data", "disambig", "--out", str(tmp_path / "c"), "--no-progress", *bad]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_speaker_choice_interleaves_accents_and_genders():
    rng = np.random.default_rng(0)
    splits = choose_speakers(24, DisambigSettings(), rng)
    assert [len(splits[s]) for s in ("train", "val", "test")] == [14, 5, 5]
    chosen = [spk for s in splits.values() for spk in s]
    assert len({spk.id for spk in chosen}) == 24
    assert len({spk.accent for spk in chosen}) == 5
    assert Counter(spk.gender for spk in chosen) == {"male": 12, "female": 12}
    with pytest.raises(ConfigError):
        choose_speakers(3, DisambigSettings(heldout_fraction=0.5), rng)


def test_trim_silence_keeps_the_sound_only():
    audio = np.concatenate(
        [np.zeros(800), 0.5 * np.ones(100), np.zeros(50), 0.2 * np.ones(10), np.zeros(900)]
    )
    assert trim_silence(audio.astype(np.float32)).size == 160
