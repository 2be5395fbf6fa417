"""Stand-ins for ``tensorrt`` and ``cuda.bindings.runtime``: this machine has no NVIDIA GPU.

A mock at the GPU boundary, which cannot exist here. The fake "engine" is the ONNX graph itself,
run in onnxruntime, so everything around TensorRT (the optimization profile, padding and chunking,
device buffers, the reference check, the runtime's fallback) runs on real numbers. "Device memory"
is host memory from ctypes, so a copy past the end of a buffer is caught.

``FakeTensorRT(fail=STAGE)`` fails at one stage, the way TensorRT does there:

* ``parse``: the ONNX parser returns False with an error;
* ``build``: ``build_serialized_network`` returns None;
* ``build-raise``: the builder raises (TensorRT raises RuntimeError/TypeError from C++);
* ``deserialize``: ``deserialize_cuda_engine`` returns None;
* ``context``: ``create_execution_context`` returns None;
* ``shape``: ``set_input_shape`` returns False;
* ``wrong``: the engine runs but its outputs are off by 1.0 (a miscompiled engine).

A real execution context is not thread-safe, so the fake counts how many threads are inside an
execution at once (``max_concurrent``); ``dwell_s`` keeps each execution inside a while, so calls
that are not serialized overlap and show.
"""

from __future__ import annotations

import ctypes
import json
import sys
import threading
import time
import types
from typing import Any

import numpy as np

STAGES = ("parse", "build", "build-raise", "deserialize", "context", "shape", "wrong")


class FakeCudart:
    """cudaMalloc/cudaFree/cudaMemcpyAsync/streams over ctypes buffers; counts allocations."""

    def __init__(self) -> None:
        self.buffers: dict[int, Any] = {}
        self.mallocs: list[int] = []  # sizes, in order
        self.frees = 0
        self.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def cudaGetDeviceProperties(self, index):
        return 0, types.SimpleNamespace(name=b"Fake GPU\x00", major=8, minor=7)

    def cudaMalloc(self, nbytes):
        buf = ctypes.create_string_buffer(nbytes)
        self.buffers[ctypes.addressof(buf)] = buf
        self.mallocs.append(nbytes)
        return 0, ctypes.addressof(buf)

    def cudaFree(self, ptr):
        self.buffers.pop(int(ptr))
        self.frees += 1
        return (0,)

    def _check(self, ptr: int, nbytes: int) -> None:
        buf = self.buffers.get(int(ptr))
        assert buf is not None, "not a device pointer"
        assert nbytes <= ctypes.sizeof(buf), f"copy of {nbytes} bytes into a {ctypes.sizeof(buf)}-byte buffer"

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        self._check(dst if kind == 1 else src, nbytes)
        ctypes.memmove(int(dst), int(src), nbytes)
        return (0,)

    def cudaStreamCreate(self):
        return 0, 7

    def cudaStreamSynchronize(self, stream):
        return (0,)

    def cudaStreamDestroy(self, stream):
        return (0,)

    def read(self, ptr: int, shape: tuple[int, ...]) -> np.ndarray:
        n = int(np.prod(shape)) * 4
        self._check(ptr, n)
        return (
            np.frombuffer((ctypes.c_char * n).from_address(int(ptr)), dtype=np.float32).reshape(shape).copy()
        )


