"""What the server does with a request, whatever carried it: the HTTP app (:mod:`.app`, under
uvicorn or Ray Serve) and the MQTT bridge (:mod:`.mqtt_bridge`) both call :meth:`Service.handle`
with the path, the raw body and the ``Authorization`` value, and send back the :class:`Reply`.

In order: not ready (models still loading) 503; no or wrong bearer token 401; a body over
``max_request_bytes`` 413; a body that is not a JSON object, a missing or malformed ``model``
400; a model this server does not hold 404 ``model_not_found``; a model of another task on this
endpoint 400 ``wrong_task``; a field the endpoint refuses 400 naming the field; then the model.
An error a model raises for its input (audio too short, an unknown catalogue, text with nothing
to say) is a 400 with its message; anything else is a 500 that is logged, counted and answered:
nothing a client sends takes the server down. Every reply carries ``timings`` (milliseconds), and
every outcome is counted by endpoint, status and (for refusals) reason (:mod:`.metrics`).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, field_validator

from edgewise.cloud.serve.config import AuthConfig, ServeConfig
from edgewise.cloud.serve.metrics import Metrics
from edgewise.config import format_validation_error
from edgewise.errors import EdgewiseError

log = logging.getLogger(__name__)

SER_PATH = "/v1/audio/classifications"
REC_PATH = "/v1/recommendations"
TTS_PATH = "/v1/audio/speech"
CHAT_PATH = "/v1/chat/completions"
ENDPOINT_TASK = {SER_PATH: "ser", REC_PATH: "rec", TTS_PATH: "tts", CHAT_PATH: "chat"}
TASK_ENDPOINT = {task: path for path, task in ENDPOINT_TASK.items()}
MAX_HISTORY_IDS = 10_000


# --------------------------------------------------------------------------------------------------
# replies and errors


@dataclass
class Reply:
    status: int
    body: Any  # a JSON-able object, or bytes (audio)
    media_type: str = "application/json"
    timings: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None  # the error code of a refusal (counted)


class ApiError(Exception):
    """A refusal in OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
             413: "invalid_request_error", 500: "server_error", 502: "server_error", 503: "server_error"}  # fmt: skip

    def __init__(self, status: int, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param

    def reply(self, timings: dict[str, Any] | None = None) -> Reply:
        error = {"message": self.message, "type": self.TYPES.get(self.status, "invalid_request_error"),
                 "param": self.param, "code": self.code}  # fmt: skip
        return Reply(self.status, {"error": error}, timings=timings or {}, reason=self.code)


def unauthorized() -> ApiError:
    return ApiError(401, "invalid_api_key", "missing or wrong bearer token (Authorization: Bearer <token>)")


def too_large(limit: int, size: int | None = None) -> ApiError:
    got = f"{size} bytes" if size is not None else "the body"
    return ApiError(413, "too_large", f"request body: {got} is over the limit of {limit} bytes")


# --------------------------------------------------------------------------------------------------
# request bodies (unknown fields are refused by name, so a typo is an error, not a default)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    model: str


class ClassificationBody(_Body):
    wav_b64: str | None = None
    pcm16_b64: str | None = None
    sample_rate: StrictInt | None = None


class RecommendationBody(_Body):
    history: list[str | int] = Field(max_length=MAX_HISTORY_IDS)
    k: StrictInt | None = Field(None, ge=1)
    beam: StrictInt | None = Field(None, ge=1)

    @field_validator("history", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> Any:
        if isinstance(value, list) and any(isinstance(x, bool) for x in value):
            raise ValueError("item ids are strings or integers, not booleans")
        return value


class SpeechBody(_Body):
    input: str = Field(min_length=1)
    voice: str | None = None
    response_format: Literal["wav"] = "wav"
    speed: float = Field(1.0, ge=0.25, le=4.0)


class ChatBody(BaseModel):
    model_config = ConfigDict(extra="allow", allow_inf_nan=False)  # the upstream checks the rest
    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    stream: bool = False

    @field_validator("stream")
    @classmethod
    def _no_stream(cls, value: bool) -> bool:
        if value:
            raise ValueError("streaming is not served here; send stream: false")
        return value


BODIES = {
    SER_PATH: ClassificationBody,
    REC_PATH: RecommendationBody,
    TTS_PATH: SpeechBody,
    CHAT_PATH: ChatBody,
}


class _BodyError(EdgewiseError):
    pass


def _validation_error(exc: ValidationError) -> ApiError:
    errors = exc.errors()
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # a typo explains the rest
    param = ".".join(str(p) for p in first["loc"]) or None
    message = format_validation_error(exc, "request body").replace("\n", "; ")
    return ApiError(400, "bad_request", message, param)


AUDIO_FIELDS = ("wav_b64", "pcm16_b64", "sample_rate")


def _clean(message: str) -> str:
    """A pipeline's message about its command args, in the words of this API's fields."""
    for old, new in (
        ("infer: args.", ""),
        ("infer: ", ""),
        ("infer needs", "a classification needs"),
        ("args.", ""),
    ):
        message = message.replace(old, new)
    return message


def _param(message: str, fields: tuple[str, ...]) -> str | None:
    """The first of ``fields`` a message names (OpenAI's ``param``)."""
    found = [(message.find(f), f) for f in fields if f in message]
    return min(found)[1] if found else None


# --------------------------------------------------------------------------------------------------


class Service:
    """The models of a config, loaded once (:meth:`load`), and the request handling around them."""

    def __init__(self, config: ServeConfig) -> None:
        self.config = config
        self.metrics = Metrics()
        self.backends: dict[str, Any] = {}
        self.tokens = None
        self.ready = False
        self.started = int(time.time())

    def load(self) -> Service:
        """Read the tokens and load every model (idempotent); ConfigError naming what failed."""
        from edgewise.cloud.serve.auth import TokenSet
        from edgewise.cloud.serve.backends import load_backend

        if self.ready:
            return self
        if isinstance(self.config.auth, AuthConfig):
            self.tokens = TokenSet.load(self.config.auth.tokens_file)
        for entry in self.config.models:
            if entry.id not in self.backends:
                self.backends[entry.id] = load_backend(entry)
        self.ready = True
        return self

    def close(self) -> None:
        for backend in self.backends.values():
            pipeline = getattr(backend, "pipeline", None)
            if pipeline is not None and hasattr(pipeline, "close"):
                pipeline.close()
        self.backends.clear()
        self.ready = False

    # -- the checks every transport makes -------------------------------------------------------

    def authorized(self, authorization: str | None) -> bool:
        return self.tokens is None or self.tokens.accepts(authorization)

    def refuse(self, error: ApiError, endpoint: str, transport: str, t0: float) -> Reply:
        reply = error.reply({"total_ms": round((time.perf_counter() - t0) * 1000, 3)})
        self.metrics.observe(endpoint, reply.status, time.perf_counter() - t0, reply.reason, transport)
        return reply

    # -- requests -------------------------------------------------------------------------------

    def handle(self, path: str, raw: bytes, authorization: str | None, *, transport: str = "http") -> Reply:
        """One request to a model endpoint (``ENDPOINT_TASK``), start to finish."""
        t0 = time.perf_counter()
        try:
            if path not in ENDPOINT_TASK:
                raise ApiError(
                    404, "not_found", f"no endpoint {path}; this server answers {', '.join(ENDPOINT_TASK)}"
                )
            if not self.ready:
                raise ApiError(503, "not_ready", "the models are still loading; try again shortly")
            if not self.authorized(authorization):
                raise unauthorized()
            if len(raw) > self.config.max_request_bytes:
                raise too_large(self.config.max_request_bytes, len(raw))
            body, backend = self._parse(path, raw)
            reply = self._dispatch(path, body, backend)
        except ApiError as exc:
            reply = exc.reply()
        except EdgewiseError as exc:  # the model refused its input: the message names the field
            message = _clean(str(exc))
            fields = tuple(f for f in BODIES[path].model_fields if f != "model") if path in BODIES else ()
            reply = ApiError(400, "bad_request", message, _param(message, fields)).reply()
        except Exception:  # a bug: logged with its traceback, answered, counted; the server goes on
            log.exception("%s: internal error", path)
            reply = ApiError(500, "internal_error", "internal error (logged on the server)").reply()
        seconds = time.perf_counter() - t0
        reply.timings = {**reply.timings, "total_ms": round(seconds * 1000, 3)}
        if isinstance(reply.body, dict) and reply.status < 300 and path != CHAT_PATH:
            reply.body["timings"] = reply.timings
        endpoint = path if path in ENDPOINT_TASK else "other"  # a device's made-up path is no label
        self.metrics.observe(endpoint, reply.status, seconds, reply.reason, transport)
        return reply

    def _parse(self, path: str, raw: bytes) -> tuple[Any, Any]:
        from edgewise import safejson

        try:
            obj = safejson.load_json(
                raw, source="request body", max_bytes=self.config.max_request_bytes, error=_BodyError
            )
        except _BodyError as exc:
            raise ApiError(400, "invalid_json", str(exc)) from None
        if not isinstance(obj, dict):
            raise ApiError(
                400, "bad_request", f"request body: expected a JSON object, got {type(obj).__name__}"
            )
        model = obj.get("model")
        if not isinstance(model, str) or not model:
            raise ApiError(
                400,
                "bad_request",
                "request body: field 'model' is required (a model id from /v1/models)",
                "model",
            )
        backend = self.backends.get(model)
        if backend is None:
            served = ", ".join(sorted(self.backends)) or "none"
            raise ApiError(
                404, "model_not_found", f"model {model!r} is not served here; served: {served}", "model"
            )
        task = ENDPOINT_TASK[path]
        if backend.task != task:
            raise ApiError(
                400, "wrong_task",
                f"model {model!r} is a {backend.task} model; {path} serves {task} models "
                f"(send it to {TASK_ENDPOINT[backend.task]})", "model",
            )  # fmt: skip
        try:
            return BODIES[path].model_validate(obj), backend
        except ValidationError as exc:
            raise _validation_error(exc) from None

    def _dispatch(self, path: str, body: Any, backend: Any) -> Reply:
        if path == SER_PATH:
            return self._classify(body, backend)
        if path == REC_PATH:
            result = backend.recommend([str(x) for x in body.history], body.k, body.beam)
            timings = result.pop("timings", {})
            return Reply(200, {"model": body.model, **result}, timings=timings)
        if path == TTS_PATH:
            if body.voice not in (None, "default", body.model):
                raise ApiError(
                    400,
                    "bad_request",
                    f"voice: {body.model!r} has one voice, 'default'; got {body.voice!r}",
                    "voice",
                )
            try:
                wav, timings = backend.speak(body.input, body.speed)
            except EdgewiseError as exc:  # text the voice cannot say
                raise ApiError(400, "bad_request", f"input: {exc}", "input") from None
            return Reply(200, wav, media_type="audio/wav", timings=timings)
        status, reply = self._chat(body, backend)
        return Reply(status, reply, reason=None if status < 300 else "upstream_error")

    def _classify(self, body: ClassificationBody, backend: Any) -> Reply:
        from edgewise.edge.infer_request import decode_infer_audio

        t0 = time.perf_counter()
        args = body.model_dump(exclude_none=True, exclude={"model"})
        try:
            audio = decode_infer_audio(
                args, max_seconds=self.config.max_audio_seconds, min_samples=backend.min_samples
            )
        except EdgewiseError as exc:  # the audio: its message names the field, else the audio field given
            message = _clean(str(exc))
            param = _param(message, AUDIO_FIELDS) or next((k for k in AUDIO_FIELDS if k in args), "wav_b64")
            if not message.startswith(param):
                message = f"{param}: {message}"
            raise ApiError(400, "bad_request", message, param) from None
        decode_ms = round((time.perf_counter() - t0) * 1000, 3)
        result = backend.classify(audio)
        timings = {"decode_ms": decode_ms, **result.pop("timings")}
        return Reply(
            200,
            {"model": body.model, **result, "audio_seconds": round(audio.shape[0] / 16000, 3)},
            timings=timings,
        )

    def _chat(self, body: ChatBody, backend: Any) -> tuple[int, Any]:
        from edgewise.cloud.serve.backends import UpstreamError

        try:
            return backend.complete(body.model_dump(exclude_none=True))
        except UpstreamError as exc:
            code = "not_ready" if exc.status == 503 else "upstream_error"
            raise ApiError(exc.status, code, str(exc)) from None

    # -- the rest of the API --------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        # pid: which process answered (a replica, under Ray Serve)
        return {
            "status": "ok" if self.ready else "loading",
            "models": sorted(self.backends),
            "pid": os.getpid(),
        }

    def models(self) -> dict[str, Any]:
        data = [
            {
                "id": model_id,
                "object": "model",
                "created": self.started,
                "owned_by": "edgewise",
                "task": backend.task,
            }
            for model_id, backend in sorted(self.backends.items())
        ]
        return {"object": "list", "data": data}
