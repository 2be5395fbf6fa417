"""Synthesize a labelled emotional-speech corpus offline with espeak-ng and sox.

Emotion is rendered as prosody only. Each class has a *distribution* per prosodic dimension
(:class:`ProsodyProfile`: pitch level, pitch range, speaking rate, amplitude, pause probability and
length, pitch slope across phrases), each speaker shifts those by fixed offsets
(:class:`SpeakerSpread`), and every utterance draws its own values, so the classes overlap on
every single dimension and differ only jointly. A channel stage (:class:`ChannelSettings`) adds
silence padding, a random recording level and background noise at a random SNR. All of it is
one table, :class:`SynthSettings`, to tune the corpus's difficulty in one place.

The same seed gives byte-identical wavs and manifests: every random draw is made up front in
:func:`plan_corpus` (one generator, fixed order), or in a per-utterance generator seeded by
``(seed, index)``, and espeak-ng and sox are deterministic.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np

from edgewise.cloud.data.augment import NOISE_COLORS, AugmentSettings, add_noise, apply_gain, augment
from edgewise.cloud.data.corpus import (
    CORPUS_FILE,
    SPLITS,
    Corpus,
    Utterance,
    load_edgewise,
    write_manifests,
)
from edgewise.cloud.data.sentences import Sentence, sentence_pool
from edgewise.errors import ConfigError, DataError, MissingDependencyError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
INSTALL_HINT = "apt-get install espeak-ng sox"
PROSODY_DIMENSIONS = ("pitch", "pitch_range", "rate", "amplitude", "pause_prob", "pause_ms", "pitch_slope")


@dataclass(frozen=True)
class Dist:
    """A normal distribution clipped to ``[lo, hi]``."""

    mean: float
    sd: float
    lo: float
    hi: float

    def sample(self, rng: np.random.Generator, offset: float = 0.0) -> float:
        return float(np.clip(rng.normal(self.mean + offset, self.sd), self.lo, self.hi))


@dataclass(frozen=True)
class ProsodyProfile:
    """How one class is spoken: a distribution per prosodic dimension."""

    pitch: Dist  # espeak-ng -p, 0..99 (about 70-170 Hz for a male voice)
    pitch_range: Dist  # SSML <prosody range>, percent of the voice's own range
    rate: Dist  # espeak-ng -s, words per minute
    amplitude: Dist  # espeak-ng -a; above about 150 it clips
    pause_prob: Dist  # chance of a pause at each phrase boundary
    pause_ms: Dist  # length of such a pause
    pitch_slope: Dist  # percent pitch change from one phrase to the next


def _profile(pitch, pitch_range, rate, amplitude, pause_prob, pause_ms, pitch_slope) -> ProsodyProfile:
    """Shorthand for the table below: each argument is (mean, sd); the bounds are per dimension."""
    return ProsodyProfile(
        pitch=Dist(*pitch, 2, 97),
        pitch_range=Dist(*pitch_range, 20, 250),
        rate=Dist(*rate, 95, 260),
        amplitude=Dist(*amplitude, 35, 145),
        pause_prob=Dist(*pause_prob, 0.0, 1.0),
        pause_ms=Dist(*pause_ms, 40, 700),
        pitch_slope=Dist(*pitch_slope, -20, 20),
    )


# The difficulty table. Means follow the usual acoustic picture of each emotion (sad: low, narrow,
# slow, soft, long pauses; angry: loud, fast, short pauses; happy: high, wide, rising), but every
# standard deviation is wide enough that the middle 90% of each class overlaps the middle 90% of
# every other class on every dimension, speaker offsets included (tests/cloud/data checks this).
# At N=1200 the eGeMAPS + logistic-regression baseline (edgewise eval baseline) scores 0.615 and
# 0.63 test UA for seeds 0 and 1 (val 0.63, 0.675): hard, well under 0.80, yet learnable.
DEFAULT_PROFILES: dict[str, ProsodyProfile] = {
    "neutral": _profile((44, 13), (80, 33), (162, 24), (86, 24), (0.35, 0.3), (190, 105), (-4, 6)),
    "happy": _profile((66, 13), (150, 40), (186, 24), (108, 24), (0.15, 0.3), (130, 105), (6, 6)),
    "sad": _profile((28, 13), (40, 30), (124, 24), (62, 24), (0.7, 0.3), (380, 135), (-10, 6)),
    "angry": _profile((55, 13), (130, 40), (198, 24), (134, 24), (0.25, 0.3), (70, 90), (0, 6)),
}


@dataclass(frozen=True)
class SpeakerSpread:
    """Standard deviations of each speaker's fixed offsets (a speaker's own pitch, tempo, level)."""

    pitch: float = 7.0
    pitch_range: float = 12.0
    rate: float = 10.0
    amplitude: float = 8.0
    level_db: float = 2.0


@dataclass(frozen=True)
class ChannelSettings:
    """What happens between the voice and the file: padding, recording level, background noise."""

    noise_snr_db: tuple[float, float] | None = (10.0, 30.0)  # None: no noise
    noise_colors: tuple[str, ...] = NOISE_COLORS
    level_db: Dist = Dist(-4.0, 1.5, -12.0, 2.0)
    silence_ms: tuple[int, int] = (50, 300)  # drawn separately before and after the speech


ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-gb-x-rp")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5")


@dataclass(frozen=True)
class SynthSettings:
    """Everything that decides what the corpus sounds like (recorded in corpus.json)."""

    profiles: dict[str, ProsodyProfile] = field(default_factory=lambda: dict(DEFAULT_PROFILES))
    speaker_spread: SpeakerSpread = SpeakerSpread()
    channel: ChannelSettings = ChannelSettings()
    augment: AugmentSettings = AugmentSettings()
    accents: tuple[str, ...] = ACCENTS
    variants: tuple[str, ...] = VARIANTS
    heldout_fraction: float = 0.15  # of each accent x gender group, for val and again for test
    phrase_pitch_jitter: float = 4.0  # sd, percent, of each phrase's pitch around the slope
    sentence_pool_size: int = 400
    sample_rate: int = SAMPLE_RATE

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.profiles)


@dataclass(frozen=True)
class Speaker:
    id: str
    accent: str
    variant: str
    offsets: dict[str, float] = field(hash=False)

    @property
    def gender(self) -> str:
        return "female" if self.variant.startswith("f") else "male"

    @property
    def voice(self) -> str:
        return f"{self.accent}+{self.variant}"


@dataclass(frozen=True)
class UtterancePlan:
    """Every decision about one utterance, made before any audio is rendered."""

    seed: int  # the corpus seed; with index it seeds this utterance's noise
    index: int
    split: str
    label: str
    speaker: Speaker
    sentence: Sentence
    pitch: int
    pitch_range: int
    rate: int
    amplitude: int
    phrase_pitch: tuple[int, ...]  # percent, one per phrase
    pauses_ms: tuple[int, ...]  # one per phrase boundary, 0 for none
    lead_ms: int
    trail_ms: int
    level_db: float
    snr_db: float | None
    noise_color: str
    augment: tuple[str, ...] = ()

    @property
    def uid(self) -> str:
        return f"{self.speaker.id}-{self.index:05d}"


# --- planning ---------------------------------------------------------------------------------


def make_speakers(settings: SynthSettings, rng: np.random.Generator) -> list[Speaker]:
    """One speaker per accent x variant, each with fixed random offsets."""
    spread = asdict(settings.speaker_spread)
    return [
        Speaker(
            id=f"{accent}_{variant}",
            accent=accent,
            variant=variant,
            offsets={name: float(rng.normal(0.0, sd)) for name, sd in spread.items()},
        )
        for accent in settings.accents
        for variant in settings.variants
    ]


def assign_splits(
    speakers: Sequence[Speaker], settings: SynthSettings, rng: np.random.Generator
) -> dict[str, list[Speaker]]:
    """Speaker-disjoint splits, stratified by accent and gender.

    From each accent x gender group of k speakers, ``max(1, round(k * heldout_fraction))`` go to
    val and as many to test (groups under 3 speakers stay in train). Each split's list
    interleaves the groups, so its first speakers already cover the accents and both genders.
    """
    genders = ("male", "female")
    groups: dict[tuple[str, str], list[Speaker]] = {}
    for spk in speakers:
        groups.setdefault((spk.accent, spk.gender), []).append(spk)
    per_split: dict[str, dict[tuple[str, str], list[Speaker]]] = {s: {} for s in SPLITS}
    for key, members in groups.items():
        members = [members[i] for i in rng.permutation(len(members))]
        held = max(1, round(len(members) * settings.heldout_fraction)) if len(members) >= 3 else 0
        per_split["val"][key] = members[:held]
        per_split["test"][key] = members[held : 2 * held]
        per_split["train"][key] = members[2 * held :]
    n_acc = len(settings.accents)
    key_order = [
        (settings.accents[i % n_acc], genders[(i % n_acc + i // n_acc) % 2]) for i in range(2 * n_acc)
    ]
    out = {}
    for split in SPLITS:
        queues = [list(per_split[split].get(key, [])) for key in key_order]
        out[split] = [q.pop(0) for _ in range(max(map(len, queues), default=0)) for q in queues if q]
        if not out[split]:
            raise ConfigError(
                f"synthesis: no speakers left for the {split} split; need at least 3 variants of one "
                "gender per accent"
            )
    return out


def min_utterances(n_labels: int) -> int:
    return 6 * n_labels


def plan_corpus(
    n: int, seed: int, settings: SynthSettings | None = None, augment: Sequence[str] = ()
) -> tuple[list[UtterancePlan], dict[str, list[Speaker]]]:
    """Decide every utterance of an ``n``-utterance corpus (and the speaker splits) for ``seed``.

    Val and test get utterances in proportion to their speakers (at least one per label), labels
    are balanced within each split and each speaker speaks every label in turn.
    """
    settings = settings or SynthSettings()
    labels = settings.labels
    if n < min_utterances(len(labels)):
        raise ConfigError(f"synthesis: --n must be at least {min_utterances(len(labels))}, got {n}")
    rng = np.random.default_rng(seed)
    speakers = make_speakers(settings, rng)
    splits = assign_splits(speakers, settings, rng)
    total = len(speakers)
    sizes = {s: max(len(labels), round(n * len(splits[s]) / total)) for s in ("val", "test")}
    sizes["train"] = n - sizes["val"] - sizes["test"]
    pool = sentence_pool(settings.sentence_pool_size)
    plans: list[UtterancePlan] = []
    for split in SPLITS:
        split_speakers = splits[split]
        for j in range(sizes[split]):
            speaker = split_speakers[(j // len(labels)) % len(split_speakers)]
            sentence = pool[int(rng.integers(len(pool)))]
            plans.append(
                _plan_one(
                    seed, len(plans), split, labels[j % len(labels)], speaker, sentence, settings, rng,
                    augment if split == "train" else (),
                )
            )  # fmt: skip
    return plans, splits


def _plan_one(
    seed: int,
    index: int,
    split: str,
    label: str,
    speaker: Speaker,
    sentence: Sentence,
    settings: SynthSettings,
    rng: np.random.Generator,
    augment: Sequence[str],
) -> UtterancePlan:
    prof, off, chan = settings.profiles[label], speaker.offsets, settings.channel
    slope = prof.pitch_slope.sample(rng)
    n_phr = len(sentence.phrases)
    phrase_pitch = tuple(
        int(round(slope * (k - (n_phr - 1) / 2) + rng.normal(0.0, settings.phrase_pitch_jitter)))
        for k in range(n_phr)
    )
    pause_prob = prof.pause_prob.sample(rng)
    pauses = tuple(
        int(round(prof.pause_ms.sample(rng))) if rng.random() < pause_prob else 0 for _ in range(n_phr - 1)
    )
    snr = float(rng.uniform(*chan.noise_snr_db)) if chan.noise_snr_db else None
    return UtterancePlan(
        seed=seed,
        index=index,
        split=split,
        label=label,
        speaker=speaker,
        sentence=sentence,
        pitch=int(round(prof.pitch.sample(rng, off["pitch"]))),
        pitch_range=int(round(prof.pitch_range.sample(rng, off["pitch_range"]))),
        rate=int(round(prof.rate.sample(rng, off["rate"]))),
        amplitude=int(round(prof.amplitude.sample(rng, off["amplitude"]))),
        phrase_pitch=phrase_pitch,
        pauses_ms=pauses,
        lead_ms=int(rng.integers(chan.silence_ms[0], chan.silence_ms[1] + 1)),
        trail_ms=int(rng.integers(chan.silence_ms[0], chan.silence_ms[1] + 1)),
        level_db=chan.level_db.sample(rng, off["level_db"]),
        snr_db=snr,
        noise_color=chan.noise_colors[int(rng.integers(len(chan.noise_colors)))],
        augment=tuple(augment),
    )


# --- rendering --------------------------------------------------------------------------------


def ssml(plan: UtterancePlan) -> str:
    """The SSML text: one <prosody> per phrase (pitch along the slope), <break> where drawn."""
    parts = []
    phrases = plan.sentence.phrases
    for k, phrase in enumerate(phrases):
        words = escape(phrase + ("." if k == len(phrases) - 1 else ""))
        parts.append(
            f'<prosody pitch="{plan.phrase_pitch[k]:+d}%" range="{plan.pitch_range}%">{words}</prosody>'
        )
        if k < len(plan.pauses_ms) and plan.pauses_ms[k] > 0:
            parts.append(f'<break time="{plan.pauses_ms[k]}ms"/>')
    return "<speak>" + " ".join(parts) + "</speak>"


def espeak_command(plan: UtterancePlan) -> list[str]:
    return [
        "espeak-ng", "-m", "-v", plan.speaker.voice,
        "-p", str(plan.pitch), "-s", str(plan.rate), "-a", str(plan.amplitude),
        "--stdout", ssml(plan),
    ]  # fmt: skip


def sox_command(sample_rate: int) -> list[str]:
    """sox reading a wav on stdin, writing float32 mono raw at ``sample_rate`` on stdout (no dither)."""
    return [
        "sox", "-t", "wav", "-",
        "-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1", "-r", str(sample_rate), "-",
    ]  # fmt: skip


def _run(cmd: list[str], stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise RuntimeError(f"{cmd[0]} exited with {proc.returncode}: {err}")
    return proc.stdout


def render_speech(plan: UtterancePlan, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The clean voice of ``plan`` as float32 mono at ``sample_rate`` (espeak-ng -> sox)."""
    wav = _run(espeak_command(plan))
    raw = _run(sox_command(sample_rate), stdin=wav)
    audio = np.frombuffer(raw, dtype="<f4")
    if audio.size == 0:
        raise RuntimeError(f"espeak-ng produced no audio for utterance {plan.index} ({plan.speaker.voice})")
    return audio


