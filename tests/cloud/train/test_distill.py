"""Knowledge distillation does what it says: the loss has the textbook value, and a student trained
on it moves toward its teacher.

The behaviour test needs a teacher whose predictions differ from the labels, or "agrees with the
teacher" and "learned the labels" could not be told apart: the teacher is trained on the same audio
with every label moved one class along (neutral -> happy -> sad -> angry -> neutral). Two students
then train on the true labels with that teacher, the same data, seed and settings, one with
``kd.alpha=1`` (soft teacher targets only) and one with ``kd.alpha=0`` (hard labels only).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgewise.cli import main
from edgewise.cloud.data.corpus import EMOTIONS, Utterance, load_corpus, write_manifests
from edgewise.cloud.train.distill import distillation_loss, logit_kd_loss
from edgewise.cloud.train.featcache import compute_features
from edgewise.cloud.train.run import load_run_model
from edgewise.cloud.train.trainer import predict_logits

from .conftest import FAST, make_tone_corpus

# --- the loss, by hand ------------------------------------------------------------------------------

STUDENT = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
TEACHER = [[2.0, 1.0, 0.0], [0.5, 0.5, 2.5]]


def kd_by_hand(student, teacher, t: float) -> float:
    """T^2 * mean over the batch of KL(softmax(teacher / T) || softmax(student / T)), in numpy."""
    s, q = np.asarray(student) / t, np.asarray(teacher) / t
    log_ps = s - np.log(np.exp(s).sum(axis=1, keepdims=True))
    log_pt = q - np.log(np.exp(q).sum(axis=1, keepdims=True))
    kl_rows = (np.exp(log_pt) * (log_pt - log_ps)).sum(axis=1)
    return float(t * t * kl_rows.mean())


@pytest.mark.parametrize(
    ("temperature", "expected"),
    [
        # worked out by hand from the 2x3 logits above: at T=1 the rows' softmaxes are
        # student (.2312, .6285, .1402), (.0466, .0172, .9362) and teacher (.6652, .2447, .0900),
        # (.1065, .1065, .7870); KL per row .4322 and .1459; mean .2891; times T^2 = 1
        (1.0, 0.2891),
        (2.0, 0.3549),
        (4.0, 0.3661),
    ],
)
def test_kd_loss_matches_the_hand_computed_value(temperature, expected):
    got = logit_kd_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), temperature).item()
    assert got == pytest.approx(kd_by_hand(STUDENT, TEACHER, temperature), rel=1e-6)
    assert got == pytest.approx(expected, abs=5e-4)


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [
        # cross-entropy by hand (labels 1 and 2): -ln .6285 = .4644 and -ln .9362 = .0659, mean .2651;
        # the KD term at T=2 is .3549 (above); the objective is (1 - alpha) x .2651 + alpha x .3549
        (0.0, 0.2651),
        (1.0, 0.3549),
        (0.7, 0.3280),
    ],
)
def test_the_students_objective_mixes_the_hard_and_soft_losses_by_alpha(alpha, expected):
    got = distillation_loss(
        torch.tensor(STUDENT), torch.tensor(TEACHER), torch.tensor([1, 2]), temperature=2.0, alpha=alpha
    ).item()
    assert got == pytest.approx(expected, abs=5e-4)


def test_kd_loss_gradient_pulls_the_student_toward_the_teacher():
    """d loss / d student_logits = T * (softmax(s/T) - softmax(t/T)) / batch: a step down the
    gradient moves the student's soft distribution toward the teacher's."""
    t = 2.0
    s = torch.tensor(STUDENT, requires_grad=True)
    logit_kd_loss(s, torch.tensor(TEACHER), t).backward()
    ps = np.exp(np.asarray(STUDENT) / t)
    ps /= ps.sum(axis=1, keepdims=True)
    pt = np.exp(np.asarray(TEACHER) / t)
    pt /= pt.sum(axis=1, keepdims=True)
    assert s.grad.numpy() == pytest.approx(t * (ps - pt) / len(STUDENT), abs=1e-6)
    stepped = (s - 1.0 * s.grad).detach()
    assert (
        logit_kd_loss(stepped, torch.tensor(TEACHER), t).item()
        < logit_kd_loss(torch.tensor(STUDENT), torch.tensor(TEACHER), t).item()
    )


# --- the behaviour: a distilled student agrees with its teacher -----------------------------------


def relabelled(corpus: Path, out: Path) -> Path:
    """The same audio files with every label moved one class along (absolute paths, new manifests)."""
    shifted = {a: b for a, b in zip(EMOTIONS, EMOTIONS[1:] + EMOTIONS[:1])}
    utts = [
        Utterance(path=u.path, label=shifted[u.label], speaker=u.speaker, split=u.split, text="")
        for u in load_corpus(corpus).utterances
    ]
    out.mkdir(parents=True)
    write_manifests(out, utts, EMOTIONS, {"generator": "tests: labels shifted by one class"})
    return out


def train(data: Path, out: Path, epochs: int, *extra: str) -> Path:
    args = ["-q", "train", "ser", "--config", "tiny", "--data", str(data), "--out", str(out)]
    assert main([*args, "--set", f"optim.epochs={epochs}", "--set", "patience=50", *FAST[2:], *extra]) == 0
    return out


def predictions(run: Path, corpus: Path) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class, true label) for the held-out utterances (val and test)."""
    model, info = load_run_model(run)
    c = load_corpus(corpus)
    fs = compute_features(
        c.split("val") + c.split("test"), info.labels, info.features, run / "cache", progress=False
    )
    return predict_logits(model, fs, info.features).argmax(1), fs.labels


@pytest.mark.slow
def test_alpha_1_moves_the_student_toward_the_teacher_and_alpha_0_does_not(tmp_path):
    corpus = make_tone_corpus(tmp_path / "corpus", speakers_per_split=(4, 2, 2))
    teacher = train(relabelled(corpus, tmp_path / "shifted"), tmp_path / "teacher", 6)
    t_pred, truth = predictions(teacher, corpus)
    teacher_vs_truth = float((t_pred == truth).mean())
    assert teacher_vs_truth < 0.5, "the teacher must disagree with the labels for this test to mean anything"

    agreement, accuracy = {}, {}
    for alpha in ("1.0", "0.0"):
        student = train(
            corpus, tmp_path / f"student-a{alpha}", 4, "--teacher", str(teacher), "--set", f"kd.alpha={alpha}"
        )
        kd = json.loads((student / "model.json").read_text())["trained_with"]["kd"]
        assert kd["alpha"] == float(alpha) and kd["teacher"] == str(teacher.resolve())
        s_pred, _ = predictions(student, corpus)
        agreement[alpha] = float((s_pred == t_pred).mean())
        accuracy[alpha] = float((s_pred == truth).mean())

    figures = f"agreement with the teacher {agreement}, accuracy on the labels {accuracy}, teacher {teacher_vs_truth}"
    assert agreement["1.0"] >= agreement["0.0"] + 0.3, figures  # distillation pulled it to the teacher
    assert accuracy["0.0"] > accuracy["1.0"], figures  # and the hard labels pulled the other one away
