"""The linguistic view: pocketsphinx transcripts of real espeak-ng speech (cached), the TF-IDF
classifier, the chat classifier against a real local HTTP server, the python: hook and the specs."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from edgewise import tts_eval
from edgewise.cloud.semisup import text_view
from edgewise.cloud.semisup.text_view import (
    build_text_classifier,
    text_embeddings,
    transcribe_corpus,
)
from edgewise.errors import ConfigError, EdgewiseError
from tests.conftest import missing_tool, require_module

CLASSES = ("angry", "happy", "sad")

# --------------------------------------------------------------------------------------------------
# transcripts of real speech

FUNCTION_WORDS = {"the", "and", "a", "to", "on", "was", "this"}
SPOKEN = ("the weather was bright and warm this morning", "nobody expected the train to arrive on time")


@pytest.fixture(scope="module")
def spoken_wavs(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        missing_tool("espeak-ng is not installed (apt-get install espeak-ng)")
    require_module("pocketsphinx", "pocketsphinx is not installed (the tts-eval extra)")
    folder = tmp_path_factory.mktemp("spoken")
    paths = []
    for i, text in enumerate(SPOKEN):
        path = folder / f"u{i}.wav"  # espeak-ng writes 22.05 kHz: the loader resamples it
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), text], check=True, capture_output=True)
        paths.append(path)
    return paths


def test_transcripts_of_real_speech_are_cached_and_reused(spoken_wavs, tmp_path, monkeypatch):
    work = tmp_path / "work"
    # the same file twice: transcribed once, returned at both places
    paths = [spoken_wavs[0], spoken_wavs[1], spoken_wavs[0]]
    first = transcribe_corpus(paths, work, progress=False)
    assert len(first) == 3 and first[0] == first[2]
    # pocketsphinx's fast search is weak on espeak-ng voices: the two transcripts differ, and at
    # least one content word of what was said comes through
    assert first[0] and first[1] and first[0] != first[1]
    heard = {w for text in first[:2] for w in text.lower().split()}
    assert heard & {w for spoken in SPOKEN for w in spoken.split()} - FUNCTION_WORDS, first
    cache = work / "transcripts.json"
    assert cache.is_file()
    stored = json.loads(cache.read_text())
    assert stored["fingerprint"]["recognizer"] == "pocketsphinx" and stored["fingerprint"]["version"]
    assert len(stored["transcripts"]) == 2

    def no_recognizer(fast=False):
        raise AssertionError("the recognizer was loaded although everything is cached")

    monkeypatch.setattr(tts_eval, "recognizer", no_recognizer)
    assert transcribe_corpus(paths, work, progress=False) == first

    # another recognizer version invalidates the cache: it would transcribe again
    monkeypatch.setattr(
        text_view, "_recognizer_fingerprint", lambda: {"recognizer": "pocketsphinx", "version": "0"}
    )
    with pytest.raises(AssertionError, match="the recognizer was loaded"):
        transcribe_corpus(paths, work, progress=False)


def test_transcripts_done_before_a_failure_are_kept(spoken_wavs, tmp_path, monkeypatch):
    work = tmp_path / "work"
    calls = []

    def fake_transcribe(decoder, audio, sr):
        calls.append(sr)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return "kept words"

    monkeypatch.setattr(tts_eval, "recognizer", lambda fast=False: object())
    monkeypatch.setattr(tts_eval, "transcribe", fake_transcribe)
    with pytest.raises(KeyboardInterrupt):
        transcribe_corpus(spoken_wavs, work, progress=False)
    assert calls == [16000, 16000]
    stored = json.loads((work / "transcripts.json").read_text())["transcripts"]
    assert list(stored.values()) == ["kept words"]


# --------------------------------------------------------------------------------------------------
# tfidf

TRAIN = [
    ("i am furious and angry at you", "angry"),
    ("this makes me so angry", "angry"),
    ("stop it i am furious", "angry"),
    ("what a happy wonderful day", "happy"),
    ("i am so happy and glad", "happy"),
    ("wonderful news i am glad", "happy"),
    ("i feel sad and lonely", "sad"),
    ("such a sad and gloomy night", "sad"),
    ("lonely and gloomy again", "sad"),
]


def test_tfidf_learns_which_words_predict_the_class():
    clf = build_text_classifier("tfidf")
    assert clf.name == "tfidf"
    texts, names = zip(*TRAIN)
    clf.fit(list(texts), np.array([CLASSES.index(n) for n in names]), CLASSES)
    held_out = ["he was furious", "a glad and wonderful evening", "gloomy and lonely", ""]
    proba = clf.predict_proba(held_out)
    assert proba.shape == (4, 3) and proba.dtype == np.float64
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert proba[:3].argmax(axis=1).tolist() == [0, 1, 2]
    assert np.allclose(proba[3], 1 / 3)  # no transcript: no information
    # class names as labels work the same
    clf.fit(list(texts), np.array(names), CLASSES)
    assert clf.predict_proba(held_out[:3]).argmax(axis=1).tolist() == [0, 1, 2]


def test_tfidf_with_only_empty_texts_gives_uniform_rows():
    clf = build_text_classifier("tfidf")
    clf.fit(["", "  ", ""], np.array([0, 1, 2]), CLASSES)
    proba = clf.predict_proba(["anything", ""])
    assert np.allclose(proba, 1 / 3)


# --------------------------------------------------------------------------------------------------
# chat: no LLM can run on this machine, so a real local HTTP server stands in for the one served by
# `edgewise cloud serve` (or vLLM): it answers OpenAI chat-completions JSON with canned replies.


class FakeLLM:
    def __init__(self, replies, status=200):
        self.replies, self.status, self.requests = list(replies), status, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output quiet
                pass

            def _send(self, status, body):
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def do_GET(self):
                outer.requests.append(("GET", self.path, dict(self.headers), None))
                models = [{"id": "ser-teacher", "task": "ser"}, {"id": "qwen-chat", "task": "chat"}]
                self._send(200, {"object": "list", "data": models})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(("POST", self.path, dict(self.headers), body))
                if outer.status != 200:
                    error = {"message": "the model crashed", "type": "server_error"}
                    self._send(outer.status, {"error": error})
                    return
                reply = outer.replies.pop(0)
                message = {"role": "assistant", "content": reply}
                self._send(200, {"model": body["model"], "choices": [{"message": message}]})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _fit_chat(spec):
    clf = build_text_classifier(spec)
    texts, names = zip(*TRAIN)
    clf.fit(list(texts), np.array([CLASSES.index(n) for n in names]), CLASSES)
    return clf


def test_chat_classifier_asks_the_server_and_parses_its_replies(monkeypatch):
    monkeypatch.setenv("EDGEWISE_TEXT_CLASSIFIER_TOKEN", "s3cret")
    monkeypatch.delenv("EDGEWISE_TEXT_CLASSIFIER_CA", raising=False)
    replies = ["Sad.", "The speaker sounds HAPPY, not angry", "I cannot tell"]
    with FakeLLM(replies) as llm:
        clf = _fit_chat(f"chat:{llm.url}#qwen-chat")
        proba = clf.predict_proba(["i lost everything", "what a day", "hmm", ""])
    assert proba.dtype == np.float64 and np.allclose(proba.sum(axis=1), 1.0)
    assert proba[0].tolist() == [0.0, 0.0, 1.0]  # "Sad." -> sad
    assert proba[1].tolist() == [0.0, 1.0, 0.0]  # the first class named wins
    assert np.allclose(proba[2], 1 / 3) and np.allclose(proba[3], 1 / 3)
    assert clf.unparsed == 1 and clf.empty == 1  # the empty text is not sent
    assert len(llm.requests) == 3
    method, path, headers, body = llm.requests[0]
    assert (method, path) == ("POST", "/v1/chat/completions")
    assert headers["Authorization"] == "Bearer s3cret"
    assert body["model"] == "qwen-chat"
    system = body["messages"][0]["content"]
    assert all(name in system for name in CLASSES)
    # few-shot: at most 3 labelled examples per class, then the text itself
    shots = [m["content"] for m in body["messages"] if m["role"] == "assistant"]
    assert sorted(shots) == sorted(CLASSES * 3)
    assert body["messages"][-1] == {"role": "user", "content": "Transcript: i lost everything"}


def test_chat_without_a_model_uses_the_servers_only_chat_model(monkeypatch):
    monkeypatch.delenv("EDGEWISE_TEXT_CLASSIFIER_TOKEN", raising=False)
    with FakeLLM(["angry"]) as llm:
        clf = _fit_chat(f"chat:{llm.url}")
        assert clf.predict_proba(["stop it"]).tolist() == [[1.0, 0.0, 0.0]]
    assert [r[:2] for r in llm.requests] == [("GET", "/v1/models"), ("POST", "/v1/chat/completions")]
    assert llm.requests[1][3]["model"] == "qwen-chat"
    assert "Authorization" not in llm.requests[1][2]


def test_chat_errors_name_the_url():
    with FakeLLM([], status=500) as llm:
        clf = _fit_chat(f"chat:{llm.url}#qwen-chat")
        with pytest.raises(EdgewiseError, match=rf"{llm.url}.*the model crashed"):
            clf.predict_proba(["hello"])
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    clf = _fit_chat(f"chat:http://127.0.0.1:{port}#m")
    with pytest.raises(EdgewiseError, match=rf"http://127\.0\.0\.1:{port}.*cannot connect"):
        clf.predict_proba(["hello"])


def test_chat_refuses_plain_http_to_another_host():
    with pytest.raises(ConfigError, match=r"http://example\.com.*loopback"):
        build_text_classifier("chat:http://example.com")
    assert build_text_classifier("chat:https://example.com:8443#m").name == "chat:https://example.com:8443#m"


def test_chat_checks_the_ca_file(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGEWISE_TEXT_CLASSIFIER_CA", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="missing.pem"):
        build_text_classifier("chat:https://example.com")


# --------------------------------------------------------------------------------------------------
# python:MODULE:ATTR


class KeywordClassifier:
    """A user's classifier: the class whose name is in the text, else uniform (unnormalized rows)."""

    def fit(self, texts, labels, classes):
        self.classes = classes

    def predict_proba(self, texts):
        return np.array([[2.0 if c in t else 0.0 for c in self.classes] for t in texts]) + 1e-9


