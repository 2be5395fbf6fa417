"""The recommendation dataset: interactions in time order, item fields, and its on-disk layout.

Every recommender in edgewise reads its data through :func:`load_rec_dataset`, whatever made it:
``edgewise data rec`` (MovieLens, a user's CSV/Parquet, the synthetic generator) or the name
``ml-100k`` (RecBole's shipped copy, read in place). The layout of a DATA directory::

    DATA/dataset.json       schema_version, kind "rec", counts, which arrays and fields exist, meta
                            (source, licence, cleaning report), and the simulator's config if any
    DATA/interactions.npz   user, item (int32 indices), timestamp (int64 epoch seconds) and the
                            optional rating, watch_time (float32 seconds), disliked (bool)
    DATA/items.jsonl        one JSON object per item index: id, title/category/description, duration
    DATA/users.json         the original user id of each user index
    DATA/simulator.npz      (synthetic data only) the user simulator's latent state

Rows are sorted by (user, timestamp, original file order), so a user's history is one contiguous
slice in time order. :func:`leave_last_out` is RecBole's leave-one-out split for full ranking.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.errors import DataError
from edgewise.fsutil import current_umask, fsync_dir

SCHEMA_VERSION = 1
DATASET_FILE = "dataset.json"
INTERACTIONS_FILE = "interactions.npz"
ITEMS_FILE = "items.jsonl"
USERS_FILE = "users.json"
SIMULATOR_FILE = "simulator.npz"
ITEM_FIELDS = ("title", "category", "description")
# name -> dtype of every per-interaction array; the first three are required
ARRAYS = {
    "user": np.int32,
    "item": np.int32,
    "timestamp": np.int64,
    "rating": np.float32,
    "watch_time": np.float32,
    "disliked": np.bool_,
}
OPTIONAL_ARRAYS = ("rating", "watch_time", "disliked")


@dataclass
class RecDataset:
    """Interactions of ``n_users`` users with ``n_items`` items, sorted by (user, time, file order).

    ``user_ids[u]`` / ``item_ids[i]`` are the original ids of index ``u`` / ``i``. Per-interaction
    arrays have length ``n_interactions``; ``item_duration`` (seconds) and each ``item_fields``
    list have one entry per item. Arrays are cast to their dtypes and checked on construction.
    """

    user_ids: list[str]
    item_ids: list[str]
    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray
    rating: np.ndarray | None = None
    watch_time: np.ndarray | None = None
    disliked: np.ndarray | None = None
    item_duration: np.ndarray | None = None
    item_fields: dict[str, list[str]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    source: InitVar[str] = "dataset"  # how errors found on construction name it

    def __post_init__(self, source: str = "dataset") -> None:
        for name, dtype in ARRAYS.items():
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, np.ascontiguousarray(value, dtype=dtype))
        if self.item_duration is not None:
            self.item_duration = np.ascontiguousarray(self.item_duration, dtype=np.float32)
        self.validate(source)

    # --- sizes ---------------------------------------------------------------------------------
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return int(self.user.shape[0])

    def validate(self, source: str = "dataset") -> None:
        """Shapes, index ranges, field lengths and the (user, time) order; a DataError names the field."""
        n = self.user.shape[0]
        for name in ARRAYS:
            value = getattr(self, name)
            if value is None:
                continue
            if value.ndim != 1 or value.shape[0] != n:
                raise DataError(f"{source}: field '{name}' has shape {value.shape}, expected ({n},)")
        for name, size in (("user", self.n_users), ("item", self.n_items)):
            values = getattr(self, name)
            if n and (values.min() < 0 or values.max() >= size):
                bad = int(np.flatnonzero((values < 0) | (values >= size))[0])
                raise DataError(
                    f"{source}: field '{name}' row {bad} holds index {int(values[bad])}, "
                    f"outside 0..{size - 1} ({size} {name}s)"
                )
        if self.item_duration is not None and self.item_duration.shape != (self.n_items,):
            raise DataError(
                f"{source}: field 'item_duration' has shape {self.item_duration.shape}, "
                f"expected ({self.n_items},)"
            )
        for key, values in self.item_fields.items():
            if key not in ITEM_FIELDS:
                raise DataError(
                    f"{source}: unknown item field {key!r}; expected one of {', '.join(ITEM_FIELDS)}"
                )
            if len(values) != self.n_items:
                raise DataError(
                    f"{source}: item field '{key}' has {len(values)} entries, expected {self.n_items}"
                )
        step = 1 << 20  # in blocks, so checking 20M rows does not double the memory
        for lo in range(0, max(n - 1, 0), step):
            u, t = self.user[lo : lo + step + 1], self.timestamp[lo : lo + step + 1]
            back = (u[1:] < u[:-1]) | ((u[1:] == u[:-1]) & (t[1:] < t[:-1]))
            if back.any():
                row = lo + int(np.flatnonzero(back)[0]) + 1
                raise DataError(
                    f"{source}: interactions are not sorted by (user, timestamp) at row {row}; "
                    "build datasets with build_rec_dataset()"
                )

    # --- per-user views ------------------------------------------------------------------------
    def user_offsets(self) -> np.ndarray:
        """int64 (n_users + 1,): user ``u``'s rows are ``offsets[u]:offsets[u + 1]``."""
        counts = np.bincount(self.user, minlength=self.n_users)
        offsets = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return offsets

    def split_by_user(self, values: np.ndarray) -> list[np.ndarray]:
        """Per-interaction ``values`` cut into one array (a view) per user index, in time order."""
        values = np.asarray(values)
        if values.shape[0] != self.n_interactions:
            raise ValueError(f"expected {self.n_interactions} values, got {values.shape[0]}")
        return np.split(values, self.user_offsets()[1:-1])

    def sequences(self) -> list[np.ndarray]:
        """Item indices (int64) per user index, in time order."""
        return self.split_by_user(self.item.astype(np.int64))

    def user_slices(self, name: str) -> list[np.ndarray]:
        """A per-interaction array by name (``watch_time``, ``rating``, ``disliked``, ``timestamp``...)
        cut per user; a DataError when this dataset has no such array."""
        if name not in ARRAYS or getattr(self, name) is None:
            present = [k for k in ARRAYS if getattr(self, k) is not None]
            raise DataError(f"this dataset has no '{name}' array; it has {', '.join(present)}")
        return self.split_by_user(getattr(self, name))

    def item_texts(self) -> list[str]:
        """One text per item, "Title. Category. Description" from the fields that exist ("" if none)."""
        fields = [self.item_fields[k] for k in ITEM_FIELDS if k in self.item_fields]
        texts = []
        for i in range(self.n_items):
            parts = [str(f[i]).strip() for f in fields]
            parts = [p for p in parts if p]
            texts.append(". ".join([p.rstrip(".") for p in parts[:-1]] + parts[-1:]))
        return texts

    def summary(self) -> dict[str, Any]:
        """Counts and the cleaning report, as printed by ``edgewise data rec``."""
        return {
            "source": self.meta.get("source"),
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "arrays": [k for k in ARRAYS if getattr(self, k) is not None],
            "item_fields": sorted(self.item_fields),
            "item_duration": self.item_duration is not None,
            "cleaning": self.meta.get("cleaning", {}),
            "licence": self.meta.get("licence"),
        }


