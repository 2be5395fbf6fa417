"""The synthesized corpus: format, balance, speakers, determinism, atomic output, difficulty by design."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from dataclasses import replace

import numpy as np
import pytest
import soundfile as sf

from edgewise.cloud.data import synth
from edgewise.cloud.data.corpus import EMOTIONS, SPLITS, load_corpus
from edgewise.cloud.data.sentences import all_sentences, sentence_pool
from edgewise.cloud.data.synth import (
    ACCENTS,
    DEFAULT_PROFILES,
    PROSODY_DIMENSIONS,
    SynthSettings,
    apply_channel,
    plan_corpus,
    render_speech,
    sample_prosody,
    synthesize_corpus,
)
from edgewise.errors import ConfigError, DataError, MissingDependencyError

from .conftest import N_SMALL, SEED, needs_tools


def accent_of(speaker: str) -> str:
    return speaker.rsplit("_", 1)[0]


def gender_of(speaker: str) -> str:
    return "female" if speaker.rsplit("_", 1)[1].startswith("f") else "male"


# --- the corpus on disk -----------------------------------------------------------------------


def test_files_are_16k_mono_pcm16_and_decode(speech_corpus):
    assert len(speech_corpus.utterances) == N_SMALL
    for u in speech_corpus.utterances:
        info = sf.info(str(u.path))
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
        audio, _ = sf.read(str(u.path), dtype="float32")
        assert 1.0 < audio.size / 16000 < 12.0
        assert 0.01 < np.max(np.abs(audio)) <= 1.0


def test_every_split_has_every_class(speech_corpus):
    for split in SPLITS:
        labels = Counter(u.label for u in speech_corpus.split(split))
        assert set(labels) == set(EMOTIONS)
        assert max(labels.values()) - min(labels.values()) <= 1


def test_splits_are_speaker_disjoint_and_diverse(speech_corpus):
    speakers = {s: set(speech_corpus.speakers(s)) for s in SPLITS}
    for a, b in itertools.combinations(SPLITS, 2):
        assert not speakers[a] & speakers[b]
    for split in SPLITS:
        assert len({accent_of(s) for s in speakers[split]}) >= 2
        assert {gender_of(s) for s in speakers[split]} == {"male", "female"}


def test_corpus_json_records_how_it_was_made(speech_corpus):
    info = json.loads((speech_corpus.root / "corpus.json").read_text())
    assert info["schema_version"] == 1 and info["labels"] == list(EMOTIONS)
    assert (info["seed"], info["n"], info["sample_rate"]) == (SEED, N_SMALL, 16000)
    assert info["generator"]["engine"].startswith("espeak-ng")
    assert (
        info["generator"]["settings"]["profiles"]["sad"]["pitch"]["mean"]
        == DEFAULT_PROFILES["sad"].pitch.mean
    )
    assert {s: sorted(v) for s, v in info["speakers"].items()} == {
        s: speech_corpus.speakers(s) for s in SPLITS
    }
    assert sum(sum(c.values()) for c in info["counts"].values()) == N_SMALL


def test_manifest_text_is_from_the_shared_pool(speech_corpus):
    pool = {s.text for s in sentence_pool()}
    assert all(u.text in pool for u in speech_corpus.utterances)
    header = (speech_corpus.root / "train.csv").read_text().splitlines()[0].split(",")
    assert header[:4] == ["path", "label", "speaker", "text"]
    assert {"voice", "duration", "pitch", "rate", "snr_db"} <= set(header)


@needs_tools
def test_same_seed_gives_identical_bytes_and_another_seed_differs(speech_corpus, tmp_path):
    again = synthesize_corpus(tmp_path / "again", N_SMALL, SEED, workers=1, progress=False)
    for name in ("corpus.json", "train.csv", "val.csv", "test.csv"):
        assert (again.root / name).read_bytes() == (speech_corpus.root / name).read_bytes(), name
    for a, b in zip(speech_corpus.utterances, again.utterances):
        assert a.path.read_bytes() == b.path.read_bytes(), a.path.name
    other = synthesize_corpus(tmp_path / "other", N_SMALL, SEED + 1, workers=2, progress=False)
    assert (other.root / "train.csv").read_bytes() != (speech_corpus.root / "train.csv").read_bytes()
    assert other.utterances[0].path.read_bytes() != speech_corpus.utterances[0].path.read_bytes()


@needs_tools
def test_noise_in_the_files_matches_the_manifest_snr(speech_corpus):
    plans, _ = plan_corpus(N_SMALL, SEED)
    by_uid = {p.uid: p for p in plans}
    checked = 0
    for u in speech_corpus.utterances[:12]:
        plan = by_uid[u.path.stem]
        audio, _ = sf.read(str(u.path), dtype="float64")
        if np.max(np.abs(audio)) > 0.95:  # peak-limited: the channel gain no longer matches
            continue
        clean = apply_channel(render_speech(plan), replace(plan, snr_db=None)).astype(np.float64)
        snr = 10 * np.log10(np.mean(clean**2) / np.mean((audio - clean) ** 2))
        assert snr == pytest.approx(plan.snr_db, abs=0.5)
        assert 10.0 <= plan.snr_db <= 30.0
        checked += 1
    assert checked >= 6


# --- atomic output ----------------------------------------------------------------------------


@needs_tools
def test_existing_non_empty_dir_is_refused_without_force(tmp_path):
    out = tmp_path / "corpus"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="already exists and is not empty; pass --force"):
        synthesize_corpus(out, 24, 0, progress=False)
    with pytest.raises(DataError, match="not an edgewise corpus"):
        synthesize_corpus(out, 24, 0, force=True, progress=False)
    assert (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


@needs_tools
def test_force_replaces_a_corpus_and_an_empty_dir_is_filled(tmp_path):
    out = tmp_path / "corpus"
    out.mkdir()
    synthesize_corpus(out, 24, 0, workers=2, progress=False)
    (out / "stale.txt").write_text("from the old corpus")
    corpus = synthesize_corpus(out, 28, 1, workers=2, force=True, progress=False)
    assert len(corpus.utterances) == 28
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]


@needs_tools
def test_failure_leaves_no_directory_and_keeps_the_old_corpus(tmp_path, monkeypatch):
    real = synth.render_speech

    def flaky(plan, sample_rate=16000):
        if plan.index == 5:
            raise RuntimeError("espeak-ng exited with 1: simulated")
        return real(plan, sample_rate)

    monkeypatch.setattr(synth, "render_speech", flaky)
    with pytest.raises(RuntimeError, match="utterance .*-00005 .*simulated"):
        synthesize_corpus(tmp_path / "new", 24, 0, workers=2, progress=False)
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(synth, "render_speech", real)
    old = synthesize_corpus(tmp_path / "old", 24, 0, workers=2, progress=False)
    before = (old.root / "train.csv").read_bytes()
    monkeypatch.setattr(synth, "render_speech", flaky)
    with pytest.raises(RuntimeError):
        synthesize_corpus(tmp_path / "old", 24, 3, workers=2, force=True, progress=False)
    assert (old.root / "train.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]
    assert len(load_corpus(old.root).utterances) == 24


@needs_tools
def test_augmented_copies_are_train_only_and_recorded(tmp_path):
    corpus = synthesize_corpus(
        tmp_path / "aug", 24, 0, workers=2, augment=("noise", "gain", "speed"), progress=False
    )
    n_train = 24 - 2 * 4
    assert len(corpus.split("train")) == 4 * n_train
    assert len(corpus.split("val")) == len(corpus.split("test")) == 4
    rows = (corpus.root / "train.csv").read_text().splitlines()
    header = rows[0].split(",")
    kinds = Counter(r.split(",")[header.index("augment")] for r in rows[1:])
    assert kinds == {"": n_train, "noise": n_train, "gain": n_train, "speed": n_train}
    info = json.loads((corpus.root / "corpus.json").read_text())
    assert info["generator"]["augment"] == ["noise", "gain", "speed"]
    assert info["generator"]["settings"]["augment"]["speed_factors"] == [0.9, 1.1]
    by_name = {u.path.name: u for u in corpus.split("train")}
    for name, u in by_name.items():
        if name.endswith("-speed.wav"):
            original = by_name[name.replace("-speed.wav", ".wav")]
            ratio = sf.info(str(original.path)).frames / sf.info(str(u.path)).frames
            assert min(abs(ratio - 0.9), abs(ratio - 1.1)) < 0.01
            assert u.label == original.label and u.speaker == original.speaker


def test_missing_tools_name_the_apt_packages(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingDependencyError, match="apt-get install espeak-ng sox"):
        synthesize_corpus(tmp_path / "c", 24, 0, progress=False)
    assert not (tmp_path / "c").exists()


@needs_tools
def test_a_voice_espeak_does_not_have_is_refused():
    settings = SynthSettings(accents=("en-us", "xx-nowhere"))
    with pytest.raises(MissingDependencyError, match="xx-nowhere"):
        synth.check_tools(settings)


def test_too_few_utterances_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="--n must be at least 24, got 10"):
        plan_corpus(10, 0)


# --- the design: speakers, sentences, overlapping prosody --------------------------------------


def test_speaker_splits_cover_accents_and_genders_in_proportion():
    _, splits = plan_corpus(1200, 0)
    sizes = {s: len(v) for s, v in splits.items()}
    assert sizes == {"train": 40, "val": 10, "test": 10}
    for split, speakers in splits.items():
        assert {s.accent for s in speakers} == set(ACCENTS), split
        assert {s.gender for s in speakers} == {"male", "female"}, split
    _, again = plan_corpus(1200, 0)
    assert {s: [x.id for x in v] for s, v in splits.items()} == {
        s: [x.id for x in v] for s, v in again.items()
    }


def test_every_speaker_speaks_every_class():
    plans, _ = plan_corpus(1200, 0)
    by_speaker: dict[str, Counter] = {}
    for p in plans:
        by_speaker.setdefault(p.speaker.id, Counter())[p.label] += 1
    assert len(by_speaker) == 60
    for counts in by_speaker.values():
        assert set(counts) == set(EMOTIONS) and max(counts.values()) - min(counts.values()) <= 1


def test_sentences_are_many_neutral_and_shared_by_all_classes():
    pool = sentence_pool()
    assert len({s.text for s in pool}) == len(pool) == 400
    assert len(all_sentences()) > 5000
    emotional = {"happy", "sad", "angry", "glad", "upset", "love", "hate", "cry", "great", "terrible", "!"}
    assert not any(w in s.text.lower() for s in pool for w in emotional)
    plans, _ = plan_corpus(1200, 0)
    texts_by_label = {lab: {p.sentence.text for p in plans if p.label == lab} for lab in EMOTIONS}
    assert all(len(t) > 150 for t in texts_by_label.values())
    words = Counter((w, p.label) for p in plans for w in set(p.sentence.text.lower().rstrip(".").split()))
    totals = Counter(w for w, _ in words.elements())
    for word, total in totals.items():
        if total >= 40:  # no word says which class it was spoken in
            share = max(words[(word, lab)] for lab in EMOTIONS) / total
            assert share < 0.4, (word, share)


def test_profiles_cover_exactly_the_four_emotions():
    assert tuple(DEFAULT_PROFILES) == EMOTIONS == SynthSettings().labels


def test_no_single_prosodic_dimension_separates_the_classes():
    """On every dimension, each pair of classes' middle-90% ranges intersect, and the best 1-D
    classifier stays far from perfect; all dimensions together separate the classes much better."""
    draws = sample_prosody(n_per_class=3000, seed=0)
    best_1d = {}
    for dim in PROSODY_DIMENSIONS:
        ranges = {lab: np.percentile(draws[lab][dim], [5, 95]) for lab in EMOTIONS}
        for a, b in itertools.combinations(EMOTIONS, 2):
            low, high = max(ranges[a][0], ranges[b][0]), min(ranges[a][1], ranges[b][1])
            assert low < high, f"{dim}: {a} {ranges[a]} and {b} {ranges[b]} do not overlap"
        values = np.concatenate([draws[lab][dim] for lab in EMOTIONS])
        edges = np.unique(np.quantile(values, np.linspace(0, 1, 41)))
        hist = np.stack([np.histogram(draws[lab][dim], bins=edges)[0] for lab in EMOTIONS])
        best_1d[dim] = hist.max(axis=0).sum() / hist.sum()  # Bayes accuracy of the binned dimension
    assert max(best_1d.values()) < 0.6, best_1d
    joint = nearest_mean_accuracy(draws)
    assert joint > max(best_1d.values()) + 0.15, (joint, best_1d)


def nearest_mean_accuracy(draws) -> float:
    """Accuracy of a nearest-class-mean rule on all dimensions (standardized), second half held out."""
    x = {lab: np.stack([draws[lab][d] for d in PROSODY_DIMENSIONS], axis=1) for lab in EMOTIONS}
    everything = np.concatenate(list(x.values()))
    mu, sd = everything.mean(0), everything.std(0)
    z = {lab: (v - mu) / sd for lab, v in x.items()}
    half = len(next(iter(z.values()))) // 2
    centers = np.stack([z[lab][:half].mean(0) for lab in EMOTIONS])
    correct = total = 0
    for k, lab in enumerate(EMOTIONS):
        test = z[lab][half:]
        pred = np.argmin(((test[:, None, :] - centers[None]) ** 2).sum(-1), axis=1)
        correct += int((pred == k).sum())
        total += len(test)
    return correct / total


@needs_tools
def test_rate_and_amplitude_reach_the_audio():
    plans, _ = plan_corpus(24, 0)
    base = replace(plans[0], pauses_ms=(0,) * len(plans[0].pauses_ms))
    slow = render_speech(replace(base, rate=110))
    fast = render_speech(replace(base, rate=220))
    assert slow.size > 1.5 * fast.size
    soft = render_speech(replace(base, amplitude=50))
    loud = render_speech(replace(base, amplitude=140))
    assert np.sqrt(np.mean(loud**2)) > 2 * np.sqrt(np.mean(soft**2))
    low = render_speech(replace(base, pitch=10))
    high = render_speech(replace(base, pitch=90))
    assert median_f0(high) > 1.4 * median_f0(low)


def median_f0(audio: np.ndarray, sr: int = 16000) -> float:
    """Median autocorrelation pitch (60-400 Hz) over the loudest 40 ms frames."""
    frame = int(0.04 * sr)
    frames = audio[: audio.size // frame * frame].reshape(-1, frame).astype(np.float64)
    loud = frames[np.sqrt((frames**2).mean(1)) > 0.3 * np.sqrt((frames**2).mean(1)).max()]
    lags = np.arange(sr // 400, sr // 60)
    f0 = []
    for x in loud:
        x = x - x.mean()
        ac = np.correlate(x, x, "full")[frame - 1 :]
        f0.append(sr / lags[np.argmax(ac[lags])])
    return float(np.median(f0))
