"""The models a server holds: one backend per ``models`` entry, loaded once and kept resident.

Each backend has ``id``, ``task``, ``describe()`` and the one call its task needs:

- ser  ``classify(audio) -> {"label", "labels", "scores", "timings"}`` (float32 mono at 16 kHz)
- rec  ``recommend(history, k, beam) -> {"items", "titles", "scores", "unknown", ..., "timings"}``
- tts  ``speak(text, speed) -> (wav bytes, timings)``
- chat ``complete(body) -> (status, body)`` (forwarded to an OpenAI-compatible upstream)

Bundles run through the device's pipelines (:mod:`edgewise.edge.pipelines`: numpy and the
runtimes); runs load in PyTorch, imported here only when such a model loads. Bad input raises an
:class:`~edgewise.errors.EdgewiseError` subclass whose message names the field (the service
answers 400 with it). Every call is safe from several threads (the pipelines hold a lock around
their model; the run backends here do the same).
"""

from __future__ import annotations

import io
import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.cloud.serve.config import ModelEntry
from edgewise.errors import ConfigError, DataError, EdgewiseError

log = logging.getLogger(__name__)

SER_MIN_FRAMES = 2  # what the exported SER models take at least (edgewise.export.pipeline)
MAX_UPSTREAM_REPLY_BYTES = 64 * 1024 * 1024


