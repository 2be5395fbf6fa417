"""Voices side by side: each engine in its own process, sentences interleaved round by round.

An engine is named by a spec:

- ``edgewise:BUNDLE[:VOICE[:STEPS]]``: the torch-free pipeline of a tts bundle, with the graphs
  of one voice (``fp32``, ``int8``, ``tflite-fp32``, ``tflite-int8``; default: what the device
  profile picks) and an ODE step count;
- ``piper:PACKAGE_OR_PATH``: a Piper voice in onnxruntime (``PiperVoice.synthesize``, text in,
  audio out, sentence by sentence as Piper streams);
- ``espeak-ng``: the espeak-ng program (formant synthesis), ``-w`` to a wav.

Every engine runs in a worker process (``python -m edgewise.bench.tts``) that loads once and then
answers one JSON line per sentence: it writes the wav and reports the wall time of the whole
pipeline (text in, waveform out: front-end and vocoder included) and the time to its first audio
chunk. The parent sends sentence i to every engine before sentence i+1 to any, so a busy moment
of the machine falls on all of them alike. At the end each worker reports its peak RSS. Threads:
onnxruntime intra-op ``threads`` for edgewise and Piper; no torch anywhere.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class EngineRun:
    spec: str
    label: str
    load_s: float = 0.0
    peak_rss_mb: float | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    size_bytes: int | None = None
    threads: dict[str, Any] = field(default_factory=dict)


class _Worker:
    def __init__(self, spec: str, label: str, outdir: Path, threads: int) -> None:
        outdir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edgewise.bench.tts", spec, str(outdir), str(threads)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        self.run = EngineRun(spec, label)
        ready = self._read()
        self.run.load_s = ready["load_s"]
        self.run.size_bytes = ready.get("size_bytes")
        self.run.threads = ready.get("threads", {})

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.run.spec}: the worker exited (code {self.proc.wait()})")
        message = json.loads(line)
        if "error" in message:
            raise RuntimeError(f"{self.run.spec}: {message['error']}")
        return message

    def say(self, uid: str, text: str) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps({"id": uid, "text": text}) + "\n")
        self.proc.stdin.flush()
        row = self._read()
        self.run.rows.append(row)
        return row

    def close(self) -> EngineRun:
        self.proc.stdin.close()
        final = self._read()
        self.run.peak_rss_mb = final.get("peak_rss_mb")
        self.proc.wait(timeout=30)
        return self.run


def run_interleaved(
    engines: dict[str, str], sentences: list[tuple[str, str]], outdir: Path, threads: int = 2, rounds: int = 1
) -> dict[str, EngineRun]:
    """``engines``: label -> spec; ``sentences``: (id, text). Wavs go to OUTDIR/LABEL/ID.wav."""
    workers = {label: _Worker(spec, label, outdir / label, threads) for label, spec in engines.items()}
    try:
        for r in range(rounds):
            order = list(workers)
            for i, (uid, text) in enumerate(sentences):
                # rotate who goes first, so no engine always follows the same neighbour
                for label in order[i % len(order) :] + order[: i % len(order)]:
                    workers[label].say(uid if rounds == 1 else f"{uid}-r{r}", text)
    finally:
        runs = {}
        for label, worker in workers.items():
            try:
                runs[label] = worker.close()
            except Exception:
                worker.proc.kill()
                raise
    return runs


# -- the worker -----------------------------------------------------------------------------


def _edgewise_engine(target: str, threads: int):
    """The bundle's graphs of one voice (``fp32``, ``int8``, ``tflite-fp32``, ``tflite-int8``),
    opened directly (a benchmark measures every artifact, also one that failed its gate at export;
    the row reports the gate), else the profile's pick."""
    from edgewise.bundle import load_bundle
    from edgewise.devices import RuntimeChoice, load_profile
    from edgewise.edge.pipelines.tts import TTSPipeline, TTSSettings, open_phonemizer, voice_artifacts
    from edgewise.edge.runtime import open_backend

    parts = target.split(":")
    bundle = load_bundle(parts[0])
    steps = int(parts[2]) if len(parts) > 2 else None
    if len(parts) > 1 and parts[1]:
        arts = voice_artifacts(bundle, parts[1])  # a role the voice lacks: by voice_sources
        settings = TTSSettings.from_manifest(bundle.manifest.preprocessing, str(bundle.root))
        backends = {
            r: open_backend(
                bundle, a, RuntimeChoice(format=a.format, precision=a.precision), threads, single_io=False
            )
            for r, a in arts.items()
        }
        pipe = TTSPipeline(backends, settings, open_phonemizer(settings.phonemizer, settings.voice))
    else:
        pipe = TTSPipeline.from_bundle(bundle, load_profile("x86-local"), threads=threads)
        arts = {role: rt.artifact for role, rt in pipe.runtimes.items()}
    size = sum(a.size_bytes for a in arts.values())
    gate = {role: a.parity.get("passed") for role, a in arts.items()}

    def say(text: str):
        timings: dict[str, float] = {}
        chunks = list(pipe.stream(text, timings=timings, steps=steps))
        return np.concatenate(chunks), pipe.sample_rate, timings.get("first_audio", timings["total"])

    return say, size, {"onnxruntime_intra_op": threads, "torch": 0, "export_gate_passed": gate}


def _piper_engine(target: str, threads: int):
    from edgewise.cloud.data.tts_corpus import PiperTeacher, resolve_teacher

    spec = resolve_teacher(f"piper:{target}")
    teacher = PiperTeacher(spec, threads=threads, alignments=False)

    def say(text: str):
        t0 = time.perf_counter()
        first = None
        chunks = []
        for chunk in teacher.voice.synthesize(text):
            if first is None:
                first = time.perf_counter() - t0
            chunks.append(chunk.audio_float_array)
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        return audio, teacher.sample_rate, first if first is not None else time.perf_counter() - t0

    return say, spec.model.stat().st_size, {"onnxruntime_intra_op": threads, "torch": 0}


