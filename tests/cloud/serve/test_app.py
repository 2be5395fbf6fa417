"""The embedded server as a client sees it: a real uvicorn process over HTTPS with a self-signed
certificate and a bearer token (serve-init's), serving a trained SER run and its bundle, a trained
rec run and its bundle, a TTS bundle, and a chat model forwarded to a stand-in upstream."""

from __future__ import annotations

import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from edgewise.cloud.serve.auth import write_secret
from edgewise.devtools.mosquitto import free_port
from tests.cloud.serve.conftest import ServerProcess, edit_config, pcm16_b64, serve_init, wav_b64

UPSTREAM_KEY = "upstream-secret-key"
MAX_BYTES = 256 * 1024


class FakeUpstream:
    """A stand-in for vLLM's OpenAI server: records what it gets, answers one completion."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                outer.requests.append(
                    {"path": self.path, "auth": self.headers.get("authorization"), "body": body}
                )
                reply = {
                    "id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "a cat on a mat"},
                                 "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14},
                }  # fmt: skip
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def upstream():
    fake = FakeUpstream()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def server(serve_deps, tiny_run, rec_run, ser_bundle, rec_bundle, tts_bundle, upstream, tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve") / "cloud"
    config = serve_init(
        folder,
        f"run:ser-teacher={tiny_run}",
        f"bundle:ser-tiny={ser_bundle}",
        f"run:rec-cloud={rec_run}",
        f"bundle:rec-tiny={rec_bundle}",
        f"bundle:tts-tiny={tts_bundle}",
        port=free_port(),
    )
    key = write_secret(folder / "upstream.key", UPSTREAM_KEY + "\n")
    models = [
        *__import__("yaml").safe_load(config.read_text())["models"],
        {"id": "keye-vl-8b", "task": "chat", "upstream": upstream.url, "upstream_key_file": str(key),
         "upstream_model": "Kwai-Keye/Keye-VL-8B-Preview"},
        {"id": "chat-down", "task": "chat", "upstream": f"http://127.0.0.1:{free_port()}", "upstream_timeout_s": 5},
    ]  # fmt: skip
    edit_config(config, models=models, max_request_bytes=MAX_BYTES)
    with ServerProcess(config, folder.parent / "server.log") as proc:
        yield proc
    print(proc.log_text()[-3000:])


@pytest.fixture(scope="module")
def utterance(edge_corpus) -> Path:
    return sorted(Path(edge_corpus).glob("wavs/test*.wav"))[0]


def rejected(server: ServerProcess) -> dict[str, int]:
    """The server's rejection counters by reason (parsed from /metrics)."""
    status, text, _ = server.request("GET", "/metrics")
    assert status == 200
    counts: dict[str, int] = {}
    for line in text.decode().splitlines():
        if line.startswith("edgewise_serve_rejected_total{"):
            reason = line.split('reason="', 1)[1].split('"', 1)[0]
            counts[reason] = counts.get(reason, 0) + int(line.rsplit(" ", 1)[1])
    return counts


# --------------------------------------------------------------------------------------------------


def test_health_needs_no_token_and_names_the_models(server):
    status, body, headers = server.request("GET", "/health", auth=False)
    assert status == 200 and body["status"] == "ok"
    assert body["models"] == sorted(
        ["ser-teacher", "ser-tiny", "rec-cloud", "rec-tiny", "tts-tiny", "keye-vl-8b", "chat-down"]
    )
    assert "total_ms" in json.loads(headers["x-edgewise-timings"])


