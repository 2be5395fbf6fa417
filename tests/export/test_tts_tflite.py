"""The voice's TFLite graphs: the flow step and the vocoder converted at a fixed length with a frame
mask, run by :class:`edgewise.edge.backends.LiteRTGraph` on any number of frames.

Small random models (converted once per module, about a minute) against the PyTorch modules: a
call up to the fixed length is padded and masked and must give the real frames what the dynamic
model gives; a longer call runs in tiles (exact for the vocoder, whose context covers its
receptive field). The whole export with ``--format tflite`` runs on the committed voice in
benchmarks/ (its conversion takes minutes).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("litert_torch", reason="litert-torch is not installed (the tflite extra)")
pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed (the edge extra)")

from edgewise.bundle import ArtifactEntry  # noqa: E402
from edgewise.cloud.models.tts.acoustic import AcousticModel  # noqa: E402
from edgewise.cloud.models.tts.vocoder import Vocoder  # noqa: E402
from edgewise.edge.backends import BackendError, LiteRTGraph  # noqa: E402
from edgewise.edge.runtime import fixed_graph_spec  # noqa: E402
from edgewise.export import tts  # noqa: E402

from ..cloud.models.conftest import randomize_  # noqa: E402
from ..cloud.models.test_tts_models import small_acoustic, small_vocoder  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

WINDOW, FRAMES, N_MELS = 8, 48, 80


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """(torch modules, spec per role, precision -> role -> .tflite file)."""
    acoustic = randomize_(AcousticModel(small_acoustic(hrf=None)), seed=11).eval()
    vocoder = randomize_(Vocoder(small_vocoder(hrf=None)), seed=12).eval()
    ctx = vocoder.receptive_field
    specs = {role: tts.fixed_graph_spec(role, FRAMES, WINDOW, ctx, N_MELS) for role in tts.TFLITE_ROLES}
    files, quant = tts.export_tflite(
        tts.fixed_graphs(acoustic, vocoder), tts.TFLITE_ROLES, specs, N_MELS,
        tmp_path_factory.mktemp("tts-tflite"), ("vocoder",), ["fp32", "int8"],
    )  # fmt: skip
    assert set(quant) == {"vocoder"} and quant["vocoder"]["quant"] == "dynamic"  # its manifest extra
    return tts.graphs(acoustic, vocoder), specs, files


def flow_inputs(frames: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((1, frames, N_MELS)).astype(np.float32),
        "mu": rng.standard_normal((1, frames, N_MELS)).astype(np.float32),
        "t": np.array([0.3], np.float32),
    }


def torch_outputs(module, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(*(torch.from_numpy(v) for v in inputs.values()))
    return [o.numpy() for o in (out if isinstance(out, tuple) else (out,))]


@pytest.mark.parametrize("frames", [1, 13, WINDOW * 3, FRAMES])
def test_flow_step_up_to_its_fixed_length_matches_the_dynamic_model(graphs, frames):
    modules, specs, files = graphs
    graph = LiteRTGraph(files["fp32"]["tts_flow"], 1, **specs["tts_flow"])
    inputs = flow_inputs(frames, frames)
    (v,) = graph.run(inputs)
    (expected,) = torch_outputs(modules["tts_flow"], inputs)
    assert v.shape == (1, frames, N_MELS) and graph.calls == 1
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(v, expected, atol=1e-4)


@pytest.mark.parametrize("frames", [5, 30, FRAMES, 3 * FRAMES + 7])
def test_vocoder_at_any_length_matches_the_dynamic_model(graphs, frames):
    """Past the fixed length it runs in tiles with its receptive field as context: still exact."""
    modules, specs, files = graphs
    graph = LiteRTGraph(files["fp32"]["vocoder"], 2, **specs["vocoder"])
    mel = {"mel": np.random.default_rng(frames).standard_normal((1, frames, N_MELS)).astype(np.float32)}
    got, expected = graph.run(mel), torch_outputs(modules["vocoder"], mel)
    assert graph.calls == -(-frames // graph.core) if frames > FRAMES else graph.calls == 1
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, atol=1e-4)


def test_flow_step_past_its_fixed_length_runs_in_window_aligned_tiles(graphs):
    """Tiles keep whole attention windows with a window of context: frames away from a tile edge
    match, and the output is finite and complete."""
    modules, specs, files = graphs
    graph = LiteRTGraph(files["fp32"]["tts_flow"], 1, **specs["tts_flow"])
    frames = 2 * FRAMES + 3
    inputs = flow_inputs(frames, 3)
    (v,) = graph.run(inputs)
    (expected,) = torch_outputs(modules["tts_flow"], inputs)
    assert v.shape == expected.shape and np.isfinite(v).all()
    assert graph.core % WINDOW == 0 and graph.calls == -(-frames // graph.core)
    np.testing.assert_allclose(v[:, : graph.core - WINDOW], expected[:, : graph.core - WINDOW], atol=0.05)


def test_int8_vocoder_is_smaller_and_close(graphs):
    modules, specs, files = graphs
    assert "tts_flow" not in files["int8"]  # only the roles asked for are quantized
    assert files["int8"]["vocoder"].stat().st_size < 0.6 * files["fp32"]["vocoder"].stat().st_size
    graph = LiteRTGraph(files["int8"]["vocoder"], 1, **specs["vocoder"], precision="int8", quant="dynamic")
    mel = {"mel": np.random.default_rng(0).standard_normal((1, 40, N_MELS)).astype(np.float32)}
    log_mag, _ = graph.run(mel)
    expected, _ = torch_outputs(modules["vocoder"], mel)
    diff = np.abs(log_mag - expected).max()
    assert 0 < diff < 0.5 * np.abs(expected).max()


def test_a_graph_whose_manifest_names_other_inputs_is_refused(graphs):
    _, specs, files = graphs
    spec = {**specs["vocoder"], "inputs": ["mel", "f0", "mask"]}
    with pytest.raises(BackendError, match=r"2 inputs and 2 outputs.*'mel', 'f0', 'mask'"):
        LiteRTGraph(files["fp32"]["vocoder"], 1, **spec)


def test_a_graph_of_another_length_than_its_manifest_says_is_refused(graphs):
    _, specs, files = graphs
    with pytest.raises(
        BackendError, match=r"the manifest says 64 frames with the mask 'mask'; the graph takes"
    ):
        LiteRTGraph(files["fp32"]["vocoder"], 1, **{**specs["vocoder"], "frames": 64})
    with pytest.raises(BackendError, match=r"expected context a multiple of the alignment"):
        LiteRTGraph(files["fp32"]["tts_flow"], 1, **{**specs["tts_flow"], "context": WINDOW + 1})


def test_a_missing_input_is_named(graphs):
    _, specs, files = graphs
    graph = LiteRTGraph(files["fp32"]["tts_flow"], 1, **specs["tts_flow"])
    with pytest.raises(BackendError, match=r"inputs \['mu'\] not given"):
        graph.run({"x": np.zeros((1, 4, N_MELS), np.float32), "t": np.zeros(1, np.float32)})


def test_a_malformed_graph_spec_in_the_manifest_is_a_backend_error_naming_it():
    art = ArtifactEntry(
        path="models/vocoder.fp32.tflite", format="tflite", precision="fp32", runtime="litert",
        sha256="0" * 64, size_bytes=1, extra={"graph": {"inputs": ["mel"]}},
    )  # fmt: skip
    with pytest.raises(
        BackendError, match=r"models/vocoder.fp32.tflite: extra.graph is missing or malformed"
    ):
        fixed_graph_spec(art)


def test_a_broken_graph_file_is_a_backend_error_naming_it(graphs, tmp_path):
    _, specs, _ = graphs
    broken = tmp_path / "vocoder.fp32.tflite"
    broken.write_bytes(b"not a flatbuffer")
    with pytest.raises(BackendError, match=r"vocoder\.fp32\.tflite: not a loadable TFLite model"):
        LiteRTGraph(broken, 1, **specs["vocoder"])