# --- building --------------------------------------------------------------------------------
def natural_order(ids: Sequence[str]) -> list[str]:
    """Ids sorted numerically when all are whole numbers ("2" before "10"), else as text."""
    ids = [str(x) for x in ids]
    if ids and all(x.lstrip("-").isdigit() for x in ids):
        return sorted(ids, key=lambda x: (int(x), x))
    return sorted(ids)


def build_rec_dataset(
    user: np.ndarray,
    item: np.ndarray,
    timestamp: np.ndarray,
    *,
    user_ids: list[str],
    item_ids: list[str],
    rating: np.ndarray | None = None,
    watch_time: np.ndarray | None = None,
    disliked: np.ndarray | None = None,
    item_duration: np.ndarray | None = None,
    item_fields: dict[str, list[str]] | None = None,
    meta: dict[str, Any] | None = None,
) -> RecDataset:
    """A dataset from index arrays in file order: rows are sorted stably by (user, timestamp)."""
    user = np.asarray(user, dtype=np.int32)
    timestamp = np.asarray(timestamp, dtype=np.int64)
    order = np.argsort(timestamp, kind="stable")
    order = order[np.argsort(user[order], kind="stable")]

    def take(values):
        return None if values is None else np.asarray(values)[order]

    return RecDataset(
        user_ids=list(user_ids),
        item_ids=list(item_ids),
        user=user[order],
        item=take(item),
        timestamp=timestamp[order],
        rating=take(rating),
        watch_time=take(watch_time),
        disliked=take(disliked),
        item_duration=item_duration,
        item_fields=dict(item_fields or {}),
        meta=dict(meta or {}),
    )


