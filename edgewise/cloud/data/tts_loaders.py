"""Readers for recorded TTS corpora in their published layouts, as :class:`TTSCorpus` rows.

- **LJSpeech**: ``DIR/metadata.csv`` (``id|text|normalized text``, no header) and ``DIR/wavs/ID.wav``.
- **VCTK**: ``DIR/txt/pNNN/pNNN_MMM.txt`` and ``DIR/wav48*/pNNN/pNNN_MMM{,_mic1}.{wav,flac}``.

Rows carry the text, its normalised form, phonemes and ids; durations are unknown (``None``), so
training aligns them with monotonic alignment search. Splits are by sentence, seeded by the id.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from pathlib import Path

from edgewise.errors import DataError

AUDIO_SUFFIXES = (".wav", ".flac")


def detect(root: Path) -> str:
    if (root / "corpus.json").is_file():
        return "edgewise"
    if (root / "metadata.csv").is_file() and (root / "wavs").is_dir():
        return "ljspeech"
    if (root / "txt").is_dir() and any(p.is_dir() for p in root.glob("wav48*")):
        return "vctk"
    raise DataError(
        f"{root}: not a TTS corpus edgewise reads: expected corpus.json (edgewise), "
        "metadata.csv + wavs/ (LJSpeech) or txt/ + wav48*/ (VCTK)"
    )


def _split_of(uid: str, val: float = 0.05, test: float = 0.05) -> str:
    x = int(hashlib.sha256(uid.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if x < test else "val" if x < test + val else "train"


def _finish(root: Path, source: str, items: list[tuple[str, str, str, str]]):
    """items: (uid, relative audio path, text, speaker) -> a corpus with phonemes and ids."""
    from edgewise.cloud.data.tts_corpus import SAMPLE_RATE, SPLITS, TTSCorpus, TTSRow
    from edgewise.phonemes import PhonemeIds, Phonemizer, default_id_map, sentence_type
    from edgewise.textnorm import normalize

    if not items:
        raise DataError(f"{root}: no utterances found in the {source} layout")
    try:
        phonemizer = Phonemizer("piper")
    except Exception:
        phonemizer = Phonemizer("espeak-ng")
    id_map = default_id_map()
    table = PhonemeIds(id_map)
    rows: dict[str, list] = {s: [] for s in SPLITS}
    for uid, rel, text, speaker in items:
        norm = normalize(text).text
        symbols = [s for sentence in phonemizer.sentences(norm) for s in sentence]
        ids, _ = table.ids(symbols)
        row = TTSRow(id=uid, path=rel, text=text, normalized=norm, phonemes="".join(symbols), ids=ids,
                     durations=None, sentence_type=sentence_type(symbols), kind=source, speaker=speaker)  # fmt: skip
        rows[_split_of(uid)].append(row)
    meta = {"kind": "tts", "source": source, "sample_rate": SAMPLE_RATE, "phoneme_id_map": id_map,
            "phonemizer": {"backend": phonemizer.backend, "voice": "en-us"}}  # fmt: skip
    return TTSCorpus(root, meta, rows)


def load_ljspeech(root: Path):
    meta = root / "metadata.csv"
    items = []
    with open(meta, newline="", encoding="utf-8") as fh:
        for lineno, fields in enumerate(csv.reader(fh, delimiter="|", quoting=csv.QUOTE_NONE), 1):
            if not fields or not fields[0].strip():
                continue
            if len(fields) < 2:
                raise DataError(
                    f"{meta}:{lineno}: expected id|text[|normalized text], got {'|'.join(fields)!r}"
                )
            uid = fields[0].strip()
            text = (fields[2] if len(fields) > 2 and fields[2].strip() else fields[1]).strip()
            if not text:
                raise DataError(f"{meta}:{lineno}: {uid} has an empty transcript")
            rel = f"wavs/{uid}.wav"
            if not (root / rel).is_file():
                raise DataError(f"{meta}:{lineno}: audio file {rel} is missing")
            items.append((uid, rel, text, "ljspeech"))
    return _finish(root, "ljspeech", items)


def load_vctk(root: Path):
    items = []
    audio_dirs = sorted(p for p in root.glob("wav48*") if p.is_dir())
    for txt in sorted((root / "txt").glob("*/*.txt")):
        speaker, uid = txt.parent.name, txt.stem
        audio = None
        for folder in audio_dirs:
            for name in (uid, f"{uid}_mic1"):
                for suffix in AUDIO_SUFFIXES:
                    candidate = folder / speaker / f"{name}{suffix}"
                    if candidate.is_file():
                        audio = candidate
                        break
                if audio:
                    break
            if audio:
                break
        if audio is None:
            continue  # VCTK has transcripts without recordings (p315); they are skipped
        text = txt.read_text(encoding="utf-8", errors="replace").strip()
        if text:
            items.append((uid, str(audio.relative_to(root)), text, speaker))
    return _finish(root, "vctk", items)


LOADERS: dict[str, Callable] = {"ljspeech": load_ljspeech, "vctk": load_vctk}
