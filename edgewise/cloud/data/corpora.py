"""Loaders for published emotional-speech corpora in their distributed layouts.

Each maps its emotions onto edgewise's four classes (:data:`~edgewise.cloud.data.corpus.EMOTIONS`),
drops the others, and splits by speaker, deterministically, so ``edgewise train ser --data PATH``
works the same on RAVDESS, CREMA-D or IEMOCAP as on a synthesized corpus. Audio is not decoded
here (the trainer's ``load_audio`` checks every file); names and label files are checked strictly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from edgewise.cloud.data.corpus import EMOTIONS, Corpus, Layout, Utterance, check_speakers_disjoint
from edgewise.errors import DataError

# --- RAVDESS: Actor_XX/MM-VC-EE-II-SS-RR-AA.wav -----------------------------------------------

RAVDESS_EMOTIONS = {"01": "neutral", "03": "happy", "04": "sad", "05": "angry"}  # calm, fear, ... dropped
RAVDESS_STATEMENTS = {"01": "Kids are talking by the door.", "02": "Dogs are sitting by the door."}
RAVDESS_SPEECH = "01"  # vocal channel; 02 is song
# 24 actors, odd male and even female: 1-16 train, 17-20 val, 21-24 test (each split gender-balanced).
RAVDESS_VAL_FROM, RAVDESS_TEST_FROM = 17, 21
_RAVDESS_DIR = re.compile(r"Actor_(\d\d)")
_RAVDESS_NAME = re.compile(r"(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.wav")


def is_ravdess(root: Path) -> bool:
    return any(p.is_dir() and _RAVDESS_DIR.fullmatch(p.name) for p in root.iterdir())


def ravdess_split(actor: int) -> str:
    if actor >= RAVDESS_TEST_FROM:
        return "test"
    return "val" if actor >= RAVDESS_VAL_FROM else "train"


def load_ravdess(root: Path) -> Corpus:
    """RAVDESS speech files: emotion 01/03/04/05 -> neutral/happy/sad/angry; speaker = actor."""
    utterances = []
    actor_dirs = sorted(p for p in root.iterdir() if p.is_dir() and _RAVDESS_DIR.fullmatch(p.name))
    if not actor_dirs:
        raise DataError(
            f"{root}: no Actor_XX folders; expected the RAVDESS layout Actor_01/03-01-05-01-02-01-01.wav"
        )
    for actor_dir in actor_dirs:
        for wav in sorted(actor_dir.glob("*.wav")):
            match = _RAVDESS_NAME.fullmatch(wav.name)
            if not match:
                raise DataError(
                    f"{wav}: not a RAVDESS file name; expected MM-VC-EE-II-SS-RR-AA.wav "
                    "(seven two-digit fields, e.g. 03-01-05-01-02-01-12.wav)"
                )
            _, channel, emotion, _, statement, _, actor = match.groups()
            if actor != actor_dir.name[-2:]:
                raise DataError(f"{wav}: file name says actor {actor}, but it lies in {actor_dir.name}")
            label = RAVDESS_EMOTIONS.get(emotion)
            if channel != RAVDESS_SPEECH or label is None:
                continue
            utterances.append(
                Utterance(
                    path=wav,
                    label=label,
                    speaker=f"Actor_{actor}",
                    split=ravdess_split(int(actor)),
                    text=RAVDESS_STATEMENTS.get(statement, ""),
                )
            )
    return _corpus(root, utterances, "ravdess")


# --- CREMA-D: AudioWAV/SPKR_SEN_EMO_LV.wav ----------------------------------------------------

CREMAD_EMOTIONS = {"NEU": "neutral", "HAP": "happy", "SAD": "sad", "ANG": "angry"}  # DIS, FEA dropped
CREMAD_SENTENCES = {
    "IEO": "It's eleven o'clock.",
    "TIE": "That is exactly what happened.",
    "IOM": "I'm on my way to the meeting.",
    "IWW": "I wonder what this is about.",
    "TAI": "The airplane is almost full.",
    "MTI": "Maybe tomorrow it will be cold.",
    "IWL": "I would like a new alarm clock.",
    "ITH": "I think I have a doctor's appointment.",
    "DFA": "Don't forget a jacket.",
    "ITS": "I think I've seen this before.",
    "TSI": "The surface is slick.",
    "WSI": "We'll stop in a couple of minutes.",
}
CREMAD_HELDOUT_FRACTION = 0.15  # of the speakers, for val and again for test
_CREMAD_NAME = re.compile(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})\.wav")


def _cremad_audio_dir(root: Path) -> Path:
    return root / "AudioWAV" if (root / "AudioWAV").is_dir() else root


def is_cremad(root: Path) -> bool:
    audio_dir = _cremad_audio_dir(root)
    return any(_CREMAD_NAME.fullmatch(p.name) for p in audio_dir.glob("*.wav"))


def cremad_splits(speakers: Iterable[str]) -> dict[str, str]:
    """Speaker -> split by sorted id: the last 15% test, the 15% before them val, the rest train.

    For CREMA-D's 91 actors (1001-1091): 1001-1063 train, 1064-1077 val, 1078-1091 test.
    """
    ordered = sorted(set(speakers))
    if len(ordered) < 3:
        raise DataError(
            f"CREMA-D: need at least 3 speakers for speaker-disjoint splits, found {len(ordered)}"
        )
    held = max(1, round(len(ordered) * CREMAD_HELDOUT_FRACTION))
    n_train = len(ordered) - 2 * held
    return {
        spk: "train" if i < n_train else "val" if i < n_train + held else "test"
        for i, spk in enumerate(ordered)
    }


def load_cremad(root: Path) -> Corpus:
    """CREMA-D: NEU/HAP/SAD/ANG -> neutral/happy/sad/angry; speaker = the 4-digit actor id."""
    audio_dir = _cremad_audio_dir(root)
    rows = []
    for wav in sorted(audio_dir.glob("*.wav")):
        match = _CREMAD_NAME.fullmatch(wav.name)
        if not match:
            raise DataError(
                f"{wav}: not a CREMA-D file name; expected SPEAKER_SENTENCE_EMOTION_LEVEL.wav "
                "(e.g. 1001_DFA_ANG_XX.wav)"
            )
        speaker, sentence, emotion, _ = match.groups()
        if emotion in CREMAD_EMOTIONS:
            rows.append((wav, CREMAD_EMOTIONS[emotion], speaker, CREMAD_SENTENCES.get(sentence, "")))
    if not rows:
        raise DataError(f"{audio_dir}: no CREMA-D files with a neutral, happy, sad or angry label")
    split_of = cremad_splits(spk for _, _, spk, _ in rows)
    utterances = [Utterance(wav, label, spk, split_of[spk], text) for wav, label, spk, text in rows]
    return _corpus(root, utterances, "cremad")


# --- IEMOCAP: Session{n}/sentences/wav/<dialog>/<utt>.wav + dialog/EmoEvaluation/<dialog>.txt --

IEMOCAP_EMOTIONS = {"neu": "neutral", "hap": "happy", "exc": "happy", "sad": "sad", "ang": "angry"}
IEMOCAP_TEST_SESSION, IEMOCAP_VAL_SESSION = 5, 4
_IEMOCAP_SESSION = re.compile(r"Session(\d+)")
_IEMOCAP_EVAL = re.compile(
    r"\[\s*\d+(?:\.\d+)?\s*-\s*\d+(?:\.\d+)?\s*\]\s+"  # [START - END]
    r"(Ses\d\d[FM]_\S+_([FM])\d+)\s+"  # utterance; its last segment's letter is the speaker's gender
    r"([a-z]{3})\s+"  # emotion code
    r"\[[^\]]*\]\s*"  # [V, A, D]
)
_IEMOCAP_TRANSCRIPT = re.compile(r"(\S+) \[[^\]]*\]:\s*(.*)")


def _iemocap_sessions(root: Path) -> list[tuple[int, Path]]:
    found = []
    for p in root.iterdir():
        match = _IEMOCAP_SESSION.fullmatch(p.name)
        if match and p.is_dir():
            found.append((int(match.group(1)), p))
    return sorted(found)


def is_iemocap(root: Path) -> bool:
    return any((p / "dialog" / "EmoEvaluation").is_dir() for _, p in _iemocap_sessions(root))


def load_iemocap(
    root: Path, *, test_session: int = IEMOCAP_TEST_SESSION, val_session: int | None = IEMOCAP_VAL_SESSION
) -> Corpus:
    """IEMOCAP: neu, hap+exc, sad, ang -> neutral, happy, sad, angry; speaker = session + gender.

    By default Session5 is test, Session4 val and the rest train; pass another ``test_session``
    (and ``val_session``, or None for no val split) for leave-one-session-out runs.
    """
    sessions = _iemocap_sessions(root)
    if not sessions:
        raise DataError(f"{root}: no Session1..5 folders; expected the IEMOCAP layout")
    if val_session is not None and val_session == test_session:
        raise DataError(f"IEMOCAP: val_session and test_session are both {test_session}")
    utterances = []
    for number, session_dir in sessions:
        split = "test" if number == test_session else "val" if number == val_session else "train"
        eval_dir = session_dir / "dialog" / "EmoEvaluation"
        for label_file in sorted(eval_dir.glob("*.txt")):
            if not label_file.name.startswith("._"):  # macOS resource forks
                utterances.extend(_iemocap_dialog(label_file, session_dir, number, split))
    return _corpus(root, utterances, "iemocap")


def _iemocap_dialog(label_file: Path, session_dir: Path, session: int, split: str) -> list[Utterance]:
    dialog = label_file.stem
    wav_dir = session_dir / "sentences" / "wav" / dialog
    texts = _iemocap_transcripts(session_dir / "dialog" / "transcriptions" / f"{dialog}.txt")
    out = []
    lines = label_file.read_text(encoding="utf-8", errors="replace").splitlines()
    for line_no, line in enumerate(lines, start=1):
        if not line.startswith("["):
            continue  # header, blank lines and the per-evaluator lines
        match = _IEMOCAP_EVAL.fullmatch(line)
        if not match:
            raise DataError(
                f"{label_file} line {line_no}: not an IEMOCAP evaluation line; expected "
                f"'[START - END]<TAB>UTTERANCE<TAB>EMOTION<TAB>[V, A, D]', got {line!r}"
            )
        name, gender, emotion = match.groups()
        label = IEMOCAP_EMOTIONS.get(emotion)
        if label is None:
            continue
        wav = wav_dir / f"{name}.wav"
        if not wav.is_file():
            raise DataError(f"{label_file} line {line_no}: audio for {name} not found (looked for {wav})")
        out.append(Utterance(wav, label, f"Ses{session:02d}{gender}", split, texts.get(name, "")))
    return out


def _iemocap_transcripts(path: Path) -> dict[str, str]:
    """Utterance -> words from a transcription file, if there is one (lines that do not parse are skipped)."""
    if not path.is_file():
        return {}
    texts = {}
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _IEMOCAP_TRANSCRIPT.fullmatch(line.strip())
        if match:
            texts[match.group(1)] = match.group(2)
    return texts


# --- shared -----------------------------------------------------------------------------------


def _corpus(root: Path, utterances: list[Utterance], source: str) -> Corpus:
    if not utterances:
        raise DataError(f"{root}: no {source} utterances with a neutral, happy, sad or angry label")
    check_speakers_disjoint(utterances, root)
    return Corpus(root=root, labels=EMOTIONS, utterances=utterances, source=source)


LAYOUTS = (
    Layout(
        "ravdess",
        "DIR/Actor_01 .. Actor_24/03-01-EE-II-SS-RR-AA.wav (RAVDESS speech)",
        is_ravdess,
        load_ravdess,
    ),
    Layout(
        "cremad",
        "DIR/AudioWAV/1001_DFA_ANG_XX.wav, or DIR holding those files (CREMA-D)",
        is_cremad,
        load_cremad,
    ),
    Layout(
        "iemocap",
        "DIR/Session1..5/sentences/wav/<dialog>/<utt>.wav with DIR/Session*/dialog/EmoEvaluation/<dialog>.txt",
        is_iemocap,
        load_iemocap,
    ),
)