# --- saving ----------------------------------------------------------------------------------
def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def save_rec_dataset(
    ds: RecDataset, out_dir: str | os.PathLike, *, simulator: Any = None, force: bool = False
) -> Path:
    """Write ``ds`` (and a :class:`~edgewise.cloud.data.rec_synth.UserSimulator`'s state, if given)
    as a DATA directory, atomically: everything goes into a temporary sibling directory that is
    renamed to ``out_dir`` once complete, so a failure leaves nothing behind. An existing non-empty
    ``out_dir`` is refused, unless ``force`` and it holds a dataset (replaced only at the end)."""
    from edgewise.cloud.data.synth import _move_into_place, check_target

    out = Path(out_dir).expanduser().absolute()
    check_target(out, force, DATASET_FILE, "a rec dataset")
    ds.validate()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        os.chmod(staging, 0o777 & ~current_umask())  # mkdtemp's 0700 is not what a dataset needs
        arrays = {k: getattr(ds, k) for k in ARRAYS if getattr(ds, k) is not None}
        np.savez(staging / INTERACTIONS_FILE, **arrays)
        with open(staging / ITEMS_FILE, "w", encoding="utf-8") as fh:
            for i, item_id in enumerate(ds.item_ids):
                row: dict[str, Any] = {"id": item_id}
                for key in ITEM_FIELDS:
                    if key in ds.item_fields:
                        row[key] = ds.item_fields[key][i]
                if ds.item_duration is not None:
                    row["duration"] = float(ds.item_duration[i])
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        (staging / USERS_FILE).write_text(json.dumps(ds.user_ids, ensure_ascii=False), encoding="utf-8")
        info: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "kind": "rec",
            "n_users": ds.n_users,
            "n_items": ds.n_items,
            "n_interactions": ds.n_interactions,
            "arrays": list(arrays),
            "item_fields": [k for k in ITEM_FIELDS if k in ds.item_fields],
            "item_duration": ds.item_duration is not None,
            "meta": ds.meta,
        }
        if simulator is not None:
            np.savez(staging / SIMULATOR_FILE, **simulator.state_arrays())
            info["simulator"] = simulator.config.model_dump()
        (staging / DATASET_FILE).write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
        for path in staging.iterdir():
            _fsync(path)
        fsync_dir(staging)
        check_target(out, force, DATASET_FILE, "a rec dataset")
        _move_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_dir(out.parent)
    return out


# --- loading ---------------------------------------------------------------------------------
def read_dataset_info(root: Path) -> dict[str, Any]:
    """``DATA/dataset.json``, checked for its schema; a DataError names the file and field."""
    path = root / DATASET_FILE
    if not root.is_dir():
        raise DataError(f"{root}: no such dataset directory (make one with `edgewise data rec`)")
    if not path.is_file():
        raise DataError(f"{root}: not a rec dataset: no {DATASET_FILE} (make one with `edgewise data rec`)")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    if not isinstance(info, dict):
        raise DataError(f"{path}: expected a JSON object at the top level")
    if info.get("kind") != "rec":
        raise DataError(f"{path}: field 'kind' is {info.get('kind')!r}, expected 'rec'")
    if info.get("schema_version") != SCHEMA_VERSION:
        raise DataError(
            f"{path}: field 'schema_version' is {info.get('schema_version')!r}; this edgewise reads "
            f"version {SCHEMA_VERSION}"
        )
    for key in ("n_users", "n_items", "n_interactions"):
        if not isinstance(info.get(key), int) or info[key] < 0:
            raise DataError(f"{path}: field '{key}' must be a whole number, got {info.get(key)!r}")
    return info


def _load_arrays(path: Path, info: dict[str, Any]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"{path}: file is missing")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    for name in ("user", "item", "timestamp", *info.get("arrays", ())):
        if name not in arrays:
            raise DataError(f"{path}: field '{name}' is missing (it holds {', '.join(arrays) or 'nothing'})")
        if name not in ARRAYS:
            raise DataError(f"{path}: unknown field '{name}'")
        if arrays[name].shape != (info["n_interactions"],):
            raise DataError(
                f"{path}: field '{name}' has shape {arrays[name].shape}, expected "
                f"({info['n_interactions']},) (n_interactions in {DATASET_FILE})"
            )
        kind = np.dtype(ARRAYS[name]).kind
        if arrays[name].dtype.kind != kind and not (kind in "if" and arrays[name].dtype.kind in "iuf"):
            raise DataError(
                f"{path}: field '{name}' has dtype {arrays[name].dtype}, expected {ARRAYS[name].__name__}"
            )
    return arrays


