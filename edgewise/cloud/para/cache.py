"""Per-utterance encoder features, cached under the benchmark's work folder.

``WORK/features/<encoder>-<key>.npz`` holds one encoder's features: ``keys`` (one per utterance:
its path, size and modification time, so a regenerated file is encoded again) and ``features``
(n, layers, dims). ``<key>`` hashes the encoder's fingerprint (kind, settings, weights' sha256), so
another run, model or setting never reads the wrong file. Utterances already there are not encoded
again; new ones are encoded in chunks (``encoder.chunk``) and saved atomically every
:data:`SAVE_EVERY_S` seconds and at the end, so an interrupted run keeps its work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgewise.cloud.para.encoders import Encoder
from edgewise.fsutil import atomic_path

log = logging.getLogger(__name__)

SAVE_EVERY_S = 30.0  # an interrupted run loses at most this much encoding


def utterance_key(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def cache_file(work: Path, encoder: Encoder) -> Path:
    fingerprint = json.dumps(encoder.fingerprint(), sort_keys=True)
    digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:16]
    kind = re.sub(r"[^A-Za-z0-9_.-]+", "_", encoder.name.split(":", 1)[0])
    return work / "features" / f"{kind}-{digest}.npz"


def _load(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            return dict(zip(data["keys"].tolist(), data["features"]))
    except (OSError, ValueError, KeyError) as exc:  # a damaged cache is rebuilt, not trusted
        log.warning("%s: unreadable feature cache (%s); encoding again", path, exc)
        return {}


def _save(path: Path, store: dict[str, np.ndarray], fingerprint: dict) -> None:
    keys = list(store)
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez(
            fh,
            keys=np.asarray(keys),
            features=np.stack([store[k] for k in keys]),
            fingerprint=np.asarray(json.dumps(fingerprint, sort_keys=True)),
        )


def cached_features(
    encoder: Encoder, paths: Sequence[Path], work: Path, *, progress: bool | None = None
) -> tuple[np.ndarray, dict]:
    """Features (n, layers, dims) float32 for ``paths`` in order, and how they were had: seconds
    spent encoding, utterances encoded and read from the cache, the cache file."""
    path = cache_file(work, encoder)
    store = _load(path)
    keys = [utterance_key(Path(p)) for p in paths]
    todo = [i for i, k in enumerate(keys) if k not in store]
    seconds = 0.0
    if todo:
        from tqdm import tqdm

        progress = sys.stderr.isatty() if progress is None else progress
        log.info("%s: encoding %d utterances (%d cached)", encoder.name, len(todo), len(keys) - len(todo))
        saved = time.monotonic()
        with tqdm(
            total=len(todo), desc=encoder.name, unit="utt", file=sys.stderr, disable=not progress
        ) as bar:
            for start in range(0, len(todo), encoder.chunk):
                chunk = todo[start : start + encoder.chunk]
                t0 = time.perf_counter()
                feats = encoder.encode([paths[i] for i in chunk])
                seconds += time.perf_counter() - t0
                store.update({keys[i]: f for i, f in zip(chunk, feats.astype(np.float32))})
                bar.update(len(chunk))
                if time.monotonic() - saved > SAVE_EVERY_S or start + encoder.chunk >= len(todo):
                    _save(path, store, encoder.fingerprint())
                    saved = time.monotonic()
    features = np.stack([store[k] for k in keys])
    return features, {
        "encode_s": round(seconds, 3),
        "encoded": len(todo),
        "cached": len(keys) - len(todo),
        "s_per_utterance": round(seconds / len(todo), 4) if todo else None,
        "cache": str(path),
    }
