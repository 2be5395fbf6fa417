"""Exploratory: synthesize a variant of the default corpus, to test whether a change makes model size matter.

Not part of the library: ``level``, ``clean`` and ``timbre`` change the synthesizer settings; the
``voice``, ``manyvoices`` and ``wording`` variants patch the synthesizer from outside (per-utterance
or per-speaker espeak-ng voice variants; an extra closing phrase). Train on the result with
``edgewise train ser --config tiny|small --set model.hrf=null`` and compare (see benchmarks/README.md,
"Capacity study"). Usage::

    .venv/bin/python benchmarks/corpus_variants.py level --out /tmp/corpus-level --n 2000
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

import edgewise.cloud.data.synth as synth
from edgewise.cloud.data.sentences import Sentence

# Emotion in voice quality: (formant F1-F3 frequency scale, breathiness, roughness, F3-F5 height scale),
# each (mean, sd) per class, drawn per utterance.
VOICE_QUALITY = {
    "neutral": ((1.00, 0.03), (1.0, 1.0), (1.0, 1.0), (1.00, 0.10)),
    "happy": ((1.06, 0.03), (0.5, 1.0), (0.5, 1.0), (1.05, 0.10)),
    "sad": ((0.96, 0.03), (4.0, 1.5), (1.0, 1.0), (0.85, 0.10)),
    "angry": ((1.02, 0.03), (0.5, 1.0), (5.0, 1.5), (1.25, 0.10)),
}
# Emotion in the wording: a closing comment, congruent with the label for half the utterances.
COMMENTS = {
    "neutral": ("as it says in the plan", "like every other week", "according to the schedule",
                "which was expected", "as the notice said", "in the usual way", "following the list",
                "as agreed before"),
    "happy": ("and it was wonderful", "what a lovely surprise", "and we laughed all day",
              "which made everyone smile", "and I loved every minute", "it was absolutely brilliant",
              "such a great feeling", "and we celebrated"),
    "sad": ("and nobody came back", "it all felt so empty", "and I miss those days", "which broke my heart",
            "and then we lost everything", "I just wanted to cry", "it was so lonely",
            "and it never got better"),
    "angry": ("and that is unacceptable", "which is completely ridiculous", "I am sick of it",
              "how dare they do that", "and I am furious", "this is outrageous", "what a stupid mistake",
              "and I will not stand for it"),
}  # fmt: skip
P_CONGRUENT, P_RANDOM = 0.5, 0.2


def level_settings(level_sd: float, snr: tuple[float, float] | None = None) -> synth.SynthSettings:
    """Recording level nearly fixed, so loudness tells the amplitude cue (and optionally less noise)."""
    channel = replace(synth.ChannelSettings(), level_db=synth.Dist(-4.0, level_sd, -12.0, 2.0))
    if snr is not None:
        channel = replace(channel, noise_snr_db=snr)
    return synth.SynthSettings(
        channel=channel, speaker_spread=replace(synth.SpeakerSpread(), level_db=level_sd)
    )


def timbre_settings() -> synth.SynthSettings:
    """No per-speaker prosody offsets: a speaker's pitch, range, rate and loudness baseline follow from
    the espeak-ng voice variant alone, which its timbre gives away (recording level still varies)."""
    return synth.SynthSettings(
        speaker_spread=synth.SpeakerSpread(pitch=0.0, pitch_range=0.0, rate=0.0, amplitude=0.0)
    )


VOICES_PER_VARIANT = 4


def manyvoices_settings() -> synth.SynthSettings:
    """Four speakers per espeak-ng variant and accent (240), each with its own vocal tract, see
    :func:`patch_many_voices`; no random per-speaker prosody offsets."""
    variants = tuple(f"{v}-{k}" for v in synth.SynthSettings().variants for k in range(VOICES_PER_VARIANT))
    spread = synth.SpeakerSpread(pitch=0.0, pitch_range=0.0, rate=0.0, amplitude=0.0)
    return synth.SynthSettings(variants=variants, speaker_spread=spread)


def _system_espeak_data() -> Path:
    return Path(
        next(
            p
            for p in ("/usr/lib/x86_64-linux-gnu/espeak-ng-data", "/usr/share/espeak-ng-data")
            if os.path.isdir(p)
        )
    )


def _render_with_variant_files(data_root: Path, variant_text) -> None:
    """Patch the synthesizer so that each utterance is spoken with its own espeak-ng variant file,
    ``variant_text(plan)``, written into a private data folder under ``data_root`` that links the
    system's and removed once the utterance is rendered."""
    system = _system_espeak_data()
    data = data_root / "espeak-ng-data"
    data.mkdir(parents=True)
    for entry in system.iterdir():
        if entry.name != "voices":
            os.symlink(entry, data / entry.name)
    (data / "voices").mkdir()
    for entry in (system / "voices").iterdir():
        if entry.name != "!v":
            os.symlink(entry, data / "voices" / entry.name)
    variants = data / "voices" / "!v"
    variants.mkdir()
    for entry in (system / "voices" / "!v").iterdir():
        os.symlink(entry, variants / entry.name)

    command, render = synth.espeak_command, synth.render_speech

    def espeak_command(plan):
        name = f"x{plan.seed}_{plan.index}"
        (variants / name).write_text(variant_text(plan))
        cmd = command(plan)
        cmd[cmd.index("-v") + 1] = f"{plan.speaker.accent}+{name}"
        return [cmd[0], f"--path={data_root}", *cmd[1:]]

    def render_speech(plan, *args, **kwargs):
        try:
            return render(plan, *args, **kwargs)
        finally:  # espeak-ng lists at most 350 variants: keep only those in flight
            (variants / f"x{plan.seed}_{plan.index}").unlink(missing_ok=True)

    synth.espeak_command, synth.render_speech = espeak_command, render_speech


