"""``edgewise data disambig``: every reading of every template spoken by every speaker.

Speakers are espeak-ng voices (accent x variant, the SER synthesizer's list) with the same fixed
per-speaker offsets (:class:`~edgewise.cloud.data.synth.SpeakerSpread`: pitch, rate, amplitude,
level; the pitch-range offset widens or narrows the speaker's accents). Each utterance draws its
own pitch, rate and amplitude around the speaker's, and how strongly it marks its reading: every
break is ``break_scale`` times as long and every pitch accent ``accent_scale`` times as large as
written. espeak-ng's own leading and trailing silence is trimmed, then the channel of
``edgewise data speech`` is applied (random padding, level, background noise at a random SNR).

Speakers are chosen interleaving accents and genders, and split by speaker: ``heldout_fraction``
of them (at least one) to val, as many to test, the rest to train. The corpus is the project's
format (``corpus.json`` + train/val/test.csv + wavs/) with ``label`` the reading's index as a
string, so ``edgewise train ser`` trains an audio-only model on it as it is; the extra columns
``template, kind, reading, meaning, n_readings`` (and the rendering settings) are for the
disambiguation tools, and ``corpus.json`` carries the template table. Same seed, same bytes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.cloud.data.augment import add_noise, apply_gain
from edgewise.cloud.data.corpus import SPLITS, Corpus, Utterance, load_edgewise
from edgewise.cloud.data.synth import (
    ACCENTS,
    SAMPLE_RATE,
    VARIANTS,
    ChannelSettings,
    Dist,
    Speaker,
    SpeakerSpread,
    SynthSettings,
    _run,
    check_target,
    check_tools,
    make_speakers,
    publish_rows,
    render_in_pool,
    sox_command,
)
from edgewise.cloud.disambig.templates import Template, vary_ssml
from edgewise.errors import ConfigError

log = logging.getLogger(__name__)

TRIM_DB = 45.0  # espeak-ng's leading/trailing silence: samples this far below the peak


@dataclass(frozen=True)
class DisambigSettings:
    """What the corpus sounds like (recorded in corpus.json)."""

    pitch: Dist = Dist(50, 4, 5, 95)  # espeak-ng -p, the speaker's offset added
    rate: Dist = Dist(160, 10, 110, 230)  # espeak-ng -s, words per minute
    amplitude: Dist = Dist(100, 6, 40, 145)  # espeak-ng -a; above about 150 it clips
    # how strongly an utterance marks its reading: wide, so some barely do (a short break, a flat accent)
    break_scale: Dist = Dist(1.0, 0.35, 0.25, 1.8)  # every <break> this many times as long
    accent_scale: Dist = Dist(1.0, 0.35, 0.2, 1.8)  # every pitch="+N%" this many times as large
    speaker_spread: SpeakerSpread = SpeakerSpread()
    channel: ChannelSettings = ChannelSettings(noise_snr_db=(15.0, 35.0))
    accents: tuple[str, ...] = ACCENTS
    variants: tuple[str, ...] = VARIANTS
    heldout_fraction: float = 0.2  # of the speakers, for val and again for test
    sample_rate: int = SAMPLE_RATE

    @property
    def max_speakers(self) -> int:
        return len(self.accents) * len(self.variants)


@dataclass(frozen=True)
class ReadingPlan:
    """Every decision about one utterance, made before any audio is rendered."""

    seed: int
    index: int
    split: str
    speaker: Speaker
    template: Template = field(hash=False)
    reading: int
    pitch: int
    rate: int
    amplitude: int
    break_scale: float
    accent_scale: float
    lead_ms: int
    trail_ms: int
    level_db: float
    snr_db: float | None
    noise_color: str

    @property
    def name(self) -> str:
        return f"{self.template.id}-r{self.reading}"

    @property
    def ssml(self) -> str:
        return vary_ssml(self.template.readings[self.reading].ssml, self.break_scale, self.accent_scale)


# --- planning ---------------------------------------------------------------------------------


def choose_speakers(n: int, settings: DisambigSettings, rng: np.random.Generator) -> dict[str, list[Speaker]]:
    """``n`` speakers, interleaving accents and genders, split by speaker into train/val/test."""
    if not 3 <= n <= settings.max_speakers:
        raise ConfigError(f"--n-speakers must be between 3 and {settings.max_speakers}, got {n}")
    voices = SynthSettings(
        accents=settings.accents, variants=settings.variants, speaker_spread=settings.speaker_spread
    )
    groups: dict[tuple[str, str], list[Speaker]] = {}
    for spk in make_speakers(voices, rng):
        groups.setdefault((spk.accent, spk.gender), []).append(spk)
    queues = {key: [members[i] for i in rng.permutation(len(members))] for key, members in groups.items()}
    n_acc = len(settings.accents)
    genders = ("male", "female")
    key_order = [
        (settings.accents[i % n_acc], genders[(i % n_acc + i // n_acc) % 2]) for i in range(2 * n_acc)
    ]
    ordered: list[Speaker] = []
    while len(ordered) < n:
        for key in key_order:
            if queues.get(key) and len(ordered) < n:
                ordered.append(queues[key].pop(0))
    held = max(1, round(n * settings.heldout_fraction))
    if n - 2 * held < 1:
        raise ConfigError(f"--n-speakers {n} leaves no training speaker ({held} for val and {held} for test)")
    return {"val": ordered[:held], "test": ordered[held : 2 * held], "train": ordered[2 * held :]}


def plan_corpus(
    templates: Sequence[Template], n_speakers: int, seed: int, settings: DisambigSettings | None = None
) -> tuple[list[ReadingPlan], dict[str, list[Speaker]]]:
    """Every reading of every template by every speaker, split by speaker; all draws made here."""
    settings = settings or DisambigSettings()
    rng = np.random.default_rng(seed)
    splits = choose_speakers(n_speakers, settings, rng)
    chan = settings.channel
    plans: list[ReadingPlan] = []
    for split in SPLITS:
        for speaker in splits[split]:
            off = speaker.offsets
            for template in templates:
                for k in range(len(template.readings)):
                    plans.append(
                        ReadingPlan(
                            seed=seed,
                            index=len(plans),
                            split=split,
                            speaker=speaker,
                            template=template,
                            reading=k,
                            pitch=int(round(settings.pitch.sample(rng, off["pitch"]))),
                            rate=int(round(settings.rate.sample(rng, off["rate"]))),
                            amplitude=int(round(settings.amplitude.sample(rng, off["amplitude"]))),
                            break_scale=round(settings.break_scale.sample(rng), 3),
                            accent_scale=round(
                                settings.accent_scale.sample(rng, off["pitch_range"] / 100), 3
                            ),
                            lead_ms=int(rng.integers(chan.silence_ms[0], chan.silence_ms[1] + 1)),
                            trail_ms=int(rng.integers(chan.silence_ms[0], chan.silence_ms[1] + 1)),
                            level_db=chan.level_db.sample(rng, off["level_db"]),
                            snr_db=float(rng.uniform(*chan.noise_snr_db)) if chan.noise_snr_db else None,
                            noise_color=chan.noise_colors[int(rng.integers(len(chan.noise_colors)))],
                        )
                    )
    return plans, splits


# --- rendering --------------------------------------------------------------------------------


def espeak_command(plan: ReadingPlan) -> list[str]:
    return [
        "espeak-ng", "-m", "-v", plan.speaker.voice,
        "-p", str(plan.pitch), "-s", str(plan.rate), "-a", str(plan.amplitude),
        "--stdout", plan.ssml,
    ]  # fmt: skip


def trim_silence(audio: np.ndarray, below_db: float = TRIM_DB) -> np.ndarray:
    """``audio`` without its leading and trailing samples more than ``below_db`` under the peak."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak == 0.0:
        return audio
    loud = np.flatnonzero(np.abs(audio) >= peak * 10.0 ** (-below_db / 20.0))
    return audio[loud[0] : loud[-1] + 1]


