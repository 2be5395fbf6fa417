"""The linguistic view of the multi-view pseudo-labeller: what was said, not how it sounded.

Each utterance is transcribed by the offline recognizer pocketsphinx (:func:`transcribe_corpus`,
cached per utterance), and the transcripts are classified by a text classifier
(:func:`build_text_classifier`): TF-IDF and logistic regression by default, or an LLM behind an
OpenAI-compatible chat endpoint (for example one served by ``edgewise cloud serve``), or the user's
own class. :func:`text_embeddings` gives the transcripts' MiniLM sentence vectors for the bimodal
classifier, which joins them to the acoustic features.

What to expect from this view:

- On the project's synthesized corpus (``edgewise data speech``) every class speaks the same
  emotion-neutral sentences, so the words carry nothing about the label and this view is expected
  to be no better than chance there. That is fine: the pseudo-labeller weighs each view by its
  cross-validated accuracy on the labelled data, so an uninformative view gets a weight near zero
  instead of adding noise.
- On real corpora (acted or spontaneous speech) transcripts do carry lexical emotion cues ("I am
  so happy", swearing, "I'm sorry"), which the acoustic views miss; and pocketsphinx's errors are
  the same for labelled and unlabelled utterances, so the classifier learns through them.

Classifier specs (``build_text_classifier``):

- ``tfidf`` (the default): TF-IDF of word 1-2 grams and a multinomial logistic regression with
  balanced class weights (scikit-learn);
- ``chat:URL`` or ``chat:URL#MODEL``: an OpenAI-compatible chat endpoint (``URL`` is the server's
  base, the request goes to ``URL/v1/chat/completions``); the bearer token is read from
  ``EDGEWISE_TEXT_CLASSIFIER_TOKEN`` and a CA file from ``EDGEWISE_TEXT_CLASSIFIER_CA`` when they are
  set; plain http only to a loopback host. Without ``#MODEL`` the server's ``/v1/models`` must list
  exactly one chat model;
- ``python:MODULE:ATTR``: ``ATTR`` is a factory (no arguments) of an object with ``fit`` and
  ``predict_proba``.

``fit(texts, labels, classes)`` takes the labels as indices into ``classes`` (or as class names);
``predict_proba(texts)`` returns (n, len(classes)) float64 rows that sum to 1. Heavy imports
(scikit-learn, pocketsphinx, sentence-transformers) happen inside the functions that need them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgewise.errors import ConfigError, DataError, EdgewiseError, MissingDependencyError

log = logging.getLogger(__name__)

CACHE_NAME = "transcripts.json"
SAVE_EVERY_S = 30.0  # an interrupted run loses at most this much transcription
TOKEN_ENV = "EDGEWISE_TEXT_CLASSIFIER_TOKEN"
CA_ENV = "EDGEWISE_TEXT_CLASSIFIER_CA"
SPEC_FORMS = "'tfidf', 'chat:URL', 'chat:URL#MODEL' or 'python:MODULE:ATTR'"
FEW_SHOT_PER_CLASS = 3


# --------------------------------------------------------------------------------------------------
# transcripts


def _recognizer_fingerprint() -> dict[str, str]:
    """What identifies the transcripts: the recognizer and its version (a new one transcribes again)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return {"recognizer": "pocketsphinx", "version": version("pocketsphinx"), "search": "fast"}
    except PackageNotFoundError:  # not installed (or installed without its metadata)
        from edgewise.tts_eval import recognizer

        recognizer()  # raises MissingDependencyError with the pip command when it is missing
        return {"recognizer": "pocketsphinx", "version": "unknown", "search": "fast"}


def _load_transcripts(path: Path, fingerprint: dict[str, str]) -> dict[str, str]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        stored, transcripts = data["fingerprint"], data["transcripts"]
        if not isinstance(transcripts, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in transcripts.items()
        ):
            raise ValueError("'transcripts' is not an object of strings")
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a damaged cache is rebuilt, not trusted
        log.warning("%s: unreadable transcript cache (%s); transcribing again", path, exc)
        return {}
    if stored != fingerprint:
        log.info("%s: made by %s, now %s; transcribing again", path, stored, fingerprint)
        return {}
    return transcripts


