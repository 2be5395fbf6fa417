"""``edgewise train tts``: the acoustic model on a TTS corpus (durations from the teacher, or MAS).

Losses per step: duration (MSE on log(1 + frames)), prior (the length-regulated encoder mean
against the mel), OT-CFM flow matching on random ``segment_frames`` crops, phrase-break BCE at
word boundaries (targets: the teacher's own pauses), and the terminal-intonation KL (the text head
learns the reference encoder's token weights).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F

from edgewise.cloud.data.tts_corpus import load_tts_corpus
from edgewise.cloud.models.tts.acoustic import AcousticModel, length_regulate
from edgewise.cloud.models.tts.config import TTSTrainConfig
from edgewise.cloud.models.tts.speak import corpus_sentences, word_error_rate_of
from edgewise.cloud.train.step_loop import Job, StepTrainOptions
from edgewise.cloud.train.tts_data import SplitData, break_targets, contour, load_split, mel_stats
from edgewise.errors import DataError
from edgewise.phonemes import PhonemeIds, boundary_mask, last_word_mask
from edgewise.tts_dsp import MelSpec, smooth_log_f0

log = logging.getLogger(__name__)


class Prepared:
    """Per-sentence tensors the batches are cut from."""

    def __init__(self, data: SplitData, table: PhonemeIds, cfg: TTSTrainConfig, mean, std) -> None:
        p = cfg.model.prosody
        self.data = data
        self.items = []
        for i, row in enumerate(data.rows):
            if row.durations is None:
                raise DataError(
                    f"{row.path}: no durations; recorded corpora need alignment first "
                    "(monotonic alignment search is not wired into this trainer yet)"
                )
            ids = np.asarray(row.ids, dtype=np.int64)
            dur = np.asarray(row.durations, dtype=np.int64)
            boundary = boundary_mask(ids, table)
            last = last_word_mask(ids, table)
            logf0 = smooth_log_f0(data.f0_of(i))
            self.items.append(
                {
                    "ids": ids,
                    "dur": dur,
                    "boundary": boundary,
                    "last": last,
                    "breaks": break_targets(ids, dur, table, p.break_min_frames),
                    "contour": contour(logf0, dur, last, p.contour_points),
                    "mel": (data.mel_of(i) - mean) / std,
                }
            )

    def batch(self, index, seg: int, rng: np.random.Generator):
        items = [self.items[int(i)] for i in index]
        b, n = len(items), max(len(it["ids"]) for it in items)
        t = max(it["mel"].shape[0] for it in items)
        out = {
            "ids": np.zeros((b, n), np.int64),
            "mask": np.zeros((b, n), np.float32),
            "dur": np.zeros((b, n), np.int64),
            "boundary": np.zeros((b, n), np.float32),
            "last": np.zeros((b, n), np.float32),
            "breaks": np.zeros((b, n), np.float32),
            "contour": np.stack([it["contour"] for it in items]),
            "mel": np.zeros((b, t, items[0]["mel"].shape[1]), np.float32),
            "starts": np.zeros(b, np.int64),
        }
        for r, it in enumerate(items):
            k = len(it["ids"])
            for key in ("ids", "dur", "boundary", "last", "breaks"):
                out[key][r, :k] = it[key]
            out["mask"][r, :k] = 1.0
            frames = it["mel"].shape[0]
            out["mel"][r, :frames] = it["mel"]
            out["starts"][r] = int(rng.integers(0, max(1, frames - seg + 1)))
        return {k: torch.from_numpy(v) for k, v in out.items()}


def losses(model: AcousticModel, batch, cfg: TTSTrainConfig, generator: torch.Generator | None = None):
    m = model.module if hasattr(model, "module") else model
    mask, seg, sigma = batch["mask"], cfg.model.flow.segment_frames, cfg.model.flow.sigma_min
    h, heads = m.prosody(
        batch["ids"], mask, batch["boundary"], batch["last"], batch["breaks"], batch["contour"]
    )
    out = {}
    logd = m.duration(h.detach(), mask)
    target = torch.log1p(batch["dur"].float()) * mask
    out["dur"] = ((logd - target) ** 2).sum() / mask.sum()
    mu_y, fmask = length_regulate(m.proj_mu(h) * mask[..., None], batch["dur"])
    y = batch["mel"][:, : mu_y.shape[1]]
    out["prior"] = 0.5 * (((mu_y - y) ** 2) * fmask[..., None]).sum() / (fmask.sum() * y.shape[-1])
    # flow matching on random crops
    idx = batch["starts"][:, None] + torch.arange(seg)[None]  # (B, seg)
    valid = (idx < fmask.shape[1]).float()
    idx = idx.clamp(max=fmask.shape[1] - 1)
    take = lambda x: torch.gather(x, 1, idx[..., None].expand(-1, -1, x.shape[-1]))  # noqa: E731
    x1, mu, smask = take(y), take(mu_y), torch.gather(fmask, 1, idx) * valid
    b = x1.shape[0]
    t = torch.rand(b, generator=generator)
    z = torch.randn(x1.shape, generator=generator)
    yt = (1 - (1 - sigma) * t[:, None, None]) * z + t[:, None, None] * x1
    u = x1 - (1 - sigma) * z
    v = m.decoder(yt, mu, t, smask)
    out["flow"] = (((v - u) ** 2) * smask[..., None]).sum() / (smask.sum() * x1.shape[-1])
    w = cfg.loss
    total = w.duration * out["dur"] + w.prior * out["prior"] + w.flow * out["flow"]
    if "break_logits" in heads:
        bmask = batch["boundary"] * mask
        bce = F.binary_cross_entropy_with_logits(heads["break_logits"], batch["breaks"], reduction="none")
        out["breaks"] = (bce * bmask).sum() / bmask.sum().clamp(min=1)
        total = total + w.breaks * out["breaks"]
    if "tone_logits" in heads:
        voiced = (batch["contour"].abs().sum(1) > 0).float()
        ref = heads["tone_weights"].detach()
        kl = (ref * (ref.clamp(min=1e-8).log() - heads["tone_logits"].log_softmax(-1))).sum(-1)
        out["tone"] = (kl * voiced).sum() / voiced.sum().clamp(min=1)
        total = total + w.intonation * out["tone"]
    out["total"] = total
    return out


def build_acoustic_job(cfg: TTSTrainConfig, opts: StepTrainOptions, dist) -> Job:
    corpus = load_tts_corpus(opts.data)
    table = PhonemeIds(corpus.id_map)
    if table.n_symbols > cfg.model.n_symbols:
        raise DataError(
            f"the corpus uses {table.n_symbols} symbols; model.n_symbols is {cfg.model.n_symbols}"
        )
    train_data, val_data = load_split(corpus, "train"), load_split(corpus, "val")
    mean, std = mel_stats(train_data)
    train, val = Prepared(train_data, table, cfg, mean, std), Prepared(val_data, table, cfg, mean, std)
    model = AcousticModel(cfg.model)
    seg = cfg.model.flow.segment_frames
    # --vocoder RUN: each evaluation also scores the word error rate on eval_sentences val sentences
    wer_sentences, vocoder, asr = [], None, None
    if opts.vocoder is not None and cfg.eval_sentences > 0:
        from edgewise.cloud.train.tts_trainer import load_vocoder_run
        from edgewise.tts_eval import recognizer

        asr = recognizer()  # MissingDependencyError before training, not at the first evaluation

        vocoder, vinfo = load_vocoder_run(opts.vocoder)  # a clear error now, not at the first evaluation
        if MelSpec(**vinfo["mel"]) != MelSpec():
            raise DataError(
                f"{opts.vocoder}: the vocoder's mel {vinfo['mel']} differs from the acoustic model's"
            )
        wer_sentences = corpus_sentences(corpus, "val", cfg.eval_sentences)

    def step(m, rng):
        index = rng.choice(len(train.items), cfg.optim.batch_size)
        return losses(m, train.batch(index, seg, rng), cfg)

    @torch.inference_mode()
    def evaluate(m, step_no):
        rng = np.random.default_rng(12345)
        gen = torch.Generator().manual_seed(12345)
        sums: dict[str, float] = {}
        n = 0
        for start in range(0, len(val.items), 16):
            index = np.arange(start, min(start + 16, len(val.items)))
            out = losses(m, val.batch(index, seg, rng), cfg, gen)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(index)
            n += len(index)
        out = {f"val_{k}": round(v / n, 5) for k, v in sums.items()}
        if wer_sentences:
            out["val_wer"] = round(
                word_error_rate_of(
                    m, vocoder, wer_sentences, mean, std, sample_rate=MelSpec().sample_rate, asr=asr
                ),
                4,
            )
        return out

    def finish(trained, merged):
        from edgewise.cloud.models.tts.acoustic import synthesise

        diffs = []
        for it in val.items[:8]:
            ids = torch.from_numpy(it["ids"][None])
            b, lw = torch.from_numpy(it["boundary"][None]), torch.from_numpy(it["last"][None])
            noise = torch.randn(
                len(it["ids"]) * 40, cfg.model.n_mels, generator=torch.Generator().manual_seed(0)
            )
            mel_a, dur_a = synthesise(trained, ids, b, lw, noise=noise)
            mel_b, dur_b = synthesise(merged, ids, b, lw, noise=noise)
            if torch.equal(dur_a, dur_b):
                diffs.append(float((mel_a - mel_b).abs().max()))
        return {**evaluate(merged, -1), "merge_max_abs_diff": max(diffs) if diffs else None}

    def model_json():
        return {
            "model": cfg.model.model_copy(update={"hrf": None}).model_dump(mode="json"),
            "mel": MelSpec().to_dict(),
            "mel_mean": mean.tolist(),
            "mel_std": std.tolist(),
            "phoneme_id_map": corpus.id_map,
            "phonemizer": corpus.meta.get("phonemizer", {"backend": "piper", "voice": "en-us"}),
            "teacher": {k: v for k, v in corpus.meta.get("teacher", {}).items() if k != "model_card"},
        }

    return Job("tts", model, step, evaluate, finish, model_json)