def render_reading(plan: ReadingPlan, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The utterance of ``plan``: the voice, trimmed, padded, at its level, with its noise."""
    raw = _run(sox_command(sample_rate), stdin=_run(espeak_command(plan)))
    voice = trim_silence(np.frombuffer(raw, dtype="<f4"))
    if voice.size == 0:
        raise RuntimeError(f"espeak-ng produced no audio for {plan.name} ({plan.speaker.voice})")
    lead = np.zeros(plan.lead_ms * sample_rate // 1000, dtype=np.float32)
    trail = np.zeros(plan.trail_ms * sample_rate // 1000, dtype=np.float32)
    out = apply_gain(np.concatenate([lead, voice, trail]), plan.level_db)
    if plan.snr_db is not None:
        out = add_noise(out, plan.snr_db, np.random.default_rng([plan.seed, plan.index]), plan.noise_color)
    peak = float(np.max(np.abs(out)))
    return out * np.float32(0.98 / peak) if peak > 0.98 else out


def write_reading(plan: ReadingPlan, root: Path, settings: DisambigSettings) -> tuple[Utterance, dict]:
    """Render ``plan`` into ``root/wavs/SPEAKER/TEMPLATE-rK.wav``; its manifest row."""
    from edgewise.audio import write_wav

    sr = settings.sample_rate
    try:
        audio = render_reading(plan, sr)
        path = write_wav(root / "wavs" / plan.speaker.id / f"{plan.name}.wav", audio, sr)
    except (RuntimeError, OSError) as exc:
        raise RuntimeError(f"synthesis of {plan.speaker.id}/{plan.name} failed: {exc}") from exc
    template = plan.template
    utt = Utterance(
        path=path, label=str(plan.reading), speaker=plan.speaker.id, split=plan.split, text=template.text
    )
    extra = {
        "template": template.id,
        "kind": template.kind,
        "reading": plan.reading,
        "meaning": template.readings[plan.reading].meaning,
        "n_readings": len(template.readings),
        "voice": plan.speaker.voice,
        "gender": plan.speaker.gender,
        "duration": f"{audio.shape[0] / sr:.3f}",
        "pitch": plan.pitch,
        "rate": plan.rate,
        "amplitude": plan.amplitude,
        "break_scale": f"{plan.break_scale:.3f}",
        "accent_scale": f"{plan.accent_scale:.3f}",
        "level_db": f"{plan.level_db:.2f}",
        "snr_db": "" if plan.snr_db is None else f"{plan.snr_db:.2f}",
        "noise": "" if plan.snr_db is None else plan.noise_color,
    }
    return utt, extra


def synthesize_disambig(
    out_dir: str | Path,
    templates: Sequence[Template],
    n_speakers: int,
    seed: int,
    *,
    workers: int | None = None,
    settings: DisambigSettings | None = None,
    force: bool = False,
    progress: bool = True,
) -> Corpus:
    """Synthesize the corpus into ``out_dir`` (built aside, renamed at the end) and load it back."""
    settings = settings or DisambigSettings()
    out = Path(out_dir).expanduser().absolute()
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ConfigError(f"synthesis: --workers must be at least 1, got {workers}")
    engine = check_tools(SynthSettings(accents=settings.accents, variants=settings.variants))
    check_target(out, force)
    plans, splits = plan_corpus(templates, n_speakers, seed, settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    started = time.perf_counter()
    log.info(
        "synthesizing %d readings of %d templates by %d speakers (seed %d, %d workers) into %s",
        len(plans), len(templates), n_speakers, seed, workers, out,
    )  # fmt: skip
    try:
        rows = _render_all(plans, staging, settings, workers, progress)
        labels = [str(k) for k in range(max(len(t.readings) for t in templates))]
        meta = corpus_meta(templates, n_speakers, seed, settings, splits, engine)
        publish_rows(staging, out, force, rows, labels, meta)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("wrote %d files to %s in %.1f s", len(rows), out, time.perf_counter() - started)
    return load_edgewise(out)


def _render_all(
    plans: Sequence[ReadingPlan], root: Path, settings: DisambigSettings, workers: int, progress: bool
) -> list[tuple[Utterance, dict]]:
    return render_in_pool(plans, lambda p: write_reading(p, root, settings), workers, progress, "disambig")


def corpus_meta(
    templates: Sequence[Template],
    n_speakers: int,
    seed: int,
    settings: DisambigSettings,
    splits: dict[str, list[Speaker]],
    engine_version: str,
) -> dict[str, Any]:
    """corpus.json besides labels, speakers and counts: the template table, settings, voices."""
    return {
        "task": "disambig",
        "sample_rate": settings.sample_rate,
        "seed": seed,
        "n_speakers": n_speakers,
        "generator": {
            "command": "edgewise data disambig",
            "engine": f"espeak-ng {engine_version} + sox",
            "settings": asdict(settings),
        },
        "templates": {t.id: t.summary() for t in templates},
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