def _save_transcripts(path: Path, store: dict[str, str], fingerprint: dict[str, str]) -> None:
    from edgewise.fsutil import write_text_atomic

    body = {"fingerprint": fingerprint, "transcripts": store}
    write_text_atomic(path, json.dumps(body, ensure_ascii=False, indent=0, sort_keys=True) + "\n")


def transcribe_corpus(paths: Sequence[Path], work: Path, *, progress: bool | None = None) -> list[str]:
    """Transcripts of the audio files from the offline pocketsphinx recognizer, in order.

    They are cached in ``work / "transcripts.json"``, keyed by
    :func:`edgewise.cloud.para.cache.utterance_key` (path, size, modification time: a regenerated
    file is transcribed again), with the recognizer's version as a fingerprint (another version
    transcribes everything again). The cache is saved atomically every :data:`SAVE_EVERY_S` seconds
    and at the end, also when the run is interrupted or a file cannot be read, so no work is lost.
    The recognizer is only loaded when something is not cached yet. A progress bar goes to stderr
    when it is a terminal (``progress=None``), always (True) or never (False).
    """
    from edgewise.audio import load_audio
    from edgewise.cloud.para.cache import utterance_key
    from edgewise.cloud.para.encoders import SAMPLE_RATE

    work = Path(work)
    cache = work / CACHE_NAME
    fingerprint = _recognizer_fingerprint()
    store = _load_transcripts(cache, fingerprint)
    try:
        keys = [utterance_key(Path(p)) for p in paths]
    except FileNotFoundError as exc:
        raise DataError(f"{exc.filename}: no such audio file") from None
    todo: dict[str, Path] = {}
    for key, p in zip(keys, paths):
        if key not in store and key not in todo:
            todo[key] = Path(p)
    if todo:
        from tqdm import tqdm

        from edgewise import tts_eval

        progress = sys.stderr.isatty() if progress is None else progress
        log.info("transcribing %d utterances (%d cached)", len(todo), len(set(keys)) - len(todo))
        decoder = tts_eval.recognizer(fast=True)
        saved, unsaved = time.monotonic(), 0
        try:
            with tqdm(
                total=len(todo), desc="transcripts", unit="utt", file=sys.stderr, disable=not progress
            ) as bar:
                for key, path in todo.items():
                    audio = load_audio(path, SAMPLE_RATE)
                    store[key] = tts_eval.transcribe(decoder, audio, SAMPLE_RATE).strip()
                    unsaved += 1
                    bar.update(1)
                    if time.monotonic() - saved > SAVE_EVERY_S:
                        _save_transcripts(cache, store, fingerprint)
                        saved, unsaved = time.monotonic(), 0
        finally:  # at the end, and on an error or Ctrl-C: keep what was done
            if unsaved:
                _save_transcripts(cache, store, fingerprint)
    return [store[k] for k in keys]


# --------------------------------------------------------------------------------------------------
# classifiers


class TextClassifier(Protocol):
    name: str

    def fit(self, texts: list[str], labels: np.ndarray, classes: tuple[str, ...]) -> None: ...

    def predict_proba(self, texts: list[str]) -> np.ndarray: ...  # (n, len(classes)), rows sum to 1