def apply_channel(audio: np.ndarray, plan: UtterancePlan, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Pad with silence, set the recording level, add the background noise; keep peaks below 0.98."""
    lead = np.zeros(plan.lead_ms * sample_rate // 1000, dtype=np.float32)
    trail = np.zeros(plan.trail_ms * sample_rate // 1000, dtype=np.float32)
    out = apply_gain(np.concatenate([lead, audio, trail]), plan.level_db)
    if plan.snr_db is not None:
        out = add_noise(out, plan.snr_db, _utterance_rng(plan, 0), plan.noise_color)
    peak = float(np.max(np.abs(out)))
    return out * np.float32(0.98 / peak) if peak > 0.98 else out


def _utterance_rng(plan: UtterancePlan, stream: int) -> np.random.Generator:
    """The generator for one utterance's noise (stream 0) or its k-th augmented copy (stream k)."""
    return np.random.default_rng([plan.seed, plan.index, stream])


def render_utterance(
    plan: UtterancePlan, root: Path, settings: SynthSettings
) -> list[tuple[Utterance, dict]]:
    """Render ``plan`` (and its augmented copies) into ``root``; one manifest row per file written."""
    sr = settings.sample_rate
    try:
        audio = apply_channel(render_speech(plan, sr), plan, sr)
        rows = [_write_row(plan, root, audio, sr, "", "")]
        for stream, kind in enumerate(plan.augment, start=1):
            copy, note = augment(audio, kind, _utterance_rng(plan, stream), settings.augment, sr)
            peak = float(np.max(np.abs(copy)))
            copy = copy * np.float32(0.98 / peak) if peak > 0.98 else copy
            rows.append(_write_row(plan, root, copy, sr, kind, note))
    except (RuntimeError, OSError) as exc:
        raise RuntimeError(f"synthesis of utterance {plan.uid} ({plan.label}) failed: {exc}") from exc
    return rows


def _write_row(
    plan: UtterancePlan, root: Path, audio: np.ndarray, sample_rate: int, kind: str, note: str
) -> tuple[Utterance, dict]:
    from edgewise.audio import write_wav

    name = f"{plan.uid}-{kind}.wav" if kind else f"{plan.uid}.wav"
    path = write_wav(root / "wavs" / plan.speaker.id / name, audio, sample_rate)
    utt = Utterance(
        path=path, label=plan.label, speaker=plan.speaker.id, split=plan.split, text=plan.sentence.text
    )
    extra = {
        "voice": plan.speaker.voice,
        "gender": plan.speaker.gender,
        "duration": f"{audio.shape[0] / sample_rate:.3f}",
        "pitch": plan.pitch,
        "pitch_range": plan.pitch_range,
        "rate": plan.rate,
        "amplitude": plan.amplitude,
        "phrase_pitch": " ".join(f"{p:+d}" for p in plan.phrase_pitch),
        "pauses_ms": " ".join(str(p) for p in plan.pauses_ms),
        "level_db": f"{plan.level_db:.2f}",
        "snr_db": "" if plan.snr_db is None else f"{plan.snr_db:.2f}",
        "noise": "" if plan.snr_db is None else plan.noise_color,
        "augment": kind,
        "augment_params": note,
    }
    return utt, extra


# --- the corpus -------------------------------------------------------------------------------


def check_tools(settings: SynthSettings | None = None) -> str:
    """Check that espeak-ng and sox are installed and know the configured voices; return espeak's version."""
    settings = settings or SynthSettings()
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        raise MissingDependencyError(
            f"speech synthesis needs {' and '.join(missing)}, not found on PATH; install with: {INSTALL_HINT}"
        )
    languages = {
        line.split()[1] for line in _run(["espeak-ng", "--voices"]).decode().splitlines()[1:] if line.split()
    }
    variants = {
        line.split()[4].removeprefix("!v/")
        for line in _run(["espeak-ng", "--voices=variant"]).decode().splitlines()[1:]
        if len(line.split()) >= 5
    }
    unknown = [a for a in settings.accents if a not in languages] + [
        v for v in settings.variants if v not in variants
    ]
    if unknown:
        raise MissingDependencyError(
            f"espeak-ng has no voice or variant named {', '.join(unknown)} (it would silently fall back "
            f"to its default voice); install the full voice data with: {INSTALL_HINT}"
        )
    version = _run(["espeak-ng", "--version"]).decode().split()
    return next((word for word in version if word[:1].isdigit()), "unknown")


def synthesize_corpus(
    out_dir: str | Path,
    n: int,
    seed: int,
    *,
    workers: int | None = None,
    settings: SynthSettings | None = None,
    augment: Sequence[str] = (),
    force: bool = False,
    progress: bool = True,
) -> Corpus:
    """Synthesize an ``n``-utterance corpus into ``out_dir`` and return it, loaded back.

    The corpus is built in a temporary sibling directory and renamed to ``out_dir`` only when
    complete. An existing non-empty ``out_dir`` is refused unless ``force`` (then it must be an
    edgewise corpus, and it is replaced only at the end). ``augment`` adds, per training
    utterance, one copy per named augmentation (see :mod:`edgewise.cloud.data.augment`).
    """
    settings = settings or SynthSettings()
    out = Path(out_dir).expanduser().absolute()
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ConfigError(f"synthesis: --workers must be at least 1, got {workers}")
    engine_version = check_tools(settings)
    check_target(out, force)
    plans, splits = plan_corpus(n, seed, settings, augment)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    started = time.perf_counter()
    log.info("synthesizing %d utterances (seed %d, %d workers) into %s", n, seed, workers, out)
    try:
        rows = _render_all(plans, staging, settings, workers, progress)
        meta = corpus_meta(n, seed, settings, augment, splits, engine_version)
        publish_rows(staging, out, force, rows, settings.labels, meta)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("wrote %d files to %s in %.1f s", len(rows), out, time.perf_counter() - started)
    return load_edgewise(out)


def publish_rows(
    staging: Path,
    out: Path,
    force: bool,
    rows: list[tuple[Utterance, dict]],
    labels: Sequence[str],
    meta: dict,
) -> None:
    """Write the manifests of the rendered ``rows`` into ``staging``, then move it to ``out`` (an
    existing corpus there is replaced only with ``force``, checked again now that it is complete)."""
    write_manifests(staging, [u for u, _ in rows], labels, meta, extra_columns=[x for _, x in rows])
    check_target(out, force)
    _move_into_place(staging, out)


def render_in_pool(
    plans: Sequence[Any], render: Callable[[Any], Any], workers: int, progress: bool, name: str
) -> list:
    """``render(plan)`` for every plan in a thread pool (the work happens in espeak-ng and sox
    processes), with a progress bar; the results in plan order. A failure cancels what has not
    started and is raised."""
    from tqdm import tqdm

    results: list[Any] = [None] * len(plans)
    with (
        tqdm(total=len(plans), desc="synthesizing", unit="utt", file=sys.stderr, disable=not progress) as bar,
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name) as pool,
    ):
        futures = {pool.submit(render, p): i for i, p in enumerate(plans)}
        try:
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                bar.update()
        except BaseException:
            for fut in futures:
                fut.cancel()
            raise
    return results


