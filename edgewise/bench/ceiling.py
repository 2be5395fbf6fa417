"""The machine's compute ceiling, measured in the same run as the models it is compared with.

* fp32: square GEMMs in numpy (whatever BLAS numpy was built with), in a fresh process whose
  ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` are set to the thread count
  before numpy is imported (when threadpoolctl is installed it confirms the count the BLAS took);
  the best of ``repeats`` timed runs per size, the best size reported.
* int8: ``MatMulInteger`` (uint8 activations x int8 weights, int32 out: what onnxruntime's dynamic
  int8 models run) in onnxruntime with ``intra_op_num_threads``, on a one-node model built with the
  ``onnx`` helper. Devices without the ``onnx`` package report it as unavailable, with the reason.

FLOPs count 2 per multiply-add (so do the manifest's figures). ``measure_ceiling`` runs
``python -m edgewise.bench.ceiling`` and reads its JSON; nothing here imports torch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_SIZES = (1024, 1536, 2048)
DEFAULT_REPEATS = 3
THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: page faults, BLAS buffers, the ORT arena
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _blas_name() -> str:
    import numpy as np

    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]  # numpy >= 1.26
        return f"{blas.get('name', 'blas')} {blas.get('version', '')}".strip()
    except Exception:  # older numpy prints instead of returning; the name is informative only
        return "BLAS"


def fp32_gemm(sizes: tuple[int, ...], repeats: int, threads: int) -> dict[str, Any]:
    """Best GFLOP/s of numpy fp32 N x N x N GEMMs (this process's BLAS, threads set by env)."""
    import numpy as np

    rng = np.random.default_rng(0)
    by_size: dict[str, float] = {}
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        c = np.empty((n, n), dtype=np.float32)
        seconds = _best_seconds(lambda a=a, b=b, c=c: np.matmul(a, b, out=c), repeats)
        by_size[str(n)] = 2.0 * n**3 / seconds / 1e9
    control = f"{'/'.join(THREAD_VARS)}={threads} set before numpy was imported, in a fresh process"
    try:
        from threadpoolctl import threadpool_info

        taken = sorted({f"{p['internal_api']} {p['num_threads']}" for p in threadpool_info()})
        control += f"; threadpoolctl sees: {', '.join(taken) or 'no BLAS pool'} thread(s)"
    except ImportError:
        control += " (threadpoolctl not installed: the count the BLAS took is not confirmed)"
    return {
        "status": "ok",
        "value": max(by_size.values()),
        "unit": "GFLOP/s",
        "by_size": by_size,
        "repeats": repeats,
        "method": f"numpy {np.__version__} matmul, float32, {_blas_name()}",
        "threads": threads,
        "thread_control": control,
    }


def _matmul_integer_model(n: int) -> bytes:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(1).integers(-128, 128, size=(n, n), dtype=np.int8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["A", "B"], ["Y"])],
        "int8_ceiling",
        [helper.make_tensor_value_info("A", TensorProto.UINT8, [n, n])],
        [helper.make_tensor_value_info("Y", TensorProto.INT32, [n, n])],
        [numpy_helper.from_array(weights, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by onnxruntime releases back to 1.10
    return model.SerializeToString()


def int8_gemm(sizes: tuple[int, ...], repeats: int, threads: int) -> dict[str, Any]:
    """Best GOP/s of onnxruntime MatMulInteger (u8 x s8 -> s32), or why it cannot be measured."""
    figure: dict[str, Any] = {"status": "unavailable", "unit": "GOP/s", "threads": threads}
    try:
        import onnxruntime as ort
    except ImportError:
        return {**figure, "reason": "onnxruntime is not installed"}
    try:
        import onnx  # noqa: F401  (the model is built with its helper)
    except ImportError:
        return {
            **figure,
            "reason": "the onnx package is not installed (pip install onnx) to build the GEMM model",
        }
    import numpy as np

    by_size: dict[str, float] = {}
    try:
        for n in sizes:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            session = ort.InferenceSession(
                _matmul_integer_model(n), options, providers=["CPUExecutionProvider"]
            )
            a = np.random.default_rng(2).integers(0, 256, size=(n, n), dtype=np.uint8)
            seconds = _best_seconds(lambda s=session, a=a: s.run(None, {"A": a}), repeats)
            by_size[str(n)] = 2.0 * n**3 / seconds / 1e9
    except Exception as exc:  # an onnxruntime build without the kernel, out of memory, ...
        text = str(exc).strip().splitlines()
        return {
            **figure,
            "reason": f"onnxruntime MatMulInteger failed: {text[0] if text else type(exc).__name__}",
        }
    return {
        "status": "ok",
        "value": max(by_size.values()),
        "unit": "GOP/s",
        "by_size": by_size,
        "repeats": repeats,
        "method": f"onnxruntime {ort.__version__} MatMulInteger, uint8 x int8 -> int32, CPUExecutionProvider",
        "threads": threads,
        "thread_control": "SessionOptions.intra_op_num_threads",
    }


def measure_ceiling(
    threads: int, sizes: tuple[int, ...] = DEFAULT_SIZES, repeats: int = DEFAULT_REPEATS, timeout: float = 600
) -> dict[str, Any]:
    """Run the measurement in a fresh process (threads fixed before numpy loads); never raises."""
    env = {**os.environ, **dict.fromkeys(THREAD_VARS, str(threads))}
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    argv = [sys.executable, "-m", "edgewise.bench.ceiling", "--threads", str(threads)]
    argv += ["--repeats", str(repeats), "--sizes", *map(str, sizes)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
        result = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else None
        why = None if result else (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    except subprocess.TimeoutExpired:
        result, why = None, f"did not finish within {timeout:g} s"
    except (ValueError, IndexError):
        result, why = None, "the measuring process printed no JSON"
    if result is None:
        down = {"status": "unavailable", "threads": threads, "reason": f"ceiling process failed: {why}"}
        result = {"fp32": {**down, "unit": "GFLOP/s"}, "int8": {**down, "unit": "GOP/s"}}
    result["seconds"] = round(time.perf_counter() - t0, 3)
    return result


def combine(measurements: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One ceiling from several measurements (phase -> result): the best per size, each phase kept.

    A shared machine only ever makes a GEMM slower, so the best figure is the nearest to the
    machine's real ceiling; the per-phase values show how much it moved during the run.
    """
    out: dict[str, Any] = {"seconds": round(sum(m.get("seconds", 0.0) for m in measurements.values()), 3)}
    for kind in ("fp32", "int8"):
        figures = {phase: m[kind] for phase, m in measurements.items()}
        ok = {phase: f for phase, f in figures.items() if f.get("status") == "ok"}
        if not ok:
            out[kind] = next(iter(figures.values()))
            continue
        best = max(ok.values(), key=lambda f: f["value"])
        by_size: dict[str, float] = {}
        for f in ok.values():
            for n, v in f["by_size"].items():
                by_size[n] = max(v, by_size.get(n, 0.0))
        out[kind] = {**best, "by_size": by_size, "by_phase": {p: f["value"] for p, f in ok.items()}}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="measure fp32 and int8 GEMM ceilings; print JSON")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS)
    args = parser.parse_args(argv)
    sizes = tuple(args.sizes)
    result = {
        "fp32": fp32_gemm(sizes, args.repeats, args.threads),
        "int8": int8_gemm(sizes, args.repeats, args.threads),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