def test_models_need_the_token(server):
    for auth in (False, "not-the-token"):
        status, body, headers = server.request("GET", "/v1/models", auth=auth)
        assert status == 401 and body["error"]["code"] == "invalid_api_key", body
        assert headers["www-authenticate"].startswith("Bearer")
    status, body, _ = server.request("GET", "/v1/models")
    assert status == 200 and body["object"] == "list"
    tasks = {m["id"]: m["task"] for m in body["data"]}
    assert tasks == {"ser-teacher": "ser", "ser-tiny": "ser", "rec-cloud": "rec", "rec-tiny": "rec",
                     "tts-tiny": "tts", "keye-vl-8b": "chat", "chat-down": "chat"}  # fmt: skip
    assert all(m["object"] == "model" and m["owned_by"] == "edgewise" for m in body["data"])


def test_plain_http_is_refused_by_the_tls_server(server):
    import urllib.error
    import urllib.request

    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(server.url.replace("https", "http") + "/health", timeout=5).read()


def test_classification_run_and_bundle_agree(server, utterance):
    replies = {}
    for model in ("ser-teacher", "ser-tiny"):
        for form, body in (
            ("wav", {"wav_b64": wav_b64(utterance)}),
            ("pcm", {"pcm16_b64": pcm16_b64(utterance), "sample_rate": 16000}),
        ):
            status, reply, headers = server.request(
                "POST", "/v1/audio/classifications", {"model": model, **body}
            )
            assert status == 200, reply
            assert reply["model"] == model and reply["label"] in reply["labels"]
            assert len(reply["scores"]) == len(reply["labels"]) and abs(sum(reply["scores"]) - 1) < 1e-3
            assert reply["confidence"] == max(reply["scores"])
            assert {"decode_ms", "frontend_ms", "model_ms", "total_ms"} <= set(reply["timings"])
            assert json.loads(headers["x-edgewise-timings"])["total_ms"] == reply["timings"]["total_ms"]
            replies[model, form] = reply
    run, bundle = replies["ser-teacher", "wav"], replies["ser-tiny", "wav"]
    assert run["labels"] == bundle["labels"] and run["label"] == bundle["label"]
    np.testing.assert_allclose(run["scores"], bundle["scores"], atol=2e-3)  # PyTorch vs ONNX fp32
    np.testing.assert_allclose(
        run["scores"], replies["ser-teacher", "pcm"]["scores"], atol=2e-3
    )  # pcm16 rounding


def test_recommendations_run_and_bundle_agree(server, rec_run):
    items = json.loads((Path(rec_run) / "items.json").read_text())["ids"]
    for history in (items[:3], items[10:11], items[5:40]):
        answers = []
        for model in ("rec-cloud", "rec-tiny"):
            status, reply, _ = server.request(
                "POST", "/v1/recommendations", {"model": model, "history": history, "k": 5}
            )
            assert status == 200, reply
            assert len(reply["items"]) == len(reply["titles"]) == len(reply["scores"]) == 5
            assert {"context_ms", "decode_ms", "total_ms"} <= set(reply["timings"])
            answers.append(reply)
        assert answers[0]["items"] == answers[1]["items"]
        np.testing.assert_allclose(answers[0]["scores"], answers[1]["scores"], atol=1e-3)
    status, reply, _ = server.request(
        "POST", "/v1/recommendations", {"model": "rec-cloud", "history": ["nope", items[0]], "k": 3}
    )
    assert status == 200 and reply["unknown"] == ["nope"] and len(reply["items"]) == 3
    cold = [
        server.request("POST", "/v1/recommendations", {"model": m, "history": [], "k": 4})[1]
        for m in ("rec-cloud", "rec-tiny")
    ]
    assert cold[0]["fallback"] == "popular" and cold[0]["items"] == cold[1]["items"]