def _load_items(
    path: Path, info: dict[str, Any]
) -> tuple[list[str], dict[str, list[str]], np.ndarray | None]:
    if not path.is_file():
        raise DataError(f"{path}: file is missing")
    fields = list(info.get("item_fields", []))
    ids: list[str] = []
    values: dict[str, list[str]] = {k: [] for k in fields}
    durations: list[float] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON: {exc}") from None
            if not isinstance(row, dict) or not isinstance(row.get("id"), str):
                raise DataError(f"{path}:{lineno}: field 'id' is missing or not a string")
            ids.append(row["id"])
            for key in fields:
                if not isinstance(row.get(key), str):
                    raise DataError(f"{path}:{lineno}: field '{key}' is missing or not a string")
                values[key].append(row[key])
            if info.get("item_duration"):
                d = row.get("duration")
                if not isinstance(d, (int, float)) or not np.isfinite(d) or d <= 0:
                    raise DataError(f"{path}:{lineno}: field 'duration' must be a positive number, got {d!r}")
                durations.append(float(d))
    if len(ids) != info["n_items"]:
        raise DataError(f"{path}: {len(ids)} items, expected {info['n_items']} (n_items in {DATASET_FILE})")
    return ids, values, (np.asarray(durations, dtype=np.float32) if info.get("item_duration") else None)


def _load_users(path: Path, info: dict[str, Any]) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: file is missing")
    try:
        users = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: cannot read: {exc}") from None
    if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
        raise DataError(f"{path}: expected a JSON list of user id strings")
    if len(users) != info["n_users"]:
        raise DataError(f"{path}: {len(users)} users, expected {info['n_users']} (n_users in {DATASET_FILE})")
    return users


def load_rec_dataset(path_or_name: str | os.PathLike) -> RecDataset:
    """A DATA directory written by :func:`save_rec_dataset`, or ``"ml-100k"``: MovieLens-100K from
    the copy the ``recbole`` package ships, read in place (never copied)."""
    if str(path_or_name) == "ml-100k" and not Path(path_or_name).exists():
        from edgewise.cloud.data.rec_loaders import load_ml100k

        return load_ml100k()
    root = Path(path_or_name).expanduser()
    info = read_dataset_info(root)
    arrays = _load_arrays(root / INTERACTIONS_FILE, info)
    item_ids, item_fields, item_duration = _load_items(root / ITEMS_FILE, info)
    user_ids = _load_users(root / USERS_FILE, info)
    return RecDataset(
        user_ids=user_ids,
        item_ids=item_ids,
        item_duration=item_duration,
        item_fields=item_fields,
        meta=info.get("meta") or {},
        source=str(root / INTERACTIONS_FILE),
        **{k: arrays.get(k) for k in ARRAYS},
    )


# --- evaluation split ------------------------------------------------------------------------
@dataclass
class LeaveLastOut:
    """RecBole's leave-one-out split (full ranking) over the users with enough interactions.

    Entry ``k`` of every list and array belongs to user index ``users[k]``: ``train[k]`` and
    ``valid_history[k]`` are the sequence without its last two items, ``valid_target[k]`` is the
    second-to-last item, ``test_history[k]`` the sequence without its last item and
    ``test_target[k]`` the last item.
    """

    users: np.ndarray
    train: list[np.ndarray]
    valid_history: list[np.ndarray]
    valid_target: np.ndarray
    test_history: list[np.ndarray]
    test_target: np.ndarray
    n_dropped: int
    min_interactions: int


def leave_last_out(ds: RecDataset, min_interactions: int = 3) -> LeaveLastOut:
    """Split each user's sequence: the last item is the test target, the one before it the
    validation target, the rest is training. Users with fewer than ``min_interactions`` (at least
    3, so that training keeps one item) are dropped and counted."""
    if min_interactions < 3:
        raise ValueError(f"min_interactions must be at least 3 (train, valid, test), got {min_interactions}")
    seqs = ds.sequences()
    users = np.asarray([u for u, s in enumerate(seqs) if len(s) >= min_interactions], dtype=np.int64)
    kept = [seqs[u] for u in users]
    train = [s[:-2] for s in kept]
    return LeaveLastOut(
        users=users,
        train=train,
        valid_history=train,
        valid_target=np.asarray([s[-2] for s in kept], dtype=np.int64),
        test_history=[s[:-1] for s in kept],
        test_target=np.asarray([s[-1] for s in kept], dtype=np.int64),
        n_dropped=len(seqs) - len(users),
        min_interactions=min_interactions,
    )
