"""The TTS models (edgewise.cloud.models.tts): HRF merge equivalence, chunked vocoding, the iSTFT
and log-mel that training shares with the device, length regulation and synthesis."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgewise.cloud.models.hrf import HRFConfig, reparameterize_model
from edgewise.cloud.models.tts.acoustic import (
    AcousticModel,
    durations_from_log,
    length_regulate,
    synthesise,
)
from edgewise.cloud.models.tts.config import (
    AcousticConfig,
    DecoderConfig,
    EncoderConfig,
    VocoderConfig,
    resolve_tts_config,
)
from edgewise.cloud.models.tts.vocoder import TorchLogMel, Vocoder
from edgewise.errors import ConfigError
from edgewise.tts_dsp import MelSpec, istft, tts_log_mel

from .conftest import randomize_

TOL = {"atol": 1e-5, "rtol": 1e-4}
HRF = HRFConfig(expansion=2.0)


def small_acoustic(hrf: HRFConfig | None = HRF, **prosody) -> AcousticConfig:
    return AcousticConfig(
        n_symbols=64,
        encoder=EncoderConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64),
        decoder=DecoderConfig(channels=32, n_blocks=2, n_heads=2, d_ff=64, window=8),
        prosody=prosody or {},
        hrf=hrf,
    )


def small_vocoder(hrf: HRFConfig | None = HRF) -> VocoderConfig:
    return VocoderConfig(dim=32, d_ff=64, n_layers=3, hrf=hrf)


def text_batch(batch: int = 2, n: int = 23, seed: int = 0):
    """ids (B, N) with the second row shorter (masked), word boundaries and a last-word mask."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, 64, (batch, n), generator=gen)
    mask = torch.ones(batch, n)
    mask[1:, n - 6 :] = 0.0
    ids = ids * mask.long()
    boundary = torch.zeros(batch, n)
    boundary[:, 4::5] = 1.0
    last = torch.zeros(batch, n)
    last[0, n - 5 : n - 1] = 1.0
    last[1:, n - 11 : n - 7] = 1.0
    return ids, mask, boundary * mask, last


def keys(model: torch.nn.Module) -> list[str]:
    return list(model.state_dict())


# -- HRF merge --------------------------------------------------------------------------------


@pytest.mark.parametrize("prosody", [{}, {"phrase_breaks": False, "terminal_intonation": False}])
def test_merged_acoustic_model_encodes_the_same(prosody):
    model = randomize_(AcousticModel(small_acoustic(**prosody))).eval()
    merged = reparameterize_model(model)
    ids, mask, boundary, last = text_batch()
    with torch.no_grad():
        mu, logd = model.encode(ids, mask, boundary, last)
        mu_m, logd_m = merged.encode(ids, mask, boundary, last)
    assert mu.abs().max() > 0.1  # a real signal, not zeros compared to zeros
    torch.testing.assert_close(mu_m, mu, **TOL)
    torch.testing.assert_close(logd_m, logd, **TOL)


def test_merged_acoustic_model_takes_the_same_decoder_step():
    model = randomize_(AcousticModel(small_acoustic()), seed=1).eval()
    merged = reparameterize_model(model)
    gen = torch.Generator().manual_seed(2)
    x, mu = torch.randn(2, 45, 80, generator=gen), torch.randn(2, 45, 80, generator=gen)
    mask = torch.ones(2, 45)
    mask[1, 30:] = 0.0
    t = torch.tensor([0.25, 0.75])
    with torch.no_grad():
        v, v_m = model.decoder(x, mu, t, mask), merged.decoder(x, mu, t, mask)
    assert v.abs().max() > 0.1
    torch.testing.assert_close(v_m, v, **TOL)


