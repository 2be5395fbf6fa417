"""Which graph each role of a named voice runs (``fp32``, ``int8``, ``tflite-fp32``, ``tflite-int8``):
the rule the device, ``edgewise bench`` and the export gate share."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from edgewise.bench.tts import voices_in
from edgewise.edge.pipelines.tts import ROLES, voice_artifacts, voice_key, voice_sources
from edgewise.errors import ConfigError


@dataclass(frozen=True)
class Art:
    format: str
    precision: str


class FakeBundle:
    """What voice_artifacts reads of a bundle: its artifacts per role, filtered like Bundle.artifacts."""

    root = Path("voice-1.0.0")

    def __init__(self, have: dict[str, list[tuple[str, str]]]) -> None:
        self.have = have

    def artifacts(self, role, format=None, precision=None):
        return [
            Art(f, p)
            for f, p in self.have.get(role, [])
            if (format is None or f == format) and (precision is None or p == precision)
        ]


# the committed voice exported with --format onnx --format tflite: int8 quantizes flow and vocoder,
# TFLite has no encoder
FULL = {
    "tts_encoder": [("onnx", "fp32")],
    "tts_flow": [("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8")],
    "vocoder": [("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8")],
}


def picked(bundle, voice) -> dict[str, tuple[str, str]]:
    return {role: (a.format, a.precision) for role, a in voice_artifacts(bundle, voice).items()}


def test_voice_names_round_trip():
    for fmt, precision in [("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8")]:
        assert voice_sources(voice_key(fmt, precision))[0] == (fmt, precision)
    assert voice_key("onnx", "int8") == "int8" and voice_key("tflite", "int8") == "tflite-int8"


def test_the_tflite_int8_voice_runs_the_onnx_encoder_and_tflite_int8_graphs():
    assert picked(FakeBundle(FULL), "tflite-int8") == {
        "tts_encoder": ("onnx", "fp32"),
        "tts_flow": ("tflite", "int8"),
        "vocoder": ("tflite", "int8"),
    }


def test_a_graph_int8_did_not_quantize_runs_the_same_formats_fp32():
    have = {**FULL, "tts_flow": [("onnx", "fp32"), ("tflite", "fp32")]}  # --int8-graphs vocoder
    assert picked(FakeBundle(have), "tflite-int8")["tts_flow"] == ("tflite", "fp32")
    assert picked(FakeBundle(have), "int8")["tts_flow"] == ("onnx", "fp32")


def test_a_voice_the_bundle_does_not_ship_is_refused():
    onnx_only = {role: [a for a in arts if a[0] == "onnx"] for role, arts in FULL.items()}
    with pytest.raises(ConfigError, match="no tflite-fp32 artifact in the bundle"):
        voice_artifacts(FakeBundle(onnx_only), "tflite-fp32")


def test_a_role_with_nothing_to_run_is_named():
    with pytest.raises(ConfigError, match=r"no fp32 voice: tts_encoder has nothing"):
        voice_artifacts(FakeBundle({**FULL, "tts_encoder": []}), "fp32")


def test_bench_lists_every_voice_onnx_first():
    assert voices_in(FakeBundle(FULL)) == ["fp32", "int8", "tflite-fp32", "tflite-int8"]
    assert set(voices_in(FakeBundle(FULL))) <= {voice_key(f, p) for role in ROLES for f, p in FULL[role]}


def test_bench_lists_only_voices_the_bundle_can_run():
    """The encoder's ONNX fp32 graph alone is no fp32 voice (an int8-only or TFLite-only export)."""
    tflite_only = {role: [a for a in arts if a[0] == "tflite"] for role, arts in FULL.items()}
    tflite_only["tts_encoder"] = [("onnx", "fp32")]
    assert voices_in(FakeBundle(tflite_only)) == ["tflite-fp32", "tflite-int8"]
    int8_only = {role: [a for a in arts if a == ("onnx", "int8")] for role, arts in FULL.items()}
    int8_only["tts_encoder"] = [("onnx", "fp32")]
    assert voices_in(FakeBundle(int8_only)) == ["int8"]
