"""Graph reference sets for the TTS export: :func:`edgewise.export.reference.attach_graph_references`.

Called the way the TTS export calls it, on the session's graphs (:func:`tests.conftest.tts_bundle`'s
ONNX files, fp32 and int8) and the runs' merged PyTorch modules (:func:`tests.conftest.tts_runs`),
with real onnxruntime checking every artifact on this machine.
"""

from __future__ import annotations

import math
import platform
from pathlib import Path

import numpy as np
import pytest

from edgewise.bundle import load_bundle, sha256_file
from edgewise.edge.backends import OnnxBackend
from edgewise.edge.reference import GRAPH_REFERENCE, read_graph_reference
from edgewise.export.errors import ExportError
from edgewise.export.reference import (
    GRAPH_SENTENCES,
    MEASURED_FACTOR,
    MEASURED_FLOOR,
    VOCODER_FRAMES,
    attach_graph_references,
    graph_frames,
    measured_tolerance,
    short_frames,
)
from tests.conftest import require_module

ROLES = ("tts_encoder", "tts_flow", "vocoder")


def test_flow_lengths_make_the_decoder_pad_and_one_is_shorter_than_a_window():
    for window in (4, 16, 32, 48):
        for total in (0, 1, window, 2 * window, 3 * window, 500):
            for k in range(3):
                frames = graph_frames(window, total, k)
                assert frames % window != 0 and window < frames <= 2 * window + window // 3 + k
        assert 0 < short_frames(window) < window


def test_a_measured_tolerance_is_a_margin_over_the_x86_diff_capped_on_the_circle():
    assert measured_tolerance(0.2, "abs") == pytest.approx(MEASURED_FACTOR * 0.2 + MEASURED_FLOOR)
    assert measured_tolerance(0.0, "abs") == MEASURED_FLOOR
    assert measured_tolerance(3.0, "circular") == math.pi


@pytest.fixture(scope="module")
def made(tts_runs, tts_bundle, tts_corpus, tmp_path_factory):
    """(modules, files, sentences, window, mel stats, what attach_graph_references made)."""
    require_module("torch")
    from edgewise.cloud.data.tts_corpus import load_tts_corpus
    from edgewise.cloud.models.tts.speak import corpus_sentences
    from edgewise.cloud.train.tts_trainer import load_acoustic_run, load_vocoder_run
    from edgewise.export.tts import GRAPH_ATOL, graphs

    acoustic, info = load_acoustic_run(tts_runs[0])
    vocoder, _ = load_vocoder_run(tts_runs[1])
    modules = graphs(acoustic, vocoder)
    sentences = corpus_sentences(load_tts_corpus(tts_corpus), "val", 4)
    files: dict[str, dict[str, Path]] = {}
    with load_bundle(tts_bundle) as bundle:
        for art in [
            a for a in bundle.artifacts() if a.format == "onnx"
        ]:  # TFLite: tests/export/test_tts_tflite.py
            role = next(r for r in ROLES if art.path.startswith(f"models/{r}."))
            files.setdefault(art.precision, {})[role] = bundle.artifact_path(art)
    stats = np.asarray(info["mel_mean"], np.float32), np.asarray(info["mel_std"], np.float32)
    window = acoustic.config.decoder.window
    kwargs = dict(mel_mean=stats[0], mel_std=stats[1], window=window, threads=1)
    work = tmp_path_factory.mktemp("tts-graph-refs")
    refs = attach_graph_references(modules, files, sentences, work, atol=GRAPH_ATOL, **kwargs)
    return {"modules": modules, "files": files, "sentences": sentences, "window": window, "kwargs": kwargs,
            "refs": refs, "work": work}  # fmt: skip


