"""Log-mel features of a corpus split, computed once (in parallel) and cached on disk.

A cache entry is keyed by the front-end parameters and by each file's path, size and mtime, so a
changed wav or a changed front-end recomputes it. Entries are written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgewise import __version__
from edgewise.audio import load_audio
from edgewise.errors import AudioError, DataError
from edgewise.features import LogMelConfig, log_mel
from edgewise.fsutil import atomic_path
from edgewise.parallel import process_pool

log = logging.getLogger(__name__)

CACHE_VERSION = 2
MAX_LISTED_PROBLEMS = 10


@dataclass
class FeatureSet:
    """Variable-length log-mel sequences of one split, stored flat with offsets."""

    frames: np.ndarray  # (total_frames, n_mels) float32, unnormalized log-mel
    offsets: np.ndarray  # (n + 1,) int64
    labels: np.ndarray  # (n,) int64 class indices
    paths: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    def item(self, i: int) -> np.ndarray:
        return self.frames[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)


def _features_of(args: tuple[str, dict]) -> tuple[str, np.ndarray | None, str | None]:
    path, cfg_dict = args
    cfg = LogMelConfig.from_dict(cfg_dict)
    try:
        audio = load_audio(path, cfg.sample_rate)
    except AudioError as exc:
        return path, None, str(exc)
    return path, log_mel(audio, cfg, normalize=False), None


def _cache_key(cfg: LogMelConfig, files: list[Path], labels: list[str], label_names: tuple[str, ...]) -> str:
    """Front-end, code version, label order and every file's identity: any change is a new entry."""
    h = hashlib.sha256()
    head = {
        "v": CACHE_VERSION,
        "edgewise": __version__,
        "features": cfg.without_stats().to_dict(),
        "label_names": list(label_names),
    }
    h.update(json.dumps(head, sort_keys=True).encode())
    for f, lab in zip(files, labels):
        try:
            st = f.stat()
            h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}|{lab}\n".encode())
        except FileNotFoundError:
            h.update(f"{f}|missing\n".encode())
    return h.hexdigest()[:24]


def default_cache_dir(corpus_root: Path) -> Path:
    """``<corpus>/.edgewise-cache`` when writable, else ``~/.cache/edgewise/features``."""
    preferred = corpus_root / ".edgewise-cache"
    if os.access(corpus_root, os.W_OK):
        return preferred
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgewise" / "features"


def compute_features(
    utterances,
    label_names: tuple[str, ...],
    cfg: LogMelConfig,
    cache_dir: Path,
    *,
    workers: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
) -> FeatureSet:
    """Features for ``utterances`` (objects with ``path`` and ``label``), from cache when possible.

    Unusable files are collected; by default they fail the call with one DataError listing them,
    with ``skip_bad`` they are dropped with a warning.
    """
    files = [Path(u.path) for u in utterances]
    labels = [u.label for u in utterances]
    cache_path = cache_dir / f"{_cache_key(cfg, files, labels, label_names)}.npz"
    cached = _read_cache(cache_path)
    if cached is not None:
        return cached

    index = {name: i for i, name in enumerate(label_names)}
    front_end = cfg.without_stats().to_dict()
    jobs = [(str(f), front_end) for f in files]
    results: dict[str, tuple[np.ndarray | None, str | None]] = {}
    workers = workers or os.cpu_count() or 1
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="features", unit="utt", disable=not progress, leave=False)
    if workers > 1 and len(jobs) > 32:
        with process_pool(workers) as pool:
            for path, feats, err in pool.map(_features_of, jobs, chunksize=16):
                results[path] = (feats, err)
                bar.update()
    else:
        for job in jobs:
            path, feats, err = _features_of(job)
            results[path] = (feats, err)
            bar.update()
    bar.close()

    problems = [err for _, err in results.values() if err]
    if problems:
        listed = "\n  ".join(problems[:MAX_LISTED_PROBLEMS])
        more = (
            f"\n  ... and {len(problems) - MAX_LISTED_PROBLEMS} more"
            if len(problems) > MAX_LISTED_PROBLEMS
            else ""
        )
        if not skip_bad:
            raise DataError(
                f"{len(problems)} of {len(jobs)} audio files cannot be used:\n  {listed}{more}\n"
                "fix or remove them, or pass --skip-bad to train without them"
            )
        log.warning("skipping %d unusable audio files:\n  %s%s", len(problems), listed, more)

    kept = [(str(f), lab) for f, lab in zip(files, labels) if results[str(f)][0] is not None]
    if not kept:
        raise DataError("no usable audio files in this split")
    seqs = [results[p][0] for p, _ in kept]
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([s.shape[0] for s in seqs])
    fs = FeatureSet(
        frames=np.concatenate(seqs).astype(np.float32),
        offsets=offsets,
        labels=np.array([index[lab] for _, lab in kept], dtype=np.int64),
        paths=[p for p, _ in kept],
    )
    if not skip_bad or not problems:  # a partial set is never cached: the next run re-reports it
        _write_cache(cache_path, fs)
    return fs


def _read_cache(path: Path) -> FeatureSet | None:
    """A cached FeatureSet, or None when absent or unreadable (then it is recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            log.debug("feature cache hit %s", path)
            return FeatureSet(z["frames"], z["offsets"], z["labels"], [str(p) for p in z["paths"]])
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        log.warning("ignoring damaged feature cache %s (%s); recomputing", path, exc)
        return None


def _write_cache(path: Path, fs: FeatureSet) -> None:
    try:
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, frames=fs.frames, offsets=fs.offsets, labels=fs.labels, paths=np.array(fs.paths))
    except OSError as exc:  # a read-only cache is a slowdown, not an error
        log.warning("could not write feature cache %s: %s", path, exc)


def fit_normalization(fs: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
    """Per-mel-bin mean and std over every training frame."""
    mean = fs.frames.mean(axis=0, dtype=np.float64)
    std = fs.frames.std(axis=0, dtype=np.float64)
    return mean, np.maximum(std, 1e-3)
