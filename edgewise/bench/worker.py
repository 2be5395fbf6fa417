"""One benchmark row in its own process: load one model, then time what the runner asks for.

Each row runs in a fresh ``python -m edgewise.bench.worker`` so that its cold load is really cold,
its peak resident memory (``VmHWM``) is its own, its CPU time is not mixed with other rows' thread
pools, and torch never enters the process of an artifact row. The runner drives every worker in
turn (only one computes at a time; the others block on their stdin), which is how warm latency and
throughput are interleaved across rows round by round.

Protocol: one JSON request per line on stdin, one JSON reply per line on the original stdout
(``{"ok": true, ...}`` or ``{"ok": false, "error": "...", "type": "..."}``); anything a library
prints goes to stderr. Requests (``op``):

* ``load_artifact``  bundle, artifact, threads, providers, inputs: import the runtime, construct the
  backend, run the first inference; timings and the backend's description
* ``load_torch``     run, variant (merged | hrf_training_form | plain), threads, inputs (PyTorch rows)
* ``baseline``       runtime (onnxruntime | litert | tensorrt | torch): import it and load nothing
* ``warmup``         runs[, batch]
* ``latency``        runs, start: per-run nanoseconds on inputs ``start, start+1, ...`` (cycled),
  with the process CPU time and wall time of the block
* ``throughput``     batch, seconds: calls of the fixed input repeated ``batch`` times until
  ``seconds`` have passed (at least one)
* ``memory``         VmHWM and VmRSS of this process
* ``exit``
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.bundle import load_bundle
from edgewise.devices import RuntimeChoice
from edgewise.edge.backends import LiteRTBackend
from edgewise.edge.runtime import open_backend

TORCH_VARIANTS = ("merged", "hrf_training_form", "plain")
DEFAULT_HRF = {"expansion": 2.0}  # for a run trained without HRF: the training form ser_report times


def memory() -> dict[str, Any]:
    """Peak (VmHWM) and current (VmRSS) resident memory of this process, in MiB."""
    fields: dict[str, float] = {}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                fields[key] = int(value.split()[0]) / 1024  # kB -> MiB
    except OSError:
        pass
    if "VmHWM" in fields:
        return {"hwm_mb": fields["VmHWM"], "rss_mb": fields.get("VmRSS"), "source": "/proc/self/status VmHWM"}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    scale = 1 / 2**20 if sys.platform == "darwin" else 1 / 1024
    return {"hwm_mb": peak * scale, "rss_mb": None, "source": "getrusage ru_maxrss"}


def runtime_module(runtime: str) -> str:
    """The module a row's runtime imports first (timed as the cold start's import)."""
    if runtime == "onnxruntime":
        return "onnxruntime"
    if runtime == "litert":
        if importlib.util.find_spec("ai_edge_litert") is not None:
            return "ai_edge_litert.interpreter"
        return "tflite_runtime.interpreter"
    if runtime == "tensorrt":
        return "tensorrt"
    if runtime == "torch":
        return "torch"
    raise ValueError(f"unknown runtime {runtime!r}")


def _import_torch_side() -> Any:
    """torch and the edgewise modules that build the PyTorch rows' models."""
    import torch

    importlib.import_module("edgewise.cloud.train.run")
    importlib.import_module("edgewise.cloud.models.registry")
    importlib.import_module("edgewise.export.merge")
    return torch


