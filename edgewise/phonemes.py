"""Phonemes and phoneme ids for the TTS voices (torch-free: the device runs it).

The edgewise voice reads the same espeak-ng IPA symbols, and the same symbol-to-id table, as the
Piper voice it is distilled from, so its front-end matches the teacher's. Two backends:

- ``piper``: espeak-ng through ``piper-tts``'s bridge (the teacher's own build and clause
  splitting: identical phonemes). Installed by the ``tts`` extra; it has aarch64 wheels.
  piper-tts is GPL-3.0-or-later and links espeak-ng: edgewise only imports it when present.
- ``espeak-ng``: the system ``espeak-ng`` program (``apt install espeak-ng``), one process per
  call; edgewise splits clauses itself. Debian's 1.51 differs from Piper's build on a few symbols
  (e.g. a palatalised ``ʲ``), which the voice mostly tolerates; prefer ``piper`` where it installs.

Ids follow Piper's layout: ``^`` (BOS), then each symbol followed by the pad ``_``, then ``$`` (EOS).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from edgewise.errors import ConfigError, DataError

BOS, EOS, PAD = "^", "$", "_"
CLAUSE_TERMINATORS = ",.?!:;"
BACKENDS = ("piper", "espeak-ng")
# The last clause's terminator is the sentence type the intonation follows.
QUESTION, STATEMENT, EXCLAMATION = "?", ".", "!"


@dataclass(frozen=True)
class Clause:
    phonemes: str  # IPA for the clause, words separated by spaces
    terminator: str  # one of CLAUSE_TERMINATORS, or "" when the text had none
    end_of_sentence: bool


class Phonemizer:
    """Text (already normalised) to clauses of IPA, one backend per instance; thread-safe."""

    def __init__(self, backend: str = "piper", voice: str = "en-us") -> None:
        if backend not in BACKENDS:
            raise ConfigError(
                f"phonemizer: unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}"
            )
        self.backend, self.voice = backend, voice
        self._lock = threading.Lock()
        if backend == "piper":
            try:
                from piper import espeakbridge
                from piper.phonemize_espeak import ESPEAK_DATA_DIR
            except ImportError:
                raise ConfigError(
                    "phonemizer 'piper' needs the piper-tts package (pip install 'edgewise[tts]'); "
                    "or use the system espeak-ng (apt install espeak-ng) with phonemizer 'espeak-ng'"
                ) from None
            espeakbridge.initialize(str(ESPEAK_DATA_DIR))
            self._bridge = espeakbridge
        else:
            self._program = shutil.which("espeak-ng")
            if self._program is None:
                raise ConfigError(
                    "phonemizer 'espeak-ng' needs the espeak-ng program (apt install espeak-ng), "
                    "or install piper-tts for phonemizer 'piper'"
                )

    def clauses(self, text: str) -> list[Clause]:
        if not text.strip():
            return []
        if self.backend == "piper":
            with self._lock:
                self._bridge.set_voice(self.voice)
                raw = self._bridge.get_phonemes(text)
            return [Clause(re.sub(r"\([^)]+\)", "", p), t, bool(end)) for p, t, end in raw]
        return self._espeak_clauses(text)

    def _espeak_clauses(self, text: str) -> list[Clause]:
        parts = re.split(r"([,.?!:;]+)", text)
        pieces = [
            (parts[i].strip(), (parts[i + 1][-1] if i + 1 < len(parts) else ""))
            for i in range(0, len(parts), 2)
        ]
        pieces = [(t, term) for t, term in pieces if t]
        if not pieces:
            return []
        proc = subprocess.run(
            [self._program, "-q", "--ipa", "-v", self.voice, "--stdin"],
            input="\n".join(t for t, _ in pieces) + "\n",
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise DataError(f"espeak-ng failed (exit {proc.returncode}): {proc.stderr.strip()[:200]}")
        lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
        if len(lines) != len(pieces):  # espeak-ng merged or split lines: fall back to one call per clause
            lines = []
            for piece, _ in pieces:
                out = subprocess.run(
                    [self._program, "-q", "--ipa", "-v", self.voice, piece],
                    capture_output=True, text=True, timeout=60, check=False,
                )  # fmt: skip
                lines.append(" ".join(out.stdout.split()))
        return [
            Clause(re.sub(r"\([^)]+\)", "", ph), term, term in ".?!" or i == len(pieces) - 1)
            for i, (ph, (_, term)) in enumerate(zip(lines, pieces))
        ]

    def sentences(self, text: str) -> list[list[str]]:
        """Symbols per sentence, punctuation kept (Piper's convention: a space after , : ;)."""
        out: list[list[str]] = []
        current: list[str] = []
        for clause in self.clauses(text):
            chunk = clause.phonemes + clause.terminator
            if clause.terminator and clause.terminator in ",:;":  # ("" is in every string)
                chunk += " "
            current.extend(unicodedata.normalize("NFD", chunk))
            if clause.end_of_sentence:
                out.append(current)
                current = []
        if current:
            out.append(current)
        return out


class PhonemeIds:
    """Symbols to ids with a voice's table (Piper's ``phoneme_id_map``: symbol -> [id])."""

    def __init__(self, id_map: Mapping[str, Sequence[int]]) -> None:
        for key in (BOS, EOS, PAD):
            if key not in id_map:
                raise ConfigError(f"phoneme id map has no {key!r} entry")
        self.id_map = {k: list(v) for k, v in id_map.items()}
        self.n_symbols = 1 + max(i for ids in self.id_map.values() for i in ids)
        self.pad = self.id_map[PAD][0]
        self._symbol_of = {v[0]: k for k, v in self.id_map.items()}
        self.space = self.id_map.get(" ", [None])[0]
        self.terminators = {self.id_map[t][0]: t for t in CLAUSE_TERMINATORS if t in self.id_map}

    def ids(self, symbols: Sequence[str]) -> tuple[list[int], list[str]]:
        """Ids for one sentence and the symbols the table does not know (skipped, reported)."""
        out = list(self.id_map[BOS]) + [self.pad]
        unknown: list[str] = []
        for sym in symbols:
            if sym not in self.id_map:
                unknown.append(sym)
                continue
            out.extend(self.id_map[sym])
            out.append(self.pad)
        out.extend(self.id_map[EOS])
        return out, unknown

    def symbols(self, ids: Sequence[int]) -> list[str]:
        """The symbols whose :meth:`ids` are ``ids`` (BOS, pad, then one symbol and a pad each, EOS)."""
        return [self._symbol_of[int(i)] for i in list(ids)[2:-1:2]]


def sentence_type(symbols: Sequence[str]) -> str:
    """``?``, ``!`` or ``.``: the last terminator in a sentence's symbols (statements when none)."""
    for sym in reversed(symbols):
        if sym in "?!.":
            return sym
        if not sym.isspace():
            break
    return STATEMENT


def default_id_map() -> dict[str, list[int]]:
    """Piper's standard espeak symbol table (the one its English voices use), for recorded corpora."""
    try:
        from piper.phoneme_ids import DEFAULT_PHONEME_ID_MAP
    except ImportError:
        raise ConfigError(
            "reading a recorded corpus needs piper-tts for its symbol table: pip install 'edgewise[tts]'"
        ) from None
    return {k: list(v) for k, v in DEFAULT_PHONEME_ID_MAP.items()}


def boundary_positions(ids: np.ndarray, table: PhonemeIds) -> np.ndarray:
    """Positions of word boundaries (space or punctuation ids) in a Piper id sequence."""
    marks = {table.space, *table.terminators}
    return np.flatnonzero(np.isin(ids, [m for m in marks if m is not None]))


def last_word_mask(ids: np.ndarray, table: PhonemeIds) -> np.ndarray:
    """1.0 over the ids of the sentence's last word: from after the boundary before its last
    symbol up to the boundary (terminator or space) after it; trailing boundaries (a clause's
    ", ") do not count as a word."""
    ids = np.asarray(ids)
    mask = np.zeros(len(ids), dtype=np.float32)
    bounds = boundary_positions(ids, table)
    special = {table.pad, *table.id_map[BOS], *table.id_map[EOS]}
    content = np.flatnonzero(~np.isin(ids, list(special)))
    content = content[~np.isin(content, bounds)]
    if content.size == 0:
        return mask
    last = content[-1]
    after, before = bounds[bounds > last], bounds[bounds < last]
    end = after[0] if after.size else len(ids) - 1
    start = before[-1] + 1 if before.size else 1
    mask[start:end] = 1.0
    return mask


def boundary_mask(ids: np.ndarray, table: PhonemeIds) -> np.ndarray:
    """1.0 at word boundaries (where the phrase-break encoder decides), else 0.0."""
    mask = np.zeros(len(ids), dtype=np.float32)
    mask[boundary_positions(ids, table)] = 1.0
    return mask