class FakeTensorRT:
    """The parts of the ``tensorrt`` module edgewise uses; records the builder's calls."""

    __version__ = "10.9.0"

    def __init__(
        self, fail: str | None = None, cudart: FakeCudart | None = None, dwell_s: float = 0.0
    ) -> None:
        assert fail is None or fail in STAGES, fail
        self.fail = fail
        self.dwell_s = dwell_s
        self.concurrent = 0  # threads inside an execution now
        self.max_concurrent = 0  # the most there ever were at once
        self._count_lock = threading.Lock()
        self.cudart = cudart or FakeCudart()
        self.calls: list[tuple] = []
        self.shapes: list[tuple[int, ...]] = []  # every input shape an engine ran
        fake = self

        class Logger:
            WARNING = 2

            def __init__(self, level):
                pass

        class Profile:
            def set_shape(self, name, lo, opt, hi):
                fake.calls.append(("profile", name, lo, opt, hi))
                self.shape = (name, lo, opt, hi)

        class Config:
            def __init__(self):
                self.flags = []
                self.profile = None

            def set_memory_pool_limit(self, pool, size):
                fake.calls.append(("workspace", size))

            def set_flag(self, flag):
                fake.calls.append(("flag", flag))
                self.flags.append(flag)

            def add_optimization_profile(self, profile):
                fake.calls.append(("add_profile",))
                self.profile = profile.shape

        class Network:
            path = None

        class Builder:
            def __init__(self, logger):
                pass

            def create_network(self, flags):
                return Network()

            def create_builder_config(self):
                return Config()

            def create_optimization_profile(self):
                return Profile()

            def build_serialized_network(self, network, config):
                fake.calls.append(("build",))
                if fake.fail == "build":
                    return None
                if fake.fail == "build-raise":
                    raise RuntimeError("[TRT] Internal Error (could not find any implementation for node)")
                name, lo, _, hi = config.profile
                plan = {"onnx": network.path, "input": name, "min": lo, "max": hi, "flags": config.flags}
                return b"FAKEPLAN" + json.dumps(plan).encode()

        class OnnxParser:
            num_errors = 1

            def __init__(self, network, logger):
                self.network = network

            def parse_from_file(self, path):
                fake.calls.append(("parse", path))
                self.network.path = path
                return fake.fail != "parse"

            def get_error(self, i):
                return "In node 3 (Foo): Unsupported op Foo"

        class Runtime:
            def __init__(self, logger):
                pass

            def deserialize_cuda_engine(self, data):
                if fake.fail == "deserialize" or not data.startswith(b"FAKEPLAN"):
                    return None
                return FakeEngine(fake, json.loads(data[len(b"FAKEPLAN") :]))

        self.Logger, self.Builder, self.OnnxParser, self.Runtime = Logger, Builder, OnnxParser, Runtime
        self.BuilderFlag = types.SimpleNamespace(FP16="FP16", INT8="INT8")
        self.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")
        self.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
        self.DataType = types.SimpleNamespace(FLOAT="FLOAT")

    @staticmethod
    def nptype(dtype):
        return {"FLOAT": np.float32}[dtype]

    def install(self, monkeypatch) -> None:
        """Make ``import tensorrt`` and ``from cuda.bindings import runtime`` return these fakes."""
        cuda = types.ModuleType("cuda")
        bindings = types.ModuleType("cuda.bindings")
        bindings.runtime = self.cudart
        cuda.bindings = bindings
        monkeypatch.setitem(sys.modules, "tensorrt", self)
        monkeypatch.setitem(sys.modules, "cuda", cuda)
        monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
        monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", self.cudart)


class FakeEngine:
    """The ONNX graph in onnxruntime, behind TensorRT's engine and context interface."""

    def __init__(self, fake: FakeTensorRT, plan: dict[str, Any]) -> None:
        import onnxruntime as ort

        self.fake = fake
        self.session = ort.InferenceSession(plan["onnx"], providers=["CPUExecutionProvider"])
        self.input_name = plan["input"]
        self.output_name = self.session.get_outputs()[0].name
        self.min, self.max = tuple(plan["min"]), tuple(plan["max"])
        zeros = np.zeros(self.min, dtype=np.float32)
        self.classes = self.session.run(None, {self.input_name: zeros})[0].shape[-1]
        self.num_io_tensors = 2

    def get_tensor_name(self, i):
        return [self.input_name, self.output_name][i]

    def get_tensor_mode(self, name):
        return "INPUT" if name == self.input_name else "OUTPUT"

    def get_tensor_dtype(self, name):
        return "FLOAT"

    def create_execution_context(self):
        return None if self.fake.fail == "context" else FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine = engine
        self.shape: tuple[int, ...] | None = None
        self.addresses: dict[str, int] = {}

    def set_input_shape(self, name, shape):
        shape = tuple(int(d) for d in shape)
        inside = len(shape) == 3 and all(
            lo <= d <= hi for lo, d, hi in zip(self.engine.min, shape, self.engine.max)
        )
        if self.engine.fake.fail == "shape" or name != self.engine.input_name or not inside:
            return False
        self.shape = shape
        return True

    def get_tensor_shape(self, name):
        if name == self.engine.input_name:
            return self.shape
        return (self.shape[0], self.engine.classes)

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream):
        fake = self.engine.fake
        with fake._count_lock:
            fake.concurrent += 1
            fake.max_concurrent = max(fake.max_concurrent, fake.concurrent)
        try:
            time.sleep(fake.dwell_s)
            return self._execute()
        finally:
            with fake._count_lock:
                fake.concurrent -= 1

    def _execute(self):
        engine, cudart = self.engine, self.engine.fake.cudart
        x = cudart.read(self.addresses[engine.input_name], self.shape)
        engine.fake.shapes.append(self.shape)
        y = engine.session.run(None, {engine.input_name: x})[0].astype(np.float32)
        if engine.fake.fail == "wrong":
            y = y + 1.0
        cudart._check(self.addresses[engine.output_name], y.nbytes)
        ctypes.memmove(self.addresses[engine.output_name], y.ctypes.data, y.nbytes)
        return True