def _espeak_engine(target: str, threads: int):
    import shutil
    import tempfile

    import soundfile as sf

    program = shutil.which("espeak-ng")
    if program is None:
        raise RuntimeError("espeak-ng is not installed")
    tmp = Path(tempfile.mkdtemp(prefix="espeak-bench-"))

    def say(text: str):
        t0 = time.perf_counter()
        out = tmp / "x.wav"
        subprocess.run([program, "-v", "en-us", "-w", str(out), text], check=True, capture_output=True)
        audio, sr = sf.read(out, dtype="float32")
        return audio, sr, time.perf_counter() - t0

    return say, None, {"threads": 1}


ENGINES = {"edgewise": _edgewise_engine, "piper": _piper_engine, "espeak-ng": _espeak_engine}


def worker_main(argv: list[str]) -> int:
    import soundfile as sf

    spec, outdir, threads = argv[0], Path(argv[1]), int(argv[2])
    kind, _, target = spec.partition(":")
    t0 = time.perf_counter()
    try:
        say, size, thread_info = ENGINES[kind](target, threads)
        say("Warm up.")  # first-call costs (allocations, kernel selection) are not a sentence's
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(
        json.dumps({"load_s": time.perf_counter() - t0, "size_bytes": size, "threads": thread_info}),
        flush=True,
    )
    for line in sys.stdin:
        request = json.loads(line)
        t = time.perf_counter()
        audio, sr, first = say(request["text"])
        total = time.perf_counter() - t
        path = outdir / f"{request['id']}.wav"
        sf.write(path, np.clip(audio, -1, 1), sr, subtype="PCM_16")
        seconds = audio.shape[0] / sr
        print(json.dumps({"id": request["id"], "path": str(path), "audio_s": seconds, "total_s": total,
                          "first_audio_s": first, "rtf": total / max(seconds, 1e-9)}), flush=True)  # fmt: skip
    print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))


def bench_bundle(
    bundle: Path, out: Path, *, threads: int, sentences: int = 12, rounds: int = 5, seed: int = 0
) -> dict[str, Any]:
    """``edgewise bench`` for a tts bundle: each voice it ships (format and precision), interleaved,
    on seeded sentences.

    Writes OUT/bench.json and OUT/bench.md: per voice the real-time factor (median), the time
    to first audio of a 20-word sentence (median of ``rounds``), load time, peak RSS and size."""
    from edgewise.bundle import load_bundle
    from edgewise.cloud.data.tts_text import generate_sentences
    from edgewise.fsutil import write_text_atomic
    from edgewise.textnorm import normalize

    with load_bundle(bundle) as b:
        voices = voices_in(b)
        name = f"{b.manifest.name}-{b.manifest.version}"
    engines = {f"{name} {v}": f"edgewise:{bundle}:{v}" for v in voices}
    texts = [(f"s{i}", normalize(t).text) for i, (_, t) in enumerate(generate_sentences(sentences, seed))]
    work = out / "wavs"
    runs = run_interleaved(engines, texts, work, threads=threads)
    first = run_interleaved(
        engines, [("twenty", TWENTY_WORDS)], work / "first", threads=threads, rounds=rounds
    )
    rows = {}
    for label, run in runs.items():
        rows[label] = {
            "rtf_median": float(np.median([r["rtf"] for r in run.rows])),
            "first_audio_20_words_s": float(np.median([r["first_audio_s"] for r in first[label].rows])),
            "load_s": run.load_s,
            "peak_rss_mb": max(run.peak_rss_mb or 0, first[label].peak_rss_mb or 0),
            "size_bytes": run.size_bytes,
            "threads": run.threads,
        }
    report = {
        "bundle": str(bundle),
        "task": "tts",
        "sentences": len(texts),
        "rounds": rounds,
        "threads": threads,
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "bench.json", json.dumps(report, indent=2) + "\n")
    lines = [f"# {name} on this machine ({threads} onnxruntime threads, no torch)", "",
             "| artifacts | RTF (median) | first audio, 20 words | load | peak RSS | size |", "|---|---|---|---|---|---|"]  # fmt: skip
    for label, r in rows.items():
        lines.append(
            f"| {label} | {r['rtf_median']:.3f} | {r['first_audio_20_words_s'] * 1000:.0f} ms | {r['load_s']:.2f} s "
            f"| {r['peak_rss_mb']:.0f} MB | {r['size_bytes'] / 2**20:.1f} MB |"
        )
    write_text_atomic(out / "bench.md", "\n".join(lines) + "\n")
    return report


def voices_in(bundle: Any) -> list[str]:
    """The voices a tts bundle ships, as :func:`~edgewise.edge.pipelines.tts.voice_artifacts`
    names them: ``fp32``, ``int8`` (ONNX), ``tflite-fp32``, ``tflite-int8``."""
    from edgewise.edge.pipelines.tts import ROLES, voice_artifacts, voice_key
    from edgewise.errors import ConfigError

    kinds = {(a.format, a.precision) for role in ROLES for a in bundle.artifacts(role)}
    voices = []
    for fmt, precision in sorted(kinds, key=lambda k: (k[0] != "onnx", k)):
        try:  # the encoder's ONNX fp32 alone is not an fp32 voice (an int8-only or TFLite-only export)
            voice_artifacts(bundle, voice_key(fmt, precision))
        except ConfigError:
            continue
        voices.append(voice_key(fmt, precision))
    return voices


TWENTY_WORDS = (
    "When the morning train finally arrived at the old station, Anna picked up her heavy bag and "
    "walked slowly home."
)