def make_keyword_classifier():
    return KeywordClassifier()


def make_nothing():
    return object()


def test_python_factory_from_a_module():
    spec = f"python:{__name__}:make_keyword_classifier"
    clf = build_text_classifier(spec)
    assert clf.name == spec
    clf.fit(["x"], np.array([0]), CLASSES)
    proba = clf.predict_proba(["so sad", "happy happy"])
    assert proba.argmax(axis=1).tolist() == [2, 1] and np.allclose(proba.sum(axis=1), 1.0)


def test_python_factory_errors_name_the_spec():
    with pytest.raises(ConfigError, match="no_such_module_xyz"):
        build_text_classifier("python:no_such_module_xyz:make")
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        build_text_classifier(f"python:{__name__}:nope")
    with pytest.raises(ConfigError, match="without fit and predict_proba"):
        build_text_classifier(f"python:{__name__}:make_nothing")


def test_unknown_spec_lists_the_valid_forms():
    with pytest.raises(ConfigError, match=r"'bert'.*tfidf.*chat:URL.*python:MODULE:ATTR"):
        build_text_classifier("bert")


# --------------------------------------------------------------------------------------------------
# embeddings


def test_text_embeddings_reuse_the_projects_minilm_loader(monkeypatch):
    from edgewise.cloud.rec import item_embeddings

    class FakeMiniLM:
        def encode(self, texts, **kwargs):
            assert kwargs["normalize_embeddings"] is True
            return np.ones((len(texts), 384), dtype=np.float32) / np.sqrt(384)

    monkeypatch.setattr(item_embeddings, "load_text_model", lambda progress=False: FakeMiniLM())
    vectors = text_embeddings(["i am glad", ""])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    assert np.isclose(np.linalg.norm(vectors[0]), 1.0) and not vectors[1].any()  # no text: zeros