def test_merged_acoustic_model_is_the_plain_model():
    model = randomize_(AcousticModel(small_acoustic()))
    assert any(".hrf." in k for k in keys(model))
    merged = reparameterize_model(model.eval())
    plain = AcousticModel(small_acoustic(hrf=None))
    assert keys(merged) == keys(plain)
    assert merged.config.hrf is None and model.config.hrf == HRF  # a copy; the original is untouched
    plain.load_state_dict(merged.state_dict())  # strict: the merged checkpoint loads into the plain form
    ids, mask, boundary, last = text_batch(seed=3)
    with torch.no_grad():
        torch.testing.assert_close(
            plain.eval().encode(ids, mask, boundary, last)[0],
            model.encode(ids, mask, boundary, last)[0],
            **TOL,
        )


def test_merged_vocoder_gives_the_same_outputs():
    model = randomize_(Vocoder(small_vocoder())).eval()
    merged = reparameterize_model(model)
    mel = torch.randn(2, 40, 80, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        (log_mag, phase), (log_mag_m, phase_m) = model(mel), merged(mel)
    torch.testing.assert_close(log_mag_m, log_mag, **TOL)
    torch.testing.assert_close(phase_m, phase, **TOL)


def test_merged_vocoder_is_the_plain_vocoder():
    model = randomize_(Vocoder(small_vocoder()))
    assert any(".hrf." in k for k in keys(model))
    merged = reparameterize_model(model.eval())
    plain = Vocoder(small_vocoder(hrf=None))
    assert keys(merged) == keys(plain)
    plain.load_state_dict(merged.state_dict())
    assert merged.config.hrf is None


# -- padded to a fixed length (the TFLite graphs) ----------------------------------------------


@pytest.mark.parametrize("frames", [5, 8, 21, 40])
def test_decoder_step_padded_past_the_end_gives_the_real_frames_what_the_unpadded_step_gives(frames):
    """A fixed-length graph pads with masked frames; they must not reach the real ones (through the
    convolutions or as attention keys), including when whole windows are padding."""
    model = randomize_(AcousticModel(small_acoustic(hrf=None)), seed=8).eval()
    gen = torch.Generator().manual_seed(frames)
    x, mu = torch.randn(1, frames, 80, generator=gen), torch.randn(1, frames, 80, generator=gen)
    t = torch.tensor([0.4])
    fixed = 48  # 6 windows of 8
    pad = (0, 0, 0, fixed - frames)
    mask = torch.zeros(1, fixed)
    mask[:, :frames] = 1.0
    with torch.no_grad():
        alone = model.decoder(x, mu, t, torch.ones(1, frames))
        padded = model.decoder(
            torch.nn.functional.pad(x, pad, value=3.0), torch.nn.functional.pad(mu, pad), t, mask
        )
    assert torch.isfinite(padded).all()
    torch.testing.assert_close(padded[:, :frames], alone, **TOL)
    assert padded[:, frames:].abs().max() == 0


def test_decoder_padding_without_its_mask_would_change_the_real_frames():
    """The check above can fail: the same padding, unmasked, reaches the last real frames."""
    model = randomize_(AcousticModel(small_acoustic(hrf=None)), seed=8).eval()
    gen = torch.Generator().manual_seed(9)
    x, mu = torch.randn(1, 21, 80, generator=gen), torch.randn(1, 21, 80, generator=gen)
    t = torch.tensor([0.4])
    with torch.no_grad():
        alone = model.decoder(x, mu, t, torch.ones(1, 21))
        padded = model.decoder(
            torch.nn.functional.pad(x, (0, 0, 0, 27), value=3.0), torch.nn.functional.pad(mu, (0, 0, 0, 27)),
            t, torch.ones(1, 48),
        )  # fmt: skip
    assert (padded[:, :21] - alone).abs().max() > 1e-3


@pytest.mark.parametrize("frames", [3, 30, 64])
def test_vocoder_padded_past_the_end_with_its_mask_equals_the_unpadded_vocoder(frames):
    model = randomize_(Vocoder(small_vocoder(hrf=None)), seed=10).eval()
    mel = torch.randn(1, frames, 80, generator=torch.Generator().manual_seed(frames))
    mask = torch.zeros(1, 64)
    mask[:, :frames] = 1.0
    with torch.no_grad():
        alone = model(mel)
        padded = model(torch.nn.functional.pad(mel, (0, 0, 0, 64 - frames), value=2.0), mask)
        unmasked = model(torch.nn.functional.pad(mel, (0, 0, 0, 64 - frames), value=2.0))
    for a, p in zip(alone, padded):
        torch.testing.assert_close(p[:, :frames], a, **TOL)
    if frames < 64:
        assert (unmasked[0][:, :frames] - alone[0]).abs().max() > 1e-3  # the mask is what makes it equal


# -- the vocoder ------------------------------------------------------------------------------


def test_vocoder_in_chunks_with_receptive_field_context_equals_the_whole_mel():
    model = randomize_(Vocoder(small_vocoder()), seed=5).eval()
    ctx = model.receptive_field
    assert ctx == 3 * (model.config.n_layers + 1)
    mel = torch.randn(1, 70, 80, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        whole = model(mel)
        parts = []
        for start in range(0, 70, 16):
            end = min(start + 16, 70)
            lo, hi = max(0, start - ctx), min(70, end + ctx)
            out = model(mel[:, lo:hi])
            parts.append([o[:, start - lo : end - lo] for o in out])
    for i in range(2):
        torch.testing.assert_close(torch.cat([p[i] for p in parts], dim=1), whole[i], **TOL)


def test_vocoder_needs_its_full_context():
    """The receptive field is not larger than needed: one frame less of context changes the output."""
    model = randomize_(Vocoder(small_vocoder()), seed=5).eval()
    ctx = model.receptive_field
    mel = torch.randn(1, 60, 80, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        whole = model(mel)[0][:, 30]
        short = model(mel[:, 30 - ctx + 1 : 31 + ctx - 1])[0][:, ctx - 1]
    assert (short - whole).abs().max() > 1e-4


def test_vocoder_waveform_equals_the_device_istft():
    model = Vocoder(small_vocoder()).eval()
    mel = torch.randn(1, 37, 80, generator=torch.Generator().manual_seed(8)) - 4.0
    with torch.no_grad():
        log_mag, phase = model(mel)
        wave = model.waveform(log_mag, phase)[0].numpy()
    device = istft(log_mag[0].numpy(), phase[0].numpy())
    assert wave.shape == device.shape == (37 * 256,)
    scale = np.abs(device).max()
    assert scale > 0
    np.testing.assert_allclose(wave, device, atol=1e-5 * scale)


def test_vocoder_waveform_inverts_an_exact_stft():
    """Vocoder.waveform is the inverse of the framing tts_log_mel uses, edges included."""
    model = Vocoder(small_vocoder())
    spec = MelSpec()
    audio = torch.randn(1, 256 * 12 + 50, generator=torch.Generator().manual_seed(9)) * 0.1
    padded = torch.nn.functional.pad(audio[:, None], (spec.pad, spec.pad + spec.n_fft), mode="reflect")[:, 0]
    frames = padded.unfold(-1, spec.n_fft, spec.hop)[:, :12] * torch.hann_window(spec.n_fft)
    stft = torch.fft.rfft(frames, dim=-1)
    wave = model.waveform(stft.abs().clamp(min=1e-12).log(), stft.angle())
    torch.testing.assert_close(wave, audio[:, : 12 * 256], atol=1e-4, rtol=0)


def test_torch_log_mel_equals_the_numpy_front_end():
    t = np.arange(22050 // 2) / 22050
    audio = (0.3 * np.sin(2 * np.pi * 180 * t) + np.random.default_rng(0).normal(0, 0.02, t.shape)).astype(
        np.float32
    )
    ref = tts_log_mel(audio)
    out = TorchLogMel()(torch.from_numpy(audio)[None])[0].numpy()
    assert out.shape == ref.shape == (len(audio) // 256, 80)
    np.testing.assert_allclose(out, ref, atol=2e-3, rtol=1e-4)


# -- length regulation and synthesis ----------------------------------------------------------


def test_length_regulate_repeats_rows_by_durations_and_masks_the_rest():
    mu = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2) + 1.0
    durations = torch.tensor([[2, 0, 3], [1, 1, 0]])
    out, mask = length_regulate(mu, durations)
    assert out.shape == (2, 5, 2)
    torch.testing.assert_close(out[0], mu[0, [0, 0, 2, 2, 2]])
    torch.testing.assert_close(out[1, :2], mu[1, [0, 1]])
    assert not out[1, 2:].any()
    torch.testing.assert_close(mask, torch.tensor([[1.0] * 5, [1.0, 1.0, 0.0, 0.0, 0.0]]))


def test_durations_from_log_round_and_scale():
    frames = torch.tensor([[0.0, 1.0, 4.0, 7.0]])
    logd = torch.log1p(frames)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert durations_from_log(logd, mask).tolist() == [[0, 1, 4, 0]]
    assert durations_from_log(logd, mask, length_scale=1.5).tolist() == [[0, 2, 6, 0]]


def test_synthesise_with_the_same_noise_is_deterministic():
    model = randomize_(AcousticModel(small_acoustic(hrf=None)), seed=10).eval()
    with torch.no_grad():
        model.duration.proj.bias.fill_(1.5)  # about 3.5 frames per id: a few frames of mel
    ids, _, boundary, last = text_batch(batch=1, seed=11)
    noise = torch.randn(400, 80, generator=torch.Generator().manual_seed(12))
    mel_a, dur_a = synthesise(model, ids, boundary, last, steps=3, noise=noise)
    mel_b, dur_b = synthesise(model, ids, boundary, last, steps=3, noise=noise)
    assert mel_a.shape == (int(dur_a.sum()), 80) and mel_a.shape[0] > 0
    assert torch.equal(dur_a, dur_b) and torch.equal(mel_a, mel_b)
    mel_c, _ = synthesise(model, ids, boundary, last, steps=3, noise=noise.flip(0))
    assert not torch.equal(mel_a, mel_c)


def test_synthesise_length_scale_stretches_the_mel():
    model = randomize_(AcousticModel(small_acoustic(hrf=None)), seed=10).eval()
    with torch.no_grad():
        model.duration.proj.bias.fill_(1.5)
    ids, _, boundary, last = text_batch(batch=1, seed=11)
    noise = torch.zeros(800, 80)
    mel, _ = synthesise(model, ids, boundary, last, steps=1, noise=noise)
    slow, _ = synthesise(model, ids, boundary, last, steps=1, noise=noise, length_scale=2.0)
    assert slow.shape[0] > 1.5 * mel.shape[0]


# -- configs ----------------------------------------------------------------------------------


def test_presets_resolve_with_hrf_on():
    for name in ("tiny", "base"):
        cfg = resolve_tts_config(name)
        assert cfg.task == "tts" and cfg.model.hrf is not None
        voc = resolve_tts_config(name, vocoder=True)
        assert voc.task == "vocoder" and voc.model.hrf is not None


def test_an_unknown_preset_is_a_config_error_listing_the_presets():
    with pytest.raises(ConfigError, match=r"tts config 'huge': not a shipped preset \(base, tiny\)"):
        resolve_tts_config("huge")
    with pytest.raises(
        ConfigError, match=r"vocoder config 'huge': not a shipped preset \(vocoder-base, vocoder-tiny\)"
    ):
        resolve_tts_config("huge", vocoder=True)


def test_an_unknown_config_field_is_refused():
    with pytest.raises(ConfigError, match="model.encoder.width"):
        resolve_tts_config("tiny", ["model.encoder.width=3"])
