"""``edgewise train vocoder``: the Vocos-style vocoder on the teacher's audio (mel in, waveform out).

Losses: L1 between log-mels of the output and the target, plus multi-resolution STFT loss; no
adversarial training (the recipe has to fit 2 CPU cores). Crops of ``segment_frames`` frames are
decoded with the receptive field as context, so the network learns the chunked setting the device uses.
"""

from __future__ import annotations

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from edgewise.cloud.data.tts_corpus import load_tts_corpus
from edgewise.cloud.models.tts.config import VocoderTrainConfig
from edgewise.cloud.models.tts.vocoder import TorchLogMel, Vocoder, multi_resolution_stft_loss
from edgewise.cloud.train.step_loop import Job, StepTrainOptions
from edgewise.cloud.train.tts_data import load_split
from edgewise.errors import DataError
from edgewise.tts_dsp import MelSpec


def build_vocoder_job(cfg: VocoderTrainConfig, opts: StepTrainOptions, dist) -> Job:
    corpus = load_tts_corpus(opts.data)
    train = load_split(corpus, "train")
    val = load_split(corpus, "val")
    spec = MelSpec(n_fft=cfg.model.n_fft, hop=cfg.model.hop, n_mels=cfg.model.n_mels)
    model = Vocoder(cfg.model)
    to_mel = TorchLogMel(spec)
    ctx = model.receptive_field
    seg = cfg.segment_frames
    long_enough = [i for i in range(len(train.rows)) if train.offsets[i + 1] - train.offsets[i] > seg + 2]
    if not long_enough:
        raise DataError(
            f"{opts.data}: no training sentence is longer than segment_frames + 2 = {seg + 2} frames; "
            "lower --set segment_frames or use a corpus with longer sentences"
        )

    def crop(data, i: int, start: int, frames: int):
        mel = data.mel_of(i)
        lo, hi = start - ctx, start + frames + ctx
        window = mel[max(lo, 0) : min(hi, mel.shape[0])]
        window = np.pad(window, ((max(0, -lo), max(0, hi - mel.shape[0])), (0, 0)), mode="edge")
        audio, _ = sf.read(
            corpus.audio_path(data.rows[i]), start=start * spec.hop, frames=frames * spec.hop, dtype="float32"
        )
        return window, audio

    def step(m, rng):
        mels, audios = [], []
        for i in rng.choice(long_enough, cfg.optim.batch_size):
            n = train.offsets[i + 1] - train.offsets[i]
            start = int(rng.integers(0, n - seg))
            mel, audio = crop(train, int(i), start, seg)
            mels.append(mel)
            audios.append(audio)
        mel = torch.from_numpy(np.stack(mels))
        target = torch.from_numpy(np.stack(audios))
        log_mag, phase = m(mel)
        wave = (m.module if hasattr(m, "module") else m).waveform(log_mag, phase)[
            :, ctx * spec.hop : (ctx + seg) * spec.hop
        ]
        mel_loss = F.l1_loss(to_mel(wave), to_mel(target))
        stft_loss = multi_resolution_stft_loss(wave, target)
        return {"total": mel_loss + stft_loss, "mel_l1": mel_loss, "stft": stft_loss}

    @torch.inference_mode()
    def evaluate(m, step_no):
        losses = []
        for i in range(min(16, len(val.rows))):
            mel = torch.from_numpy(val.mel_of(i)[None])
            wave = m.waveform(*m(mel))
            losses.append(float(F.l1_loss(to_mel(wave), mel)))
        return {"val_mel_l1": round(float(np.mean(losses)), 5)}

    def finish(trained, merged):
        diffs = []
        with torch.inference_mode():
            for i in range(min(8, len(val.rows))):
                mel = torch.from_numpy(val.mel_of(i)[None])
                a, b = trained(mel), merged(mel)
                diffs.append(max(float((a[0] - b[0]).abs().max()), float((a[1] - b[1]).abs().max())))
        return {**evaluate(merged, -1), "merge_max_abs_diff": max(diffs)}

    def model_json():
        return {"model": cfg.model.model_copy(update={"hrf": None}).model_dump(mode="json"), "mel": spec.to_dict(),
                "receptive_field": ctx}  # fmt: skip

    return Job("vocoder", model, step, evaluate, finish, model_json)