class UpstreamError(EdgewiseError):
    """The chat upstream is unreachable or gave no usable answer (the service answers 503/502)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def _check_task(entry: ModelEntry, found: str, what: str) -> None:
    if found != entry.task:
        raise ConfigError(f"model {entry.id!r}: task {entry.task!r}, but {what} is a {found!r} model")


def _profile(entry: ModelEntry):
    from edgewise.devices import load_profile

    return load_profile(entry.device)


def _open_bundle(entry: ModelEntry):
    from edgewise.bundle import load_bundle

    bundle = load_bundle(entry.bundle, public_key=entry.public_key)
    _check_task(entry, bundle.manifest.task, f"bundle {entry.bundle}")
    return bundle


def _run_task(entry: ModelEntry) -> None:
    from edgewise.tasks import task_of_run

    _check_task(entry, task_of_run(entry.run), f"run {entry.run}")


def _torch_threads(entry: ModelEntry) -> None:
    if entry.threads:
        import torch

        torch.set_num_threads(entry.threads)


# --------------------------------------------------------------------------------------------------
# speech emotion recognition


class SerBackend:
    task = "ser"

    def __init__(self, entry: ModelEntry, labels: list[str], min_samples: int, infer, info: dict) -> None:
        self.id, self.labels, self.min_samples = entry.id, labels, min_samples
        self._infer, self._info = infer, info

    def classify(self, audio: np.ndarray) -> dict[str, Any]:
        t0 = time.perf_counter()
        probs, timings = self._infer(audio)
        best = int(np.argmax(probs))
        return {
            "label": self.labels[best],
            "confidence": round(float(probs[best]), 6),
            "labels": list(self.labels),
            "scores": [round(float(p), 6) for p in probs],
            "timings": {**timings, "model_total_ms": _ms(time.perf_counter() - t0)},
        }

    def describe(self) -> dict[str, Any]:
        return {"labels": self.labels, **self._info}


def ser_from_bundle(entry: ModelEntry) -> SerBackend:
    from edgewise.edge.infer_request import min_samples_of
    from edgewise.edge.pipelines.ser import SERPipeline

    pipeline = SERPipeline.from_bundle(_open_bundle(entry), _profile(entry), threads=entry.threads)

    def infer(audio: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        result = pipeline.classify(audio)
        probs = np.array([result.probabilities[k] for k in pipeline.labels], dtype=np.float64)
        return probs, {"frontend_ms": round(result.frontend_ms, 3), "model_ms": round(result.model_ms, 3)}

    info = {
        "source": "bundle",
        "bundle": pipeline.name,
        "version": pipeline.version,
        **pipeline.runtime.describe(),
    }
    return SerBackend(entry, list(pipeline.labels), min_samples_of(pipeline), infer, info)


def ser_from_run(entry: ModelEntry) -> SerBackend:
    import torch

    from edgewise.cloud.train.run import load_run_model
    from edgewise.edge.pipelines.ser import softmax
    from edgewise.features import log_mel

    _run_task(entry)
    _torch_threads(entry)
    model, info = load_run_model(entry.run)
    lock = threading.Lock()
    features = info.features

    def infer(audio: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        t0 = time.perf_counter()
        feats = log_mel(np.asarray(audio, dtype=np.float32), features)[None].astype(np.float32)
        with lock, torch.inference_mode():
            t1 = time.perf_counter()
            logits = model(torch.from_numpy(feats))[0].double().numpy()
            t2 = time.perf_counter()
        return softmax(logits), {"frontend_ms": _ms(t1 - t0), "model_ms": _ms(t2 - t1)}

    min_samples = (SER_MIN_FRAMES - 1) * features.hop_length
    described = {"source": "run", "run": str(entry.run), "name": info.meta.get("name"), "engine": "pytorch"}
    return SerBackend(entry, list(info.labels), min_samples, infer, described)


# --------------------------------------------------------------------------------------------------
# recommendation


class RecBackend:
    task = "rec"

    def __init__(self, entry: ModelEntry, pipeline: Any, info: dict) -> None:
        self.id, self.pipeline, self._info = entry.id, pipeline, info

    def recommend(self, history: list[str], k: int | None, beam: int | None) -> dict[str, Any]:
        return self.pipeline.recommend(history, k, beam)

    def describe(self) -> dict[str, Any]:
        s = self.pipeline.settings
        return {"items": s.n_items, "max_len": s.max_len, "beam": s.beam, "top_k": s.top_k, **self._info}


def rec_from_bundle(entry: ModelEntry) -> RecBackend:
    from edgewise.edge.pipelines.rec import RecPipeline

    bundle = _open_bundle(entry)
    pipeline = RecPipeline.from_bundle(bundle, _profile(entry), threads=entry.threads)
    info = {"source": "bundle", "bundle": bundle.manifest.name, "version": bundle.manifest.version}
    return RecBackend(entry, pipeline, info)


def rec_from_run(entry: ModelEntry) -> RecBackend:
    """A lazy decoder-only run in PyTorch, through the device pipeline's request handling and beam
    search (:class:`~edgewise.edge.pipelines.rec.RecPipeline`) over the export's graph modules: the
    same answers as the run's bundle would give, without exporting it."""
    from edgewise.cloud.models.rec.config import RecTrainConfig
    from edgewise.cloud.train.rec_job import load_rec_run
    from edgewise.cloud.train.step_loop import read_step_run
    from edgewise.config import load_config, read_yaml
    from edgewise.edge.pipelines.rec import RecPipeline, RecSettings, RecTables
    from edgewise.export.rec import TorchGraph, graph_io, graphs
    from edgewise.rec_ids import PrefixTrie

    _run_task(entry)
    run = Path(entry.run)
    kind = read_step_run(run, "rec").get("kind")
    if kind != "lazy":
        raise ConfigError(
            f"model {entry.id!r}: {run} is a {kind!r} rec run; the server runs the lazy decoder-only "
            "model (kind 'lazy', edgewise train rec --config lazy or lazy-small)"
        )
    _torch_threads(entry)
    cfg = load_config(RecTrainConfig, read_yaml(run / "config.yaml"), name=str(run / "config.yaml"))
    model, info = load_rec_run(run)
    ids, mcfg = info["semantic_ids"], model.config
    try:
        items = json.loads((run / "items.json").read_text())
        item_ids, titles = [str(x) for x in items["ids"]], [str(x) for x in items["titles"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"model {entry.id!r}: {run / 'items.json'} is missing or malformed ({exc!r})"
        ) from None
    popular = _popular_items(entry, info)
    settings = RecSettings(
        max_len=mcfg.max_len,
        level_sizes=tuple(int(s) for s in model.level_sizes),
        n_items=int(info["n_items"]),
        beam=int(cfg.beam),
        top_k=int(min(cfg.top_k, cfg.beam)),
        layers=mcfg.n_layers,
        heads=mcfg.n_heads,
        head_dim=mcfg.d_model // mcfg.n_heads,
        groups=model.n_groups,
        files={},
    )
    if len(item_ids) != settings.n_items:
        raise ConfigError(
            f"model {entry.id!r}: {run / 'items.json'} lists {len(item_ids)} items, the run knows {settings.n_items}"
        )
    tables = RecTables(
        ids, PrefixTrie.build(ids), item_ids, titles, popular, {x: i + 1 for i, x in enumerate(item_ids)}
    )
    modules, io_names = graphs(model), graph_io(model)
    backends = {
        role: TorchGraph(
            modules[role], [i["name"] for i in io_names[role][0]], [o["name"] for o in io_names[role][1]]
        )
        for role in ("rec_context", "rec_decoder")
    }
    pipeline = RecPipeline(backends, settings, tables)
    return RecBackend(
        entry, pipeline, {"source": "run", "run": str(run), "name": info.get("name"), "engine": "pytorch"}
    )


def _popular_items(entry: ModelEntry, info: dict[str, Any]) -> np.ndarray:
    """0-based item indices by interactions in the training part of the run's data set, most first
    (what export ships in a bundle for an empty history)."""
    from edgewise.cloud.data.rec_data import leave_last_out, load_rec_dataset

    data = entry.data or Path(str((info.get("data") or {}).get("path", "")))
    if not str(data) or not Path(data).exists():
        raise ConfigError(
            f"model {entry.id!r}: the run's data set {str(data) or '(none recorded)'} is not here; give its "
            f"folder as models[].data (the most popular items answer an empty history)"
        )
    dataset = load_rec_dataset(data)
    if dataset.n_items != int(info["n_items"]):
        raise ConfigError(
            f"model {entry.id!r}: {data} has {dataset.n_items} items, the run knows {info['n_items']}"
        )
    train = [np.asarray(s, dtype=np.int64) for s in leave_last_out(dataset).train if len(s)]
    counts = (
        np.bincount(np.concatenate(train), minlength=dataset.n_items) if train else np.zeros(dataset.n_items)
    )
    return np.argsort(-counts, kind="stable")[:100].astype(np.int64)


# --------------------------------------------------------------------------------------------------
# text to speech


class TtsBackend:
    task = "tts"

    def __init__(self, entry: ModelEntry, pipeline: Any, info: dict) -> None:
        self.id, self.pipeline, self._info = entry.id, pipeline, info

    def speak(self, text: str, speed: float = 1.0) -> tuple[bytes, dict[str, Any]]:
        import soundfile as sf

        from edgewise.edge.pipelines.tts import check_text

        utterance = self.pipeline.synthesize(check_text(text), length_scale=1.0 / speed)
        buffer = io.BytesIO()
        sf.write(
            buffer, np.clip(utterance.audio, -1.0, 1.0), utterance.sample_rate, subtype="PCM_16", format="WAV"
        )
        timings = {f"{k}_ms": _ms(v) for k, v in utterance.timings.items() if k != "rtf"}
        if "rtf" in utterance.timings:
            timings["rtf"] = round(utterance.timings["rtf"], 4)
        timings["audio_seconds"] = round(utterance.seconds, 3)
        return buffer.getvalue(), timings

    def describe(self) -> dict[str, Any]:
        return {"sample_rate": self.pipeline.sample_rate, **self._info}


def tts_from_bundle(entry: ModelEntry) -> TtsBackend:
    from edgewise.edge.pipelines.tts import TTSPipeline

    bundle = _open_bundle(entry)
    pipeline = TTSPipeline.from_bundle(bundle, _profile(entry), threads=entry.threads)
    return TtsBackend(
        entry,
        pipeline,
        {"source": "bundle", "bundle": bundle.manifest.name, "version": bundle.manifest.version},
    )


# --------------------------------------------------------------------------------------------------
# chat: an OpenAI-compatible upstream (vLLM)


class ChatUpstream:
    task = "chat"

    def __init__(self, entry: ModelEntry) -> None:
        from edgewise.cloud.serve.auth import read_secret

        self.id, self.entry = entry.id, entry
        self.url = f"{entry.upstream}/v1/chat/completions"
        self.key = (
            read_secret(entry.upstream_key_file, f"model {entry.id!r}: upstream_key_file")
            if entry.upstream_key_file
            else None
        )
        handlers: list[Any] = [_NoRedirects()]
        if self.url.startswith("https:"):
            context = ssl.create_default_context(cafile=str(entry.upstream_ca) if entry.upstream_ca else None)
            handlers.append(urllib.request.HTTPSHandler(context=context))
        self._opener = urllib.request.build_opener(*handlers)

    def complete(self, body: dict[str, Any]) -> tuple[int, Any]:
        from edgewise import safejson

        upstream_name = self.entry.upstream_model or self.id
        data = json.dumps({**body, "model": upstream_name}).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.entry.upstream_timeout_s) as response:
                status, raw = response.status, response.read(MAX_UPSTREAM_REPLY_BYTES + 1)
        except urllib.error.HTTPError as exc:
            with exc:
                status, raw = exc.code, exc.read(MAX_UPSTREAM_REPLY_BYTES + 1)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UpstreamError(
                503, f"model {self.id!r}: upstream {self.entry.upstream} unreachable ({reason})"
            ) from None
        try:
            reply = safejson.load_json(
                raw, source=f"upstream {self.url}", max_bytes=MAX_UPSTREAM_REPLY_BYTES, error=DataError
            )
        except DataError as exc:
            raise UpstreamError(502, f"model {self.id!r}: {exc}") from None
        if status >= 300 and not (isinstance(reply, dict) and isinstance(reply.get("error"), dict)):
            raise UpstreamError(
                502, f"model {self.id!r}: upstream answered HTTP {status} without an error object"
            )
        if status < 300 and isinstance(reply, dict) and reply.get("model") == upstream_name:
            reply["model"] = self.id  # the name the client asked for
        return status, reply

    def describe(self) -> dict[str, Any]:
        return {
            "source": "upstream",
            "upstream": self.entry.upstream,
            "upstream_model": self.entry.upstream_model or self.id,
        }


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
        return None  # a redirect could carry the key elsewhere


# --------------------------------------------------------------------------------------------------

LOADERS = {
    ("ser", "bundle"): ser_from_bundle,
    ("ser", "run"): ser_from_run,
    ("rec", "bundle"): rec_from_bundle,
    ("rec", "run"): rec_from_run,
    ("tts", "bundle"): tts_from_bundle,
    ("chat", "upstream"): ChatUpstream,
}


def load_backend(entry: ModelEntry) -> Any:
    """The backend of one ``models`` entry, loaded; ConfigError naming the model when it cannot be."""
    t0 = time.perf_counter()
    try:
        backend = LOADERS[(entry.task, entry.source)](entry)
    except EdgewiseError as exc:
        raise ConfigError(f"model {entry.id!r} ({entry.task}, {entry.source}): {exc}") from None
    log.info(
        "model %s (%s from %s) loaded in %.1f s", entry.id, entry.task, entry.source, time.perf_counter() - t0
    )
    return backend
