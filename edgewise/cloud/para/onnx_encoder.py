"""``onnx:PATH``: any ONNX model that maps audio or log-mel to frames x dims, as a frame encoder.

The input is read from the model's first (and only) input:

- ``(batch, samples)``: 16 kHz mono audio, float32;
- ``(batch, frames, n_mels)`` with a fixed ``n_mels``: the project's log-mel front-end
  (:func:`edgewise.features.log_mel`, ``n_mels`` bands, not normalized).

The batch axis may be 1 or named; the time axis must be named (dynamic), as whole utterances of
any length go in. The first output must be ``(batch, frames, dims)``, pooled to its mean and std
over frames, or ``(batch, dims)``, one vector per utterance used as it is. The model is checked
with one second of silence when it is loaded, before any utterance is encoded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgewise.cloud.para.encoders import SAMPLE_RATE, FrameEncoder, file_sha256
from edgewise.errors import EdgewiseError

EXPECTED_INPUT = "(batch, samples) 16 kHz audio or (batch, frames, n_mels) log-mel"
EXPECTED_OUTPUT = "(batch, frames, dims) or (batch, dims)"


def _shape(dims) -> str:
    return "(" + ", ".join(str(d) if isinstance(d, int) else str(d or "?") for d in dims) + ")"


class OnnxEncoder(FrameEncoder):
    def __init__(self, path: Path, threads: int = 1) -> None:
        import onnxruntime as ort

        self.where = f"encoder onnx:{path}"
        if not path.is_file():
            raise EdgewiseError(f"{self.where}: file not found")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for files it cannot read
            raise EdgewiseError(
                f"{self.where}: onnxruntime cannot load it ({str(exc).splitlines()[0]})"
            ) from None
        self.path, self.sha256 = path, file_sha256(path)
        self.input, self.mel_cfg = self._check_input()
        self.output_rank = self._check_output()

    def _check_input(self):
        from edgewise.features import LogMelConfig

        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise EdgewiseError(
                f"{self.where}: expected one input, {EXPECTED_INPUT}; it has {len(inputs)} ({names})"
            )
        inp = inputs[0]
        shape, actual = list(inp.shape), f"input {inp.name!r} has shape {_shape(inp.shape)}"
        if inp.type != "tensor(float)":
            raise EdgewiseError(
                f"{self.where}: expected a float32 input, {EXPECTED_INPUT}; {actual} of {inp.type}"
            )
        batch_ok = bool(shape) and (shape[0] == 1 or not isinstance(shape[0], int))
        time_ok = len(shape) in (2, 3) and not isinstance(shape[1], int)
        mels_ok = len(shape) == 2 or (len(shape) == 3 and isinstance(shape[2], int) and shape[2] > 0)
        if not (batch_ok and time_ok and mels_ok):
            why = ""
            if len(shape) in (2, 3) and isinstance(shape[1], int):
                why = " (its time axis is fixed; whole utterances of any length need a dynamic one)"
            raise EdgewiseError(f"{self.where}: expected {EXPECTED_INPUT}; {actual}{why}")
        mel_cfg = LogMelConfig(n_mels=shape[2]) if len(shape) == 3 else None
        return inp.name, mel_cfg

    def _check_output(self) -> int:
        try:
            out = self._run(np.zeros(SAMPLE_RATE, dtype=np.float32))
        except Exception as exc:
            raise EdgewiseError(
                f"{self.where}: fails on 1 s of input ({str(exc).splitlines()[0]}); expected {EXPECTED_INPUT}"
            ) from None
        if out.ndim not in (2, 3) or out.shape[0] != 1:
            name = self.session.get_outputs()[0].name
            raise EdgewiseError(
                f"{self.where}: expected the first output to be {EXPECTED_OUTPUT}; output {name!r} "
                f"has shape {_shape(out.shape)} for one utterance"
            )
        return out.ndim

    def _run(self, audio: np.ndarray) -> np.ndarray:
        from edgewise.features import log_mel

        if self.mel_cfg is None:
            x = np.asarray(audio, dtype=np.float32)[None]
        else:
            x = log_mel(audio, self.mel_cfg, normalize=False)[None]
        return np.asarray(self.session.run(None, {self.input: x})[0])

    def fingerprint(self) -> dict[str, Any]:
        return {"encoder": "onnx", "version": 1, "model_sha256": self.sha256}

    def frames(self, audio: np.ndarray) -> list[np.ndarray]:
        return [self._run(audio)[0]]

    def encode(self, paths):
        if self.output_rank == 3:
            return super().encode(paths)
        from edgewise.audio import load_audio

        return np.stack([self._run(load_audio(p, SAMPLE_RATE))[0][None] for p in paths]).astype(np.float32)