def patch_many_voices(data_root: Path) -> None:
    """Each speaker of :func:`manyvoices_settings` speaks with its base variant's file, its formants
    scaled by a vocal-tract factor f ~ N(1, 0.06) and its pitch by f^-2 (a longer tract, a lower
    voice, as in people), times a little independent jitter: the speaker's pitch baseline can be
    read from its timbre, given enough speakers to learn from."""
    import zlib

    system = _system_espeak_data()

    def variant_text(plan) -> str:
        speaker = plan.speaker
        rng = np.random.default_rng([zlib.crc32(speaker.id.encode()), 5])
        tract = float(rng.normal(1.0, 0.06))
        pitch_scale = tract**-2 * float(np.exp(rng.normal(0.0, 0.04)))
        out = []
        for line in (system / "voices" / "!v" / speaker.variant.split("-")[0]).read_text().splitlines():
            parts = line.split()
            if parts[:1] in (["name"], ["language"]):
                continue
            if parts[:1] == ["pitch"]:
                line = f"pitch {round(float(parts[1]) * pitch_scale)} {round(float(parts[2]) * pitch_scale)}"
            elif parts[:1] == ["formant"] and 1 <= int(parts[1]) <= 5:
                line = f"formant {parts[1]} {round(float(parts[2]) * tract)} {' '.join(parts[3:])}"
            out.append(line)
        return "language variant\nname x\n" + "\n".join(out) + "\n"

    _render_with_variant_files(data_root, variant_text)
    check = synth.check_tools  # the speakers' variant names are ours: check the default voices
    synth.check_tools = lambda settings=None: check(synth.SynthSettings())


def patch_voice_quality(data_root: Path) -> None:
    """Render each utterance with its own espeak-ng variant: the speaker's, plus class voice quality."""
    system = _system_espeak_data()

    def variant_text(plan) -> str:
        base = (system / "voices" / "!v" / plan.speaker.variant).read_text()
        rng = np.random.default_rng([plan.seed, plan.index, 99])
        (fm, fs), (bm, bs), (rm, rs), (hm, hs) = VOICE_QUALITY[plan.label]
        scale, breath = rng.normal(fm, fs), max(0.0, rng.normal(bm, bs))
        rough, height = max(0.0, rng.normal(rm, rs)), rng.normal(hm, hs)
        keep = [
            line
            for line in base.splitlines()
            if not line.startswith(("name", "language", "breath", "roughness"))
        ]
        keep += [f"breath 0 {' '.join([str(round(breath))] * 7)}", f"roughness {round(rough)}"]
        for n in range(9):
            freq = round(100 * (scale if 1 <= n <= 3 else 1.0))
            keep.append(f"formant {n} {freq} {round(100 * (height if 3 <= n <= 5 else 1.0))} 100")
        return "language variant\nname x\n" + "\n".join(keep) + "\n"

    _render_with_variant_files(data_root, variant_text)


def patch_wording() -> None:
    plan_one = synth._plan_one
    labels = list(COMMENTS)

    def with_comment(seed, index, split, label, speaker, sentence, settings, rng, augment):
        r = np.random.default_rng([seed, index, 77])
        u = r.random()
        source = (
            label if u < P_CONGRUENT else labels[int(r.integers(4))] if u < P_CONGRUENT + P_RANDOM else None
        )
        if source is not None:
            sentence = Sentence((*sentence.phrases, COMMENTS[source][int(r.integers(len(COMMENTS[source])))]))
        return plan_one(seed, index, split, label, speaker, sentence, settings, rng, augment)

    synth._plan_one = with_comment


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant", choices=["level", "clean", "voice", "wording", "timbre", "manyvoices"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    settings = None
    if args.variant == "level":
        settings = level_settings(0.5)
    elif args.variant == "clean":
        settings = level_settings(0.3, snr=(25.0, 40.0))
    elif args.variant == "timbre":
        settings = timbre_settings()
    elif args.variant == "wording":
        patch_wording()
    with tempfile.TemporaryDirectory() as tmp:
        if args.variant == "voice":
            patch_voice_quality(Path(tmp))
        elif args.variant == "manyvoices":
            settings = manyvoices_settings()
            patch_many_voices(Path(tmp))
        synth.synthesize_corpus(args.out, args.n, args.seed, settings=settings, progress=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
