"""Voice activity detection on 16 kHz mono audio: Silero VAD in onnxruntime, or an energy fallback.

Both detectors cut the stream into 512-sample windows (32 ms) on a fixed grid starting at the
first sample, hold back a partial window until the next block completes it, and return one
speech probability per window. The grid, and therefore every result, is the same however the
stream is split into blocks.

The Silero model comes from the model bundle on a device (role ``vad``); on a development machine
:func:`find_silero_vad_onnx` finds the copy the ``silero-vad`` pip package ships, without importing
that package (its ``__init__`` imports torch).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import numpy as np

from edgewise.errors import ConfigError, MissingDependencyError

log = logging.getLogger(__name__)

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 512  # 32 ms: the only window Silero VAD v5 accepts at 16 kHz
SILERO_CONTEXT = 64  # samples of the previous window that Silero v5 expects in front of each window
SILERO_STATE_SHAPE = (2, 1, 128)


class StreamingVAD:
    """Base class: buffers partial windows and hands whole ones to :meth:`_score`."""

    name = "vad"
    sample_rate = SAMPLE_RATE
    window_samples = WINDOW_SAMPLES

    def __init__(self, threshold: float = 0.5) -> None:
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"{self.name} VAD: threshold must be in (0, 1), got {threshold}")
        self.threshold = float(threshold)
        self._pending = np.zeros(0, dtype=np.float32)

    def reset(self) -> None:
        """Forget the stream so far (call between independent streams)."""
        self._pending = np.zeros(0, dtype=np.float32)
        self._reset_state()

    def probabilities(self, block: np.ndarray) -> np.ndarray:
        """Speech probability of every window completed by ``block`` (float32, possibly empty)."""
        block = np.asarray(block, dtype=np.float32).reshape(-1)
        audio = np.concatenate([self._pending, block]) if self._pending.size else block
        n_windows = audio.size // self.window_samples
        used = n_windows * self.window_samples
        self._pending = audio[used:].copy()
        if n_windows == 0:
            return np.zeros(0, dtype=np.float32)
        windows = audio[:used].reshape(n_windows, self.window_samples)
        return self._score(windows).astype(np.float32, copy=False)

    def _score(self, windows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _reset_state(self) -> None:
        pass


class SileroVAD(StreamingVAD):
    """Silero VAD (v5 ONNX interface) run with onnxruntime.

    The model is a recurrent network. Each call takes ``input`` = the last 64 samples of the
    previous window followed by the 512 new ones (shape ``(1, 576)``), ``state`` (``(2, 1, 128)``,
    the recurrent state returned as ``stateN`` by the previous call, zeros at the start) and
    ``sr`` (16000). Windows are therefore scored one after another, never in parallel.
    """

    name = "silero"

    def __init__(self, onnx_path: str | os.PathLike, threshold: float = 0.5, *, threads: int = 1) -> None:
        super().__init__(threshold)
        self.onnx_path = Path(onnx_path)
        if not self.onnx_path.is_file():
            raise ConfigError(f"{self.onnx_path}: Silero VAD model file not found")
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise MissingDependencyError(
                f"the Silero VAD needs onnxruntime ({exc}); install with: pip install onnxruntime"
            ) from None
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads  # one window is a few kFLOP: more threads only add overhead
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(self.onnx_path), sess_options=opts, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ConfigError(f"{self.onnx_path}: cannot load the VAD model ({exc})") from None
        self._check_interface()
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self._reset_state()

    def _check_interface(self) -> None:
        inputs = {i.name: i for i in self._session.get_inputs()}
        outputs = [o.name for o in self._session.get_outputs()]
        state = inputs.get("state")
        ok = (
            "input" in inputs
            and state is not None
            and len(state.shape) == 3
            and state.shape[0] == 2
            and state.shape[2] == 128
            and len(outputs) == 2
        )
        if not ok:
            raise ConfigError(
                f"{self.onnx_path}: not a Silero VAD v5 model: inputs {sorted(inputs)}, outputs {outputs}; "
                "expected inputs 'input', 'state' (2, batch, 128) and 'sr', and outputs (probability, state)"
            )
        self._has_sr = "sr" in inputs
        self._outputs = outputs

    def _reset_state(self) -> None:
        self._state = np.zeros(SILERO_STATE_SHAPE, dtype=np.float32)
        self._frame = np.zeros((1, SILERO_CONTEXT + WINDOW_SAMPLES), dtype=np.float32)

    def _score(self, windows: np.ndarray) -> np.ndarray:
        probs = np.empty(windows.shape[0], dtype=np.float32)
        frame = self._frame
        feeds = {"input": frame, "state": self._state}
        if self._has_sr:
            feeds["sr"] = self._sr
        for k, window in enumerate(windows):
            frame[0, :SILERO_CONTEXT] = frame[0, -SILERO_CONTEXT:]  # context: tail of the previous window
            frame[0, SILERO_CONTEXT:] = window
            out, feeds["state"] = self._session.run(self._outputs, feeds)
            probs[k] = out.reshape(-1)[0]
        self._state = feeds["state"]
        return probs


class EnergyVAD(StreamingVAD):
    """Speech where a window's level stands ``margin_db`` above a tracked noise floor.

    The floor follows the quietest recent windows: it drops at once to a quieter window and rises
    by ``floor_rise_db_per_s``. Windows below ``min_level_db`` (dBFS) never count as speech. The
    score is a logistic of the distance to both limits, so ``threshold`` means what it means for
    Silero (0.5: at the limit). Good enough at a steady noise level; no match for Silero on babble.
    """

    name = "energy"

    def __init__(
        self,
        threshold: float = 0.5,
        *,
        margin_db: float = 12.0,
        min_level_db: float = -55.0,
        floor_rise_db_per_s: float = 3.0,
        slope_db: float = 2.0,
    ) -> None:
        super().__init__(threshold)
        self.margin_db = margin_db
        self.min_level_db = min_level_db
        self.slope_db = slope_db
        self._rise_per_window = floor_rise_db_per_s * WINDOW_SAMPLES / SAMPLE_RATE
        self._reset_state()

    def _reset_state(self) -> None:
        self._floor: float | None = None

    def _score(self, windows: np.ndarray) -> np.ndarray:
        level = 10.0 * np.log10(np.mean(windows.astype(np.float64) ** 2, axis=1) + 1e-12)
        floors = np.empty_like(level)
        floor = self._floor
        for k, db in enumerate(level):
            floor = db if floor is None or db < floor else floor + self._rise_per_window
            floors[k] = floor
        self._floor = floor
        above_floor = (level - floors - self.margin_db) / self.slope_db
        above_min = (level - self.min_level_db) / self.slope_db
        return 1.0 / (1.0 + np.exp(-np.minimum(above_floor, above_min)))


def find_silero_vad_onnx() -> Path | None:
    """The ``silero_vad.onnx`` shipped by the ``silero-vad`` pip package, or None if it is absent.

    Only locates the package (``importlib.util.find_spec`` does not run its ``__init__``, which
    imports torch).
    """
    try:
        spec = importlib.util.find_spec("silero_vad")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    folders = list(spec.submodule_search_locations or [])
    if not folders and spec.origin:
        folders = [os.path.dirname(spec.origin)]
    for folder in folders:
        path = Path(folder) / "data" / "silero_vad.onnx"
        if path.is_file():
            return path
    return None


def build_vad(
    kind: str, onnx_path: str | os.PathLike | None = None, threshold: float = 0.5
) -> StreamingVAD | None:
    """The VAD for ``kind`` ('silero', 'energy' or 'none', which returns None).

    For 'silero', ``onnx_path`` (the bundle's ``vad`` file) is used, else the pip package's copy.
    With neither, or without onnxruntime, the energy VAD is used and the reason is logged. A given
    path that is missing or not a Silero model is an error, not a fallback.
    """
    if kind == "none":
        return None
    if kind == "energy":
        return EnergyVAD(threshold)
    if kind != "silero":
        raise ConfigError(f"vad: unknown kind {kind!r}; expected 'silero', 'energy' or 'none'")
    path = Path(onnx_path) if onnx_path is not None else find_silero_vad_onnx()
    if path is None:
        log.warning(
            "VAD: no Silero VAD model (none given, none in the bundle, and the silero-vad package is "
            "not installed); using the energy VAD instead"
        )
        return EnergyVAD(threshold)
    try:
        return SileroVAD(path, threshold)
    except MissingDependencyError as exc:
        log.warning("VAD: %s; using the energy VAD instead", exc)
        return EnergyVAD(threshold)