def _render_all(
    plans: Sequence[UtterancePlan], root: Path, settings: SynthSettings, workers: int, progress: bool
) -> list[tuple[Utterance, dict]]:
    rendered = render_in_pool(
        plans, lambda p: render_utterance(p, root, settings), workers, progress, "synth"
    )
    return [row for rows in rendered for row in rows]


def check_target(out: Path, force: bool, marker: str = CORPUS_FILE, kind: str = "an edgewise corpus") -> None:
    """Refuse to overwrite a non-empty ``out`` unless ``force``, and never anything but ``kind``
    (a directory holding ``marker``)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DataError(f"{out}: exists and is not a directory; choose another --out")
    if not any(out.iterdir()):
        return
    if not force:
        raise DataError(
            f"{out}: already exists and is not empty; pass --force to replace it "
            f"(the old one is replaced only once the new one is complete)"
        )
    if not (out / marker).is_file():
        raise DataError(
            f"{out}: refusing to replace a directory that is not {kind} (no {marker}); "
            "remove it yourself or choose another --out"
        )


def _move_into_place(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``; an existing ``out`` is moved aside first and deleted after."""
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.replace(staging, out)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, trash / out.name)
    try:
        os.replace(staging, out)
    except BaseException:
        os.replace(trash / out.name, out)
        raise
    shutil.rmtree(trash, ignore_errors=True)