class Worker:
    def __init__(self) -> None:
        self.fn: Any = None
        self.fixed: np.ndarray | None = None
        self.inputs: list[np.ndarray] = []
        self.sequential = False

    # -- requests ---------------------------------------------------------------------------------

    def op_baseline(self, runtime: str) -> dict[str, Any]:
        if runtime == "torch":
            _import_torch_side()
        else:
            importlib.import_module(runtime_module(runtime))
        return {"memory": memory()}

    def _read_inputs(self, path: str) -> None:
        with np.load(path) as data:
            self.fixed = np.ascontiguousarray(data["fixed"], dtype=np.float32)
            keys = sorted((k for k in data.files if k.startswith("u")), key=lambda k: int(k[1:]))
            self.inputs = [np.ascontiguousarray(data[k], dtype=np.float32) for k in keys] or [self.fixed]

    def op_load_artifact(
        self,
        bundle: str,
        artifact: str,
        runtime: str,
        threads: int,
        providers: list[str],
        inputs: str,
        engine_dir: str | None = None,
    ) -> dict[str, Any]:
        self._read_inputs(inputs)
        opened = load_bundle(bundle, verify=False)  # the runner verified every sha256 already
        art = next((a for a in opened.artifacts("classifier") if a.path == artifact), None)
        if art is None:
            raise ValueError(f"{bundle}: no classifier artifact {artifact!r}")
        quant = art.quant
        choice = RuntimeChoice(format=art.format, precision=art.precision, quant=quant, providers=providers)
        t0 = time.perf_counter()
        importlib.import_module(runtime_module(runtime))
        t1 = time.perf_counter()
        backend = open_backend(opened, art, choice, threads, Path(engine_dir) if engine_dir else None)
        t2 = time.perf_counter()
        backend(self.fixed)
        t3 = time.perf_counter()
        self.fn = backend
        self.sequential = isinstance(backend, LiteRTBackend)
        providers_used = getattr(backend, "providers", None)
        return {
            "import_ms": (t1 - t0) * 1e3,
            "load_ms": (t2 - t1) * 1e3,
            "first_inference_ms": (t3 - t2) * 1e3,
            "runtime": backend.describe(),
            "provider": providers_used[0] if providers_used else None,
            "sequential": self.sequential,
        }

    def op_load_torch(self, run: str, variant: str, threads: int, inputs: str) -> dict[str, Any]:
        if variant not in TORCH_VARIANTS:
            raise ValueError(f"unknown PyTorch variant {variant!r}; expected one of {TORCH_VARIANTS}")
        self._read_inputs(inputs)
        t0 = time.perf_counter()
        torch = _import_torch_side()
        torch.set_num_threads(threads)
        t1 = time.perf_counter()
        model, notes = _torch_model(run, variant)
        t2 = time.perf_counter()

        def call(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()

        call(self.fixed)
        t3 = time.perf_counter()
        self.fn = call
        from torch.utils.flop_counter import FlopCounterMode

        from edgewise.cloud.models.hrf import count_parameters

        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.from_numpy(self.fixed))
        return {
            "import_ms": (t1 - t0) * 1e3,
            "load_ms": (t2 - t1) * 1e3,
            "first_inference_ms": (t3 - t2) * 1e3,
            "runtime": f"torch {torch.__version__} eager, {threads} thread(s)",
            "provider": None,
            "sequential": False,
            "parameters": count_parameters(model),
            "flops": int(counter.get_total_flops()),
            "notes": notes,
        }

    def op_warmup(self, runs: int, batch: int = 1) -> dict[str, Any]:
        x = np.repeat(self.fixed, batch, axis=0) if batch > 1 else self.fixed
        for _ in range(runs):
            self.fn(x)
        return {}

    def op_latency(self, runs: int, start: int = 0) -> dict[str, Any]:
        n = len(self.inputs)
        order = [(start + j) % n for j in range(runs)]
        ns = []
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for i in order:
            x = self.inputs[i]
            t = time.perf_counter_ns()
            self.fn(x)
            ns.append(time.perf_counter_ns() - t)
        return {
            "ns": ns,
            "index": order,
            "cpu_s": time.process_time() - cpu0,
            "wall_s": time.perf_counter() - wall0,
        }

    def op_throughput(self, batch: int, seconds: float) -> dict[str, Any]:
        x = np.repeat(self.fixed, batch, axis=0)
        calls = 0
        t0 = time.perf_counter()
        while True:
            self.fn(x)
            calls += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= seconds:
                break
        return {"calls": calls, "elapsed_s": elapsed}

    def op_memory(self) -> dict[str, Any]:
        return {"memory": memory()}


def _torch_model(run: str, variant: str) -> tuple[Any, list[str]]:
    """The PyTorch model of a row, in eval mode, and notes on how it was made."""
    from edgewise.cloud.models.hrf import HRFConfig
    from edgewise.cloud.models.registry import ModelConfig, build_model, plain_config
    from edgewise.cloud.train.checkpoint import load_weights_into
    from edgewise.cloud.train.run import load_run_model
    from edgewise.export.merge import merge_for_export

    model, info = load_run_model(run)
    if variant == "merged":
        merged, _ = merge_for_export(model, info.features.n_mels)
        return merged.eval(), [
            "the run's model.safetensors, merged for export (HRF folded, BatchNorm folded)"
        ]
    cfg = ModelConfig(**info.model_config)
    if variant == "plain":
        return build_model(plain_config(cfg)).eval(), ["the plain backbone (no HRF), freshly initialized"]
    trained_hrf = (info.meta.get("trained_with") or {}).get("hrf")
    hrf = HRFConfig(**(trained_hrf or DEFAULT_HRF))
    training = build_model(cfg.model_copy(update={"hrf": hrf})).eval()
    best = Path(run) / "checkpoints" / "best.safetensors"
    if trained_hrf and best.is_file():
        load_weights_into(training, best)
        return training, [f"HRF training form ({hrf.model_dump(exclude_none=True)}), weights of {best.name}"]
    why = "the run was trained without HRF" if not trained_hrf else f"{best} is missing"
    return training, [f"HRF training form ({hrf.model_dump(exclude_none=True)}), random weights: {why}"]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def main(worker: Any = None) -> int:
    """Answer requests on stdin with ``worker``'s ``op_<name>`` methods (default: a :class:`Worker`;
    another family's bench passes its own, :mod:`edgewise.bench.rec`)."""
    reply_fd = os.dup(1)
    os.dup2(2, 1)  # library chatter on stdout would corrupt the protocol: send it to stderr
    replies = os.fdopen(reply_fd, "w", buffering=1)
    worker = worker if worker is not None else Worker()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        op = request.pop("op")
        if op == "exit":
            replies.write(json.dumps({"ok": True}) + "\n")
            break
        try:
            reply = {"ok": True, **getattr(worker, f"op_{op}")(**request)}
        except Exception as exc:  # any failure is the row's, reported with its reason
            reply = {"ok": False, "error": _first_line(exc), "type": type(exc).__name__}
        replies.write(json.dumps(reply) + "\n")
    replies.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