def test_speech_is_a_wav_with_its_timings(server):
    import soundfile as sf

    lengths = {}
    for speed in (1.0, 2.0):
        body = {
            "model": "tts-tiny",
            "input": "The cloud speaks when asked.",
            "voice": "default",
            "speed": speed,
        }
        status, audio, headers = server.request("POST", "/v1/audio/speech", body)
        assert status == 200 and headers["content-type"] == "audio/wav"
        samples, rate = sf.read(io.BytesIO(audio))
        assert rate == 22050 and samples.ndim == 1 and np.isfinite(samples).all()
        timings = json.loads(headers["x-edgewise-timings"])
        assert timings["total_ms"] > 0 and timings["audio_seconds"] == pytest.approx(
            len(samples) / rate, abs=0.01
        )
        lengths[speed] = len(samples)
    assert lengths[2.0] < 0.75 * lengths[1.0]  # twice as fast: about half as long


def test_chat_goes_to_the_upstream_under_its_name(server, upstream):
    messages = [{"role": "user", "content": [{"type": "text", "text": "what is this?"},
                 {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}]  # fmt: skip
    status, reply, headers = server.request(
        "POST", "/v1/chat/completions", {"model": "keye-vl-8b", "messages": messages, "max_tokens": 16}
    )
    assert status == 200, reply
    assert reply["model"] == "keye-vl-8b" and reply["choices"][0]["message"]["content"] == "a cat on a mat"
    sent = upstream.requests[-1]
    assert sent["path"] == "/v1/chat/completions" and sent["auth"] == f"Bearer {UPSTREAM_KEY}"
    assert sent["body"]["model"] == "Kwai-Keye/Keye-VL-8B-Preview" and sent["body"]["messages"] == messages
    assert sent["body"]["max_tokens"] == 16
    assert "total_ms" in json.loads(headers["x-edgewise-timings"])


def test_chat_for_a_model_not_served_is_404(server):
    status, reply, _ = server.request(
        "POST", "/v1/chat/completions", {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert (
        status == 404 and reply["error"]["code"] == "model_not_found" and reply["error"]["param"] == "model"
    )
    status, reply, _ = server.request(
        "POST", "/v1/chat/completions", {"model": "ser-tiny", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert (
        status == 400
        and reply["error"]["code"] == "wrong_task"
        and "/v1/audio/classifications" in reply["error"]["message"]
    )


def test_chat_with_its_upstream_down_is_503(server):
    status, reply, _ = server.request(
        "POST",
        "/v1/chat/completions",
        {"model": "chat-down", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert (
        status == 503 and reply["error"]["code"] == "not_ready" and "unreachable" in reply["error"]["message"]
    )


BAD = [
    ("/v1/recommendations", {"model": "rec-tiny", "history": ["i1"], "k": "5"}, "k"),
    ("/v1/recommendations", {"model": "rec-tiny", "history": "i1"}, "history"),
    ("/v1/recommendations", {"model": "rec-tiny", "history": ["i1"], "k": 0}, "k"),
    ("/v1/recommendations", {"model": "rec-tiny", "history": ["i1"], "k": 50, "beam": 10}, "k"),
    ("/v1/recommendations", {"model": "rec-tiny", "history": ["not-an-item"]}, "history"),
    ("/v1/recommendations", {"model": "rec-tiny", "histroy": ["i1"]}, "histroy"),
    ("/v1/recommendations", {"history": ["i1"]}, "model"),
    ("/v1/recommendations", {"model": "rec-tiny", "history": [True]}, "history"),
    ("/v1/audio/classifications", {"model": "ser-tiny"}, "wav_b64"),
    ("/v1/audio/classifications", {"model": "ser-tiny", "wav_b64": "%%%"}, "wav_b64"),
    ("/v1/audio/classifications", {"model": "ser-tiny", "pcm16_b64": "AAA="}, "pcm16_b64"),
    (
        "/v1/audio/classifications",
        {"model": "ser-tiny", "pcm16_b64": "AAAA", "sample_rate": 16000},
        "pcm16_b64",
    ),
    (
        "/v1/audio/classifications",
        {"model": "ser-tiny", "pcm16_b64": "AAAA", "sample_rate": 3},
        "sample_rate",
    ),
    ("/v1/audio/speech", {"model": "tts-tiny", "input": "hi", "response_format": "mp3"}, "response_format"),
    ("/v1/audio/speech", {"model": "tts-tiny", "input": "hi", "speed": 9}, "speed"),
    ("/v1/audio/speech", {"model": "tts-tiny", "input": "hi", "voice": "alloy"}, "voice"),
    ("/v1/audio/speech", {"model": "tts-tiny", "input": "  "}, "input"),
    ("/v1/chat/completions", {"model": "keye-vl-8b", "messages": []}, "messages"),
    (
        "/v1/chat/completions",
        {"model": "keye-vl-8b", "messages": [{"role": "user", "content": "x"}], "stream": True},
        "stream",
    ),
]


@pytest.mark.parametrize(
    "path, body, param", BAD, ids=[f"{p.rsplit('/', 1)[1]}-{i}" for i, (p, _, _) in enumerate(BAD)]
)
def test_bad_input_is_400_naming_the_field(server, path, body, param):
    status, reply, _ = server.request("POST", path, body)
    assert status == 400, reply
    error = reply["error"]
    assert error["type"] == "invalid_request_error" and error["code"] in ("bad_request", "invalid_json")
    assert error["param"] == param
    if param is not None:
        assert param in error["message"]


def test_unknown_model_is_404_with_the_served_ones(server):
    status, reply, _ = server.request("POST", "/v1/recommendations", {"model": "rec-huge", "history": ["i1"]})
    assert status == 404 and reply["error"]["code"] == "model_not_found"
    assert "rec-tiny" in reply["error"]["message"]


def test_oversized_body_is_413_and_the_token_comes_first(server):
    big = json.dumps({"model": "rec-tiny", "history": ["i1"] * (MAX_BYTES // 5)}).encode()
    assert len(big) > MAX_BYTES
    status, reply, _ = server.request("POST", "/v1/recommendations", raw=big)
    assert (
        status == 413
        and reply["error"]["code"] == "too_large"
        and str(MAX_BYTES) in reply["error"]["message"]
    )
    status, reply, _ = server.request("POST", "/v1/recommendations", raw=big, auth=False)
    assert status == 401  # refused before the body is read


def test_garbage_never_takes_the_server_down(server):
    for raw in (b"\xff\xfe\x00garbage", b"[" * 100_000, b'{"model": "rec-tiny", "history": [1e999]}', b"null",
                b'{"model": ["rec-tiny"]}', b"", b'{"model": "rec-tiny", "history": ["i1"], "k": 99999999999999999999999}'):  # fmt: skip
        status, reply, _ = server.request("POST", "/v1/recommendations", raw=raw)
        assert status == 400, (raw[:40], reply)
        assert set(reply["error"]) == {"message", "type", "param", "code"}
    status, reply, _ = server.request("GET", "/v1/recommendations")
    assert status == 405 and reply["error"]["code"] == "method_not_allowed"
    status, reply, headers = server.request("GET", "/no/such/path")
    assert status == 404 and reply["error"]["code"] == "not_found" and "x-edgewise-timings" in headers
    assert server.request("GET", "/health", auth=False)[0] == 200
    assert server.request("POST", "/v1/recommendations", {"model": "rec-tiny", "history": ["i1"]})[0] == 200


def test_rejections_are_counted_by_reason(server):
    before = rejected(server)
    server.request("GET", "/v1/models", auth="wrong")
    server.request("POST", "/v1/recommendations", {"model": "nope", "history": []})
    server.request("POST", "/v1/recommendations", {"model": "rec-tiny", "history": "x"})
    server.request("POST", "/v1/recommendations", raw=b"x" * (MAX_BYTES + 1))
    after = rejected(server)
    for reason in ("invalid_api_key", "model_not_found", "bad_request", "too_large"):
        assert after.get(reason, 0) == before.get(reason, 0) + 1, (reason, before, after)
    assert server.request("GET", "/metrics", auth=False)[0] == 401