def corpus_meta(
    n: int,
    seed: int,
    settings: SynthSettings,
    augment: Sequence[str],
    splits: dict[str, list[Speaker]],
    engine_version: str,
) -> dict[str, Any]:
    """What goes into corpus.json besides labels, speakers and counts (no paths, no timestamps)."""
    return {
        "sample_rate": settings.sample_rate,
        "seed": seed,
        "n": n,
        "generator": {
            "command": "edgewise data speech",
            "engine": f"espeak-ng {engine_version} + sox",
            "augment": list(augment),
            "settings": asdict(settings),
        },
        "voices": {
            spk.id: {
                "voice": spk.voice,
                "accent": spk.accent,
                "gender": spk.gender,
                "split": split,
                "offsets": {k: round(v, 4) for k, v in spk.offsets.items()},
            }
            for split in SPLITS
            for spk in splits[split]
        },
    }


def sample_prosody(
    settings: SynthSettings | None = None, n_per_class: int = 2000, seed: int = 0
) -> dict[str, dict[str, np.ndarray]]:
    """Draws of every prosodic dimension per class, speaker offsets included (to study overlap).

    Each draw picks a fresh speaker offset, so the spread is what a classifier sees across a
    corpus's speakers.
    """
    settings = settings or SynthSettings()
    rng = np.random.default_rng(seed)
    spread = asdict(settings.speaker_spread)
    out: dict[str, dict[str, np.ndarray]] = {}
    for label, prof in settings.profiles.items():
        draws: dict[str, list[float]] = {dim: [] for dim in PROSODY_DIMENSIONS}
        for _ in range(n_per_class):
            for dim in PROSODY_DIMENSIONS:
                offset = rng.normal(0.0, spread[dim]) if dim in spread else 0.0
                draws[dim].append(getattr(prof, dim).sample(rng, offset))
        out[label] = {dim: np.asarray(v) for dim, v in draws.items()}
    return out