def _label_indices(labels: Any, classes: tuple[str, ...], n_texts: int) -> np.ndarray:
    """``labels`` as int64 indices into ``classes`` (given as indices or as class names)."""
    arr = np.asarray(labels)
    if arr.ndim != 1 or arr.size != n_texts:
        raise DataError(f"text classifier: {arr.size} labels for {n_texts} texts (expected one per text)")
    if not classes:
        raise DataError("text classifier: no classes")
    if arr.size and arr.dtype.kind in "US":
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted({str(x) for x in arr.tolist()} - set(index))
        if unknown:
            raise DataError(f"text classifier: labels {unknown} are not among the classes {list(classes)}")
        return np.array([index[str(x)] for x in arr.tolist()], dtype=np.int64)
    if arr.size and arr.dtype.kind not in "iu":
        raise DataError(f"text classifier: expected labels as class indices or names, got {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= len(classes)):
        raise DataError(f"text classifier: label indices must lie in 0..{len(classes) - 1}")
    return arr


def _uniform(n: int, k: int) -> np.ndarray:
    return np.full((n, k), 1.0 / k, dtype=np.float64)


class TfidfClassifier:
    """TF-IDF of word 1-2 grams, then a multinomial logistic regression with balanced class weights.

    No usable training text (all empty) or fewer than two classes among the labels: the classifier
    knows nothing and gives uniform rows. An empty text to predict gets a uniform row too. A class
    absent from the training labels gets probability 0."""

    name = "tfidf"

    def __init__(self, c: float = 4.0, max_iter: int = 2000) -> None:
        self.c, self.max_iter = c, max_iter
        self.classes: tuple[str, ...] = ()
        self._pipeline: Any = None
        self._columns: np.ndarray | None = None

    def fit(self, texts: list[str], labels: np.ndarray, classes: tuple[str, ...]) -> None:
        y = _label_indices(labels, classes, len(texts))
        self.classes, self._pipeline, self._columns = tuple(classes), None, None
        texts = [t.strip() if isinstance(t, str) else "" for t in texts]
        keep = np.array([bool(t) for t in texts], dtype=bool)
        if not keep.any() or np.unique(y[keep]).size < 2:
            log.info("tfidf: %d non-empty texts over %d classes; uniform rows", keep.sum(), np.unique(y).size)
            return
        try:
            from sklearn.feature_extraction.text import TfidfVectorizer
            from sklearn.linear_model import LogisticRegression
            from sklearn.pipeline import make_pipeline
        except ImportError:
            raise MissingDependencyError(
                "the tfidf text classifier needs scikit-learn: pip install scikit-learn"
            ) from None
        pipeline = make_pipeline(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b"),
            LogisticRegression(C=self.c, class_weight="balanced", max_iter=self.max_iter),
        )
        try:
            pipeline.fit([t for t, k in zip(texts, keep) if k], y[keep])
        except ValueError as exc:  # e.g. an empty vocabulary: nothing to learn from
            log.info("tfidf: nothing to learn from the texts (%s); uniform rows", exc)
            return
        self._pipeline, self._columns = pipeline, pipeline.classes_.astype(np.int64)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        if not self.classes:
            raise DataError("tfidf: predict_proba before fit")
        k = len(self.classes)
        out = _uniform(len(texts), k)
        if self._pipeline is None:
            return out
        texts = [t.strip() if isinstance(t, str) else "" for t in texts]
        rows = [i for i, t in enumerate(texts) if t]
        if rows:
            proba = np.zeros((len(rows), k), dtype=np.float64)
            proba[:, self._columns] = self._pipeline.predict_proba([texts[i] for i in rows])
            out[rows] = proba / proba.sum(axis=1, keepdims=True)
        return out


class ChatClassifier:
    """An LLM behind an OpenAI-compatible chat endpoint, asked once per text for one class name.

    ``fit`` keeps up to :data:`FEW_SHOT_PER_CLASS` non-empty labelled texts per class as few-shot
    examples. ``predict_proba`` gives a one-hot row for the first class name found in the reply
    (case-insensitive, whole words), and a uniform row for a reply that names no class (counted in
    ``unparsed``) or for an empty text (not sent; counted in ``empty``). Any failure to get a reply
    (network, TLS, HTTP status, timeout, malformed JSON) raises an EdgewiseError naming the URL."""

    def __init__(
        self,
        url: str,
        model: str | None = None,
        *,
        token: str | None = None,
        ca_file: Path | None = None,
        timeout_s: float = 60.0,
        max_tokens: int = 16,
    ) -> None:
        from edgewise.edge.offload.http_route import HttpRoute

        self.url, self.model, self.timeout_s, self.max_tokens = url.rstrip("/"), model, timeout_s, max_tokens
        self.name = f"chat:{self.url}" + (f"#{model}" if model else "")
        self._route = HttpRoute(self.url, token=token, ca_file=ca_file)
        self.classes: tuple[str, ...] = ()
        self.examples: list[tuple[str, str]] = []
        self.unparsed = 0
        self.empty = 0
        self.asked = 0

    def fit(self, texts: list[str], labels: np.ndarray, classes: tuple[str, ...]) -> None:
        y = _label_indices(labels, classes, len(texts))
        self.classes = tuple(classes)
        per_class: dict[int, int] = {}
        self.examples = []
        for text, label in zip(texts, y.tolist()):
            text = text.strip() if isinstance(text, str) else ""
            if text and per_class.get(label, 0) < FEW_SHOT_PER_CLASS:
                per_class[label] = per_class.get(label, 0) + 1
                self.examples.append((text, self.classes[label]))

    def messages(self, text: str) -> list[dict[str, str]]:
        """The prompt for one transcript: the task and the classes, the few-shot examples, the text."""
        names = ", ".join(self.classes)
        system = (
            "You label the emotion of a speaker from the transcript of what they said (an automatic "
            "transcript: it may contain recognition errors). Answer with exactly one of these class "
            f"names and nothing else: {names}."
        )
        messages = [{"role": "system", "content": system}]
        for example, label in self.examples:
            messages.append({"role": "user", "content": f"Transcript: {example}"})
            messages.append({"role": "assistant", "content": label})
        messages.append({"role": "user", "content": f"Transcript: {text}"})
        return messages

    def parse(self, reply: str) -> int | None:
        """The index of the first class name in ``reply`` (case-insensitive, whole words), else None."""
        best: tuple[int, int, int] | None = None  # (position, -length, class index)
        for i, name in enumerate(self.classes):
            match = re.search(rf"(?<!\w){re.escape(name)}(?!\w)", reply, flags=re.IGNORECASE)
            if match and (best is None or (match.start(), -len(name)) < best[:2]):
                best = (match.start(), -len(name), i)
        return None if best is None else best[2]

    def _model(self) -> str:
        """The model to ask: the one in the spec, else the server's only chat model."""
        if self.model:
            return self.model
        listing = self._route.request("GET", "/v1/models", self.timeout_s)
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list):
            raise EdgewiseError(f"{self.url}/v1/models: expected an OpenAI model list ({{'data': [...]}})")
        ids = [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
        chat = [m["id"] for m in data if isinstance(m, dict) and m.get("task") == "chat" and m.get("id")]
        candidates = chat or [i for i, m in zip(ids, data) if "task" not in m]
        if len(candidates) != 1:
            raise ConfigError(
                f"{self.url} serves {len(candidates)} chat models ({', '.join(candidates) or 'none'}; "
                f"all models: {', '.join(ids) or 'none'}): name one as chat:{self.url}#MODEL"
            )
        self.model = candidates[0]
        return self.model

    def ask(self, text: str) -> str:
        """The model's reply to the prompt for ``text``."""
        from edgewise.edge.offload.wire import CHAT_PATH, chat_request, check_chat_reply

        body = {**chat_request(self._model(), self.messages(text), self.max_tokens), "temperature": 0}
        reply = self._route.post(CHAT_PATH, body, self.timeout_s)
        self.asked += 1
        return check_chat_reply(reply, self.url + CHAT_PATH)["text"]

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        if not self.classes:
            raise DataError(f"{self.name}: predict_proba before fit")
        out = _uniform(len(texts), len(self.classes))
        for row, text in enumerate(texts):
            text = text.strip() if isinstance(text, str) else ""
            if not text:
                self.empty += 1
                continue
            reply = self.ask(text)
            label = self.parse(reply)
            if label is None:
                self.unparsed += 1
                log.debug("%s: no class in the reply %r", self.name, reply[:200])
                continue
            out[row] = 0.0
            out[row, label] = 1.0
        return out


class _UserClassifier:
    """The user's classifier (``python:MODULE:ATTR``), with its output checked and normalized."""

    def __init__(self, spec: str, inner: Any) -> None:
        self.name, self.inner = spec, inner
        self.classes: tuple[str, ...] = ()

    def fit(self, texts: list[str], labels: np.ndarray, classes: tuple[str, ...]) -> None:
        self.classes = tuple(classes)
        self.inner.fit(texts, labels, self.classes)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        proba = np.asarray(self.inner.predict_proba(texts), dtype=np.float64)
        shape = (len(texts), len(self.classes))
        if proba.shape != shape:
            raise EdgewiseError(f"{self.name}: predict_proba gave shape {proba.shape}, expected {shape}")
        if not np.isfinite(proba).all() or (proba < 0).any():
            raise EdgewiseError(f"{self.name}: predict_proba gave negative or non-finite probabilities")
        sums = proba.sum(axis=1, keepdims=True)
        return np.where(sums > 0, proba / np.where(sums > 0, sums, 1.0), 1.0 / max(1, shape[1]))


def _chat_classifier(spec: str) -> ChatClassifier:
    from edgewise.edge.offload.config import check_url

    url, _, model = spec[len("chat:") :].partition("#")
    try:
        url = check_url(url.strip())
    except ValueError as exc:
        raise ConfigError(f"text classifier {spec!r}: {exc}") from None
    token = os.environ.get(TOKEN_ENV) or None
    ca = os.environ.get(CA_ENV) or None
    if ca is not None and not Path(ca).expanduser().is_file():
        raise ConfigError(f"{CA_ENV}={ca}: no such CA file (for text classifier {spec!r})")
    if ca is not None and not url.startswith("https:"):
        log.warning("%s is set but %s is plain http: the CA file is not used", CA_ENV, url)
    return ChatClassifier(
        url, model.strip() or None, token=token, ca_file=Path(ca).expanduser() if ca else None
    )


def _python_classifier(spec: str) -> _UserClassifier:
    import importlib

    module_name, _, attr = spec[len("python:") :].rpartition(":")
    if not module_name or not attr:
        raise ConfigError(
            f"text classifier {spec!r}: expected python:MODULE:ATTR (e.g. python:mypkg.text:make)"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"text classifier {spec!r}: cannot import module {module_name!r} ({exc})") from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise ConfigError(f"text classifier {spec!r}: module {module_name!r} has no attribute {attr!r}")
    if not callable(factory):
        raise ConfigError(
            f"text classifier {spec!r}: {module_name}.{attr} is not callable (expected a factory)"
        )
    try:
        inner = factory()
    except Exception as exc:  # the user's code: say whose and what, not a traceback
        raise ConfigError(f"text classifier {spec!r}: {module_name}.{attr}() failed: {exc}") from None
    missing = [m for m in ("fit", "predict_proba") if not callable(getattr(inner, m, None))]
    if missing:
        raise ConfigError(
            f"text classifier {spec!r}: {module_name}.{attr}() returned a {type(inner).__name__} "
            f"without {' and '.join(missing)}"
        )
    return _UserClassifier(spec, inner)


def build_text_classifier(spec: str = "tfidf") -> TextClassifier:
    """A text classifier from its spec (see the module's docstring); ConfigError for a bad spec."""
    spec = spec.strip() if isinstance(spec, str) else spec
    if spec == "tfidf":
        return TfidfClassifier()
    if isinstance(spec, str) and spec.startswith("chat:"):
        return _chat_classifier(spec)
    if isinstance(spec, str) and spec.startswith("python:"):
        return _python_classifier(spec)
    raise ConfigError(f"unknown text classifier {spec!r}: expected {SPEC_FORMS}")


# --------------------------------------------------------------------------------------------------
# sentence vectors


def text_embeddings(texts: Sequence[str]) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence vectors (n, 384) float32 of the transcripts, unit length; an empty
    transcript gets zeros (no text, no direction). The project's one MiniLM loader:
    :func:`edgewise.cloud.rec.item_embeddings.text_embeddings`."""
    from edgewise.cloud.rec.item_embeddings import ItemEmbeddingConfig
    from edgewise.cloud.rec.item_embeddings import text_embeddings as minilm

    return minilm(list(texts), ItemEmbeddingConfig(missing="zero")).vectors