@pytest.mark.slow
def test_each_graph_gets_one_file_of_named_typed_inputs_and_pytorch_outputs(made):
    import torch

    refs, files, modules = made["refs"], made["files"], made["modules"]
    assert refs.failures == []
    assert sorted(refs.files) == sorted(f"models/{role}.reference.npz" for role in ROLES)
    assert sum(p.stat().st_size for p in refs.files.values()) < 1_500_000
    for role in ROLES:
        assert set(refs.extra[role]) == {p for p, by_role in files.items() if role in by_role}
        fp32 = refs.extra[role]["fp32"]
        local = refs.files[fp32["path"]]
        for ref in refs.extra[role].values():  # one file per graph, whatever the precision
            assert ref["path"] == f"models/{role}.reference.npz" and ref["version"] == GRAPH_REFERENCE
            assert ref["sha256"] == sha256_file(local) and ref["size_bytes"] == local.stat().st_size
        cases, expected = read_graph_reference(local)
        graph = OnnxBackend(files["fp32"][role], 1, single_io=False)
        assert sorted(cases[0]) == sorted(graph.input_names)  # the graph's own input names
        assert list(expected[0]) == graph.output_names
        assert fp32["inputs"] == [{"name": n, "dtype": str(x.dtype)} for n, x in cases[0].items()]
        assert [o["name"] for o in fp32["outputs"]] == graph.output_names
        with torch.no_grad():  # the expected outputs are the merged PyTorch module's
            for case, want in zip(cases, expected):
                got = modules[role](*(torch.from_numpy(x) for x in case.values()))
                got = got if isinstance(got, tuple) else (got,)
                for name, y in zip(graph.output_names, got):
                    np.testing.assert_array_equal(y.numpy(), want[name])
    enc_cases, _ = read_graph_reference(made["refs"].files["models/tts_encoder.reference.npz"])
    sentences = made["sentences"]
    assert len(enc_cases) == min(GRAPH_SENTENCES, len(sentences))
    for case, s in zip(enc_cases, sentences):  # the validation sentences' real ids, as int64
        assert case["ids"].dtype == np.int64 and case["ids"][0].tolist() == s.ids.tolist()
        np.testing.assert_array_equal(case["boundary"][0], s.boundary)
        np.testing.assert_array_equal(case["last_word"][0], s.last)
    window = made["window"]
    flow = refs.extra["tts_flow"]["fp32"]["lengths"]
    assert all(n % window for n in flow) and min(flow) < window < max(flow)  # the decoder pads
    voc = refs.extra["vocoder"]["fp32"]["lengths"]
    assert voc == [min(n, VOCODER_FRAMES) for n in flow]


@pytest.mark.slow
def test_tolerances_are_fixed_for_fp32_and_measured_for_int8_with_the_phase_on_the_circle(made):
    refs = made["refs"]
    assert set(made["files"]["int8"]) >= {"tts_flow", "vocoder"}  # the graphs the int8 voice quantizes
    for role in ROLES:
        fp32 = refs.extra[role]["fp32"]
        assert {o["tolerance"] for o in fp32["outputs"]} == {1e-3}
        assert fp32["export_check"]["passed"] and fp32["export_check"]["machine"] == platform.machine()
        assert fp32["export_check"]["max_abs_diff"] <= 1e-3
        assert "fixed" in fp32["tolerance_rule"]
    for role in made["files"]["int8"]:
        int8 = refs.extra[role]["int8"]
        assert "measured" in int8["tolerance_rule"]
        x86 = int8["export_check"]["outputs"]
        for o in int8["outputs"]:
            assert o["tolerance"] == pytest.approx(
                measured_tolerance(x86[o["name"]]["max_abs_diff"], o["compare"])
            )
            assert x86[o["name"]]["max_abs_diff"] < o["tolerance"]
        assert int8["export_check"]["passed"]
    compares = {o["name"]: o["compare"] for role in ROLES for o in refs.extra[role]["fp32"]["outputs"]}
    assert compares == {"mu": "abs", "logd": "abs", "v": "abs", "log_mag": "abs", "phase": "circular"}
    assert refs.report()["vocoder"]["int8"] == refs.extra["vocoder"]["int8"]["export_check"]


@pytest.mark.slow
def test_a_graph_missing_its_fixed_tolerance_here_fails_its_gate(made, tmp_path):
    """A tolerance no real kernel meets (1e-12): every fp32 graph misses it on this machine."""
    refs = attach_graph_references(
        made["modules"], made["files"], made["sentences"], tmp_path,
        atol={"fp32": 1e-12, "int8": None}, **made["kwargs"],
    )  # fmt: skip
    failed = sorted(f.split(":")[0] for f in refs.failures)
    assert failed == sorted(f"{role} fp32" for role in ROLES)
    assert all("device reference set (models/" in f and "> 1e-12" in f for f in refs.failures)
    for role in ROLES:
        assert refs.extra[role]["fp32"]["export_check"]["passed"] is False
    for role in made["files"]["int8"]:
        assert refs.extra[role]["int8"]["export_check"]["passed"] is True
    with pytest.raises(ExportError, match="no tolerance rule for precision"):
        attach_graph_references(
            made["modules"], made["files"], made["sentences"], tmp_path, atol={"fp32": 1e-3}, **made["kwargs"]
        )
