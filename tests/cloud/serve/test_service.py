"""The service behind both transports, with stand-in models: a model's bug is a 500 that is logged,
counted and answered, and the next request is served; nothing is answered before the models load."""

from __future__ import annotations

import json

from edgewise.cloud.serve.config import load_serve_config
from edgewise.cloud.serve.service import Service


class Recommender:
    task = "rec"

    def __init__(self) -> None:
        self.calls = 0

    def recommend(self, history, k, beam):
        self.calls += 1
        if history == ["boom"]:
            raise RuntimeError("a bug in the model")
        return {
            "items": ["b"],
            "titles": [""],
            "scores": [-1.0],
            "unknown": [],
            "timings": {"decode_ms": 1.0},
        }


def service() -> Service:
    config = load_serve_config(
        {"tls": "none", "auth": "none", "models": [{"id": "rec", "task": "rec", "bundle": "x"}]}
    )
    svc = Service(config)
    svc.backends["rec"] = Recommender()
    return svc


def ask(svc: Service, history: list[str], path: str = "/v1/recommendations"):
    return svc.handle(path, json.dumps({"model": "rec", "history": history}).encode(), None, transport="mqtt")


def test_nothing_is_answered_before_the_models_load():
    svc = service()
    reply = ask(svc, ["a"])
    assert reply.status == 503 and reply.body["error"]["code"] == "not_ready"
    assert svc.backends["rec"].calls == 0 and svc.health()["status"] == "loading"


def test_a_model_bug_is_a_500_and_the_next_request_is_served(caplog):
    svc = service()
    svc.ready = True
    reply = ask(svc, ["boom"])
    assert reply.status == 500 and reply.body == {"error": {
        "message": "internal error (logged on the server)", "type": "server_error", "param": None, "code": "internal_error"}}  # fmt: skip
    assert "a bug in the model" in caplog.text  # the traceback is in the log, not in the reply
    reply = ask(svc, ["a"])
    assert reply.status == 200 and reply.body["items"] == ["b"]
    assert reply.body["timings"]["decode_ms"] == 1.0 and reply.body["timings"]["total_ms"] >= 0
    assert svc.metrics.rejected_count("internal_error") == 1


def test_made_up_paths_are_404_and_counted_as_other():
    svc = service()
    svc.ready = True
    reply = ask(svc, ["a"], path="/v1/anything/else")
    assert reply.status == 404 and reply.body["error"]["code"] == "not_found"
    assert 'endpoint="other",status="404",transport="mqtt"} 1' in svc.metrics.render()
    assert "/v1/anything" not in svc.metrics.render()
