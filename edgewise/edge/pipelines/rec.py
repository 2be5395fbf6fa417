"""Generative recommendation on the device: a history of item ids in, the next items out.

Two graphs from the bundle (``rec`` task), each picked by the device profile (``task_runtimes.rec``,
else ``runtimes``), run in onnxruntime; the beam search between them is numpy:

- ``rec_context``: ``history`` (B, T) int64 -> per K/V group g the history's keys and values
  ``k_g``, ``v_g`` (B, H_kv, T, head_dim) and the additive cross-attention mask ``mask_g``
  (B, H, 1, T): recency bias and padding. Run once per request.
- ``rec_decoder``: one decoding step with a KV cache: ``tokens`` (B, Q) (the codes chosen at the
  previous level, as global tokens; ignored at level 0, where the decoder reads BOS), ``level``
  (1,), the context tensors, and per decoder layer ``past_k_i``/``past_v_i`` (B*Q, H, P, head_dim),
  P = level (empty at level 0) -> ``logits`` (B, Q, vocab) and ``present_k_i``/``present_v_i``
  (P + 1 positions). Run once per semantic-ID level.

:func:`beam_search` is PyTorch's :func:`edgewise.cloud.models.rec.beam.beam_search` in numpy: at
every level each beam's next code is limited to its node's children in the prefix trie
(:class:`edgewise.rec_ids.PrefixTrie`) and the level's softmax runs over those children only (as
training's constrained loss), so every finished beam is an item and its score the log-probability
the model gives it; the KV cache is reordered with the beams. Histories are 1-based item indices cut to the most recent ``max_len``
and left-padded with 0 to ``max_len``, exactly as training's evaluation feeds PyTorch, so the
device ranks what ``edgewise eval rec`` ranked.

What :meth:`RecPipeline.recommend` does with imperfect input (README, "edgewise recommend"):

- unknown item ids are dropped and listed in the result's ``unknown``; a history in which *no* id
  is known is an error (:class:`RecInputError`) naming them (it is most likely ids from another
  catalogue);
- an empty history gets the most popular items of the training data (``fallback: "popular"``,
  scores null): a new user is a normal case on a device;
- a history longer than ``max_len`` keeps its most recent ``max_len`` items (``truncated`` says
  how many were left out); repeated items are allowed and kept;
- ``k`` larger than ``beam``, ``k`` or ``beam`` below 1, ``beam`` above :data:`MAX_BEAM`: an error.

numpy and the runtimes only (never torch): the device imports this module.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.bundle import Bundle, BundleError, bundle_file, load_bundle
from edgewise.devices import DeviceProfile
from edgewise.edge.command_args import check_command_args
from edgewise.edge.pipelines import open_task_bundle
from edgewise.edge.runtime import ModelRuntime
from edgewise.errors import ConfigError, DataError
from edgewise.rec_ids import CATALOGUE_DIGEST_KEY, PrefixTrie, SemanticIds, catalogue_digest, pad_left

ROLES = ("rec_context", "rec_decoder")
FILES = ("semantic_ids", "prefix_trie", "items")  # preprocessing.rec.files: what the pipeline reads
MAX_BEAM = 256
MAX_HISTORY_IDS = 10_000  # ids one request may carry (longer histories: send the most recent)
RECOMMEND_ARGS = {"history", "k", "beam", "candidates"}
CANDIDATES = ("device", "cloud")  # whose candidate set: "cloud" asks the cloud (edgewise.edge.offload)


class RecInputError(DataError):
    """A request the recommender cannot answer: no known item in the history, bad k or beam."""


@dataclass(frozen=True)
class RecSettings:
    """What the bundle's ``preprocessing.rec`` says about the model."""

    max_len: int
    level_sizes: tuple[int, ...]
    n_items: int
    beam: int
    top_k: int
    layers: int  # decoder layers (one past_k/past_v pair each)
    heads: int  # self-attention heads of the decoder
    head_dim: int
    groups: int  # K/V groups of the context (k_g, v_g, mask_g each)
    files: dict[str, dict[str, Any]]

    @classmethod
    def from_manifest(cls, pre: dict[str, Any], where: str) -> RecSettings:
        try:
            rec = pre["rec"]
            dec = rec["decoder"]
            settings = cls(
                max_len=int(rec["max_len"]),
                level_sizes=tuple(int(s) for s in rec["level_sizes"]),
                n_items=int(rec["n_items"]),
                beam=int(rec["beam"]),
                top_k=int(rec["top_k"]),
                layers=int(dec["layers"]),
                heads=int(dec["heads"]),
                head_dim=int(dec["head_dim"]),
                groups=int(dec["groups"]),
                files={name: dict(rec["files"][name]) for name in FILES},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: preprocessing.rec is missing or malformed ({exc!r})") from None
        if (
            min(settings.max_len, settings.n_items, settings.layers, settings.groups, *settings.level_sizes)
            < 1
        ):
            raise ConfigError(f"{where}: preprocessing.rec has a size below 1 ({settings})")
        return settings

    @property
    def level_offsets(self) -> tuple[int, ...]:
        return tuple(int(x) for x in np.concatenate([[0], np.cumsum(self.level_sizes)[:-1]]))

    @property
    def vocab(self) -> int:
        return int(sum(self.level_sizes))


@dataclass(frozen=True)
class RecTables:
    """The bundle's item table, semantic IDs and prefix trie, checked against each other and the model."""

    ids: SemanticIds
    trie: PrefixTrie
    item_ids: list[str]
    titles: list[str]
    popular: np.ndarray  # 0-based item indices, most interactions in the training data first
    index: dict[str, int]  # original item id -> 1-based index (the model's history input)

    @classmethod
    def load(cls, bundle: Bundle, settings: RecSettings) -> RecTables:
        paths = {
            name: bundle_file(bundle, settings.files[name], f"preprocessing.rec.files.{name}")
            for name in FILES
        }
        ids = SemanticIds.load(paths["semantic_ids"])
        trie = PrefixTrie.load(paths["prefix_trie"])
        if ids.level_sizes != settings.level_sizes:
            raise BundleError(
                f"{paths['semantic_ids']}: level sizes {list(ids.level_sizes)}, the model's are "
                f"{list(settings.level_sizes)} (preprocessing.rec.level_sizes)"
            )
        trie.check_matches(ids, source=str(paths["prefix_trie"]))
        try:
            table = json.loads(paths["items"].read_text())
            item_ids = [str(x) for x in table["ids"]]
            titles = [str(x) for x in table["titles"]]
            popular = np.asarray(table["popular"], dtype=np.int64)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{paths['items']}: not an item table ({exc!r})") from None
        sizes = {"semantic IDs": ids.n_items, "item ids": len(item_ids), "titles": len(titles)}
        if any(n != settings.n_items for n in sizes.values()):
            raise BundleError(
                f"{bundle.root.name}: the model knows {settings.n_items} items; {sizes} (preprocessing.rec.n_items)"
            )
        if len(set(item_ids)) != len(item_ids):
            raise BundleError(f"{paths['items']}: item ids are not unique")
        if popular.ndim != 1 or popular.size == 0 or popular.min() < 0 or popular.max() >= settings.n_items:
            raise BundleError(f"{paths['items']}: 'popular' must list item indices 0..{settings.n_items - 1}")
        index = {item: i + 1 for i, item in enumerate(item_ids)}
        return cls(ids, trie, item_ids, titles, popular, index)


# --------------------------------------------------------------------------------------------------
# the beam search


def log_softmax(x: np.ndarray) -> np.ndarray:
    """float32 log-softmax over the last axis (as torch computes it)."""
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def top_indices(x: np.ndarray, width: int) -> np.ndarray:
    """(B, width) indices of each row's ``width`` largest values, largest first (ties: lower index)."""
    if width < x.shape[1]:
        part = np.argpartition(-x, width - 1, axis=1)[:, :width]
        part.sort(axis=1)  # ties keep index order through the stable sort below
        order = np.argsort(-np.take_along_axis(x, part, axis=1), axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1)
    return np.argsort(-x, axis=1, kind="stable")


@dataclass
class Beams:
    """What :func:`beam_search` found: per history the beams, best first."""

    items: np.ndarray  # (B, W) 0-based item indices; -1: a beam that is no item (no finite score)
    scores: np.ndarray  # (B, W) summed log-probabilities, float32
    codes: np.ndarray  # (B, W, L)
    context_ms: float
    decode_ms: float


def beam_search(
    context: Any, decoder: Any, history: np.ndarray, trie: PrefixTrie, settings: RecSettings, beam: int
) -> Beams:
    """Top ``beam`` semantic IDs for each history (B, T) of 1-based indices (0: left padding).

    ``context`` and ``decoder`` have ``run(inputs) -> outputs`` and ``output_names`` (an
    :class:`~edgewise.edge.backends.OnnxBackend` with ``single_io=False``, or anything that acts
    like one)."""
    history = np.ascontiguousarray(history, dtype=np.int64)
    b = history.shape[0]
    t0 = time.perf_counter()
    ctx = dict(zip(context.output_names, context.run({"history": history})))
    t1 = time.perf_counter()
    presents = [f"present_{kv}_{i}" for i in range(settings.layers) for kv in ("k", "v")]
    empty = np.zeros((b, settings.heads, 0, settings.head_dim), dtype=np.float32)
    past = {name.replace("present", "past"): empty for name in presents}
    scores = np.zeros((b, 1), dtype=np.float32)
    nodes = np.zeros((b, 1), dtype=np.int64)  # the root
    codes = np.zeros((b, 1, 0), dtype=np.int64)
    tokens = np.zeros((b, 1), dtype=np.int64)  # level 0 reads BOS: the tokens are ignored
    rows = np.arange(b)[:, None]
    children = trie.children
    for level, (size, offset) in enumerate(zip(settings.level_sizes, settings.level_offsets)):
        feed = {"tokens": tokens, "level": np.array([level], dtype=np.int64), **ctx, **past}
        out = dict(zip(decoder.output_names, decoder.run(feed)))
        q_old = out["logits"].shape[1]
        # the trie's table read directly (PrefixTrie.allowed and .step, without their checks: every
        # node here came from the table, -1 for a beam off it), a tenth of a millisecond a level
        allowed = (children[np.maximum(nodes, 0), :size] >= 0) & (nodes >= 0)[..., None]
        logits = np.where(allowed, out["logits"][..., offset : offset + size], np.float32(-np.inf))
        with np.errstate(invalid="ignore"):  # a beam with no allowed code: all -inf (NaN, masked below)
            logp = np.where(allowed, log_softmax(logits.astype(np.float32)), np.float32(-np.inf))
        total = (scores[..., None] + logp).reshape(b, -1)  # (B, Q * size)
        width = min(beam, total.shape[1])
        index = top_indices(total, width)
        scores = np.take_along_axis(total, index, axis=1)
        parents, chosen = index // size, index % size
        nodes = np.take_along_axis(nodes, parents, axis=1)
        nodes = np.where(nodes >= 0, children[np.maximum(nodes, 0), chosen], -1)
        codes = np.concatenate([np.take_along_axis(codes, parents[..., None], axis=1), chosen[..., None]], 2)
        keep = (rows * q_old + parents).reshape(-1)  # each new beam takes its parent's cache
        past = {name.replace("present", "past"): out[name][keep] for name in presents}
        tokens = chosen + offset
    t2 = time.perf_counter()
    live = (nodes >= 0) & np.isfinite(scores)
    items = np.where(live, trie.leaf_item[np.clip(nodes, 0, None)], -1).astype(np.int64)
    return Beams(items, scores, codes, (t1 - t0) * 1000, (t2 - t1) * 1000)


# --------------------------------------------------------------------------------------------------
# the pipeline


def check_request(args: Any) -> tuple[list[str], Any, Any]:
    """(history ids, k, beam) of a ``recommend`` request (the daemon's command args; k and beam None
    when not given); RecInputError naming what is wrong."""
    args = check_command_args(
        "recommend", args, RECOMMEND_ARGS, {"history": "a list of item ids, oldest first"}, RecInputError
    )
    history = args["history"]
    if not isinstance(history, list) or not all(
        isinstance(x, (str, int)) and not isinstance(x, bool) for x in history
    ):
        raise RecInputError("recommend: args.history must be a list of item ids (strings), oldest first")
    if args.get("candidates", "device") not in CANDIDATES:
        raise RecInputError(
            f"recommend: args.candidates must be one of {list(CANDIDATES)}, got {args['candidates']!r}"
        )
    return [str(x) for x in history], args.get("k"), args.get("beam")


class RecPipeline:
    task = "rec"
    input_kind = "history"

    def __init__(
        self,
        backends: dict[str, Any],
        settings: RecSettings,
        tables: RecTables,
        runtimes: dict[str, ModelRuntime] | None = None,
    ) -> None:
        """``backends``: role -> a loaded graph with ``run(inputs) -> outputs`` (the export's checks
        pass files directly; :meth:`from_bundle` picks them through the device profile)."""
        self.settings = settings
        self.tables = tables
        self.runtimes = runtimes or {}
        self.context = backends["rec_context"]
        self.decoder = backends["rec_decoder"]
        self._lock = threading.Lock()  # one request at a time through the sessions
        check_vocab(self.decoder, settings)
        self.catalogue_checked = check_catalogue(backends, tables)

    @classmethod
    def from_bundle(
        cls,
        bundle: str | Path | Bundle,
        profile: DeviceProfile,
        *,
        public_key: str | Path | None = None,
        threads: int | None = None,
        **_: Any,
    ) -> RecPipeline:
        bundle = open_task_bundle(bundle, cls.task, "a recommender", public_key=public_key)
        settings, tables = open_tables(bundle)
        check_manifest_vocab(bundle, settings)
        runtimes = {
            role: ModelRuntime.open(bundle, profile, role=role, threads=threads, single_io=False)
            for role in ROLES
        }
        return cls({role: rt.backend for role, rt in runtimes.items()}, settings, tables, runtimes)

    @classmethod
    def open_precision(cls, bundle: str | Path | Bundle, precision: str, threads: int | None = None):
        """The bundle's two ONNX graphs of ``precision``, opened directly (not through a device
        profile, and whatever their gate said: benchmarks measure every artifact). Returns the
        pipeline and the artifacts it opened, by role."""
        from edgewise.devices import RuntimeChoice
        from edgewise.edge.runtime import open_backend

        if not isinstance(bundle, Bundle):
            bundle = load_bundle(bundle)
        arts = {}
        for role in ROLES:
            found = bundle.artifacts(role, format="onnx", precision=precision)
            if not found:
                raise BundleError(f"{bundle.root.name}: no onnx {precision} {role}")
            arts[role] = found[0]
        settings, tables = open_tables(bundle)
        choice = RuntimeChoice(format="onnx", precision=precision)
        backends = {r: open_backend(bundle, a, choice, threads, single_io=False) for r, a in arts.items()}
        return cls(backends, settings, tables), arts

    # -- requests ---------------------------------------------------------------------------------

    def check_k_beam(self, k: Any, beam: Any) -> tuple[int, int]:
        for name, value in (("k", k), ("beam", beam)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise RecInputError(f"{name} must be an integer, got {value!r}")
        if not 1 <= k <= MAX_BEAM:
            raise RecInputError(f"k must be between 1 and {MAX_BEAM}, got {k}")
        if not 1 <= beam <= MAX_BEAM:
            raise RecInputError(f"beam must be between 1 and {MAX_BEAM}, got {beam}")
        if not 1 <= k <= beam:
            raise RecInputError(
                f"k must be between 1 and the beam width ({beam}), got {k}: raise beam or lower k"
            )
        return k, beam

    def recommend(
        self, history_item_ids: list[str], k: int | None = None, beam: int | None = None
    ) -> dict[str, Any]:
        """The top ``k`` next items for a history (original item ids, oldest first), by beam search
        of width ``beam`` (default: the bundle's); see the module docstring for imperfect input."""
        t0 = time.perf_counter()
        s = self.settings
        k = s.top_k if k is None else k
        beam = (
            max(s.beam, k if isinstance(k, int) and not isinstance(k, bool) else 0) if beam is None else beam
        )
        k, beam = self.check_k_beam(k, beam)
        if not isinstance(history_item_ids, (list, tuple)):
            raise RecInputError(f"history must be a list of item ids, got {type(history_item_ids).__name__}")
        if len(history_item_ids) > MAX_HISTORY_IDS:
            raise RecInputError(
                f"history has {len(history_item_ids)} ids; the limit is {MAX_HISTORY_IDS} (the model reads the "
                f"most recent {s.max_len})"
            )
        ids = [str(x) for x in history_item_ids]
        known = [self.tables.index[x] for x in ids if x in self.tables.index]
        unknown = list(dict.fromkeys(x for x in ids if x not in self.tables.index))
        result: dict[str, Any] = {
            "k": k,
            "beam": beam,
            "unknown": unknown[:50],
            "unknown_count": len(unknown),
        }
        if ids and not known:
            shown = ", ".join(repr(x) for x in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
            raise RecInputError(
                f"none of the {len(ids)} history item ids is in this bundle's catalogue ({shown}); "
                f"it knows {s.n_items} items such as {self.tables.item_ids[0]!r}"
            )
        truncated = max(0, len(known) - s.max_len)
        result.update(history_used=min(len(known), s.max_len), truncated=truncated)
        if not known:  # an empty history: a new user gets what most users watched
            picks = self.tables.popular[:k]
            result.update(self._items(picks, None), fallback="popular")
            ms = (time.perf_counter() - t0) * 1000
            result["timings"] = {"context_ms": 0.0, "decode_ms": 0.0, "total_ms": round(ms, 3)}
            return result
        with self._lock:
            found = beam_search(
                self.context, self.decoder, pad_left([known], s.max_len), self.tables.trie, s, beam
            )
        live = found.items[0] >= 0
        picks, scores = found.items[0][live][:k], found.scores[0][live][:k]
        result.update(self._items(picks, scores), fallback=None)
        result["timings"] = {
            "context_ms": round(found.context_ms, 3),
            "decode_ms": round(found.decode_ms, 3),
            "total_ms": round((time.perf_counter() - t0) * 1000, 3),
        }
        return result

    def _items(self, picks: np.ndarray, scores: np.ndarray | None) -> dict[str, Any]:
        return {
            "items": [self.tables.item_ids[int(i)] for i in picks],
            "titles": [self.tables.titles[int(i)] for i in picks],
            "scores": None if scores is None else [round(float(x), 6) for x in scores],
        }

    # -- the daemon's pipeline interface ----------------------------------------------------------

    def process(self, item: Any) -> dict[str, Any]:
        """A ``recommend`` command's args (``{"history": [...], "k": 10, "beam": 20}``) -> the result."""
        history, k, beam = check_request(item)
        return self.recommend(history, k, beam)

    def self_test(self) -> None:
        """One request with the most popular item as the history: finite scores for k items."""
        first = self.tables.item_ids[int(self.tables.popular[0])]
        k = min(self.settings.top_k, self.settings.beam)
        result = self.recommend([first], k=k, beam=self.settings.beam)
        if not result["items"] or not np.isfinite(np.asarray(result["scores"], dtype=np.float64)).all():
            raise DataError(f"self-test: no finite recommendations for the history [{first!r}]: {result}")

    def describe(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "backend": ", ".join(f"{role} {rt.artifact.path}" for role, rt in self.runtimes.items())
            or "files",
            "items": self.settings.n_items,
            "max_len": self.settings.max_len,
            "beam": self.settings.beam,
            "catalogue_checked": self.catalogue_checked,
            **{role: rt.describe() for role, rt in self.runtimes.items()},
        }

    def close(self) -> None:
        self.runtimes.clear()


def open_tables(bundle: Bundle) -> tuple[RecSettings, RecTables]:
    """The settings and checked tables of a rec bundle (no graph is loaded)."""
    settings = RecSettings.from_manifest(bundle.manifest.preprocessing, str(bundle.root / "manifest.json"))
    return settings, RecTables.load(bundle, settings)


def check_manifest_vocab(bundle: Bundle, settings: RecSettings) -> None:
    """The decoder the manifest declares must score the trie's vocabulary."""
    logits = next((o for o in bundle.model("rec_decoder").outputs if o.name == "logits"), None)
    if logits is None or logits.shape[-1:] != [settings.vocab]:
        raise BundleError(
            f"{bundle.root / 'manifest.json'}: models.rec_decoder must output logits over {settings.vocab} "
            f"tokens (sum of level_sizes {list(settings.level_sizes)}), it declares {logits}"
        )


def check_vocab(decoder: Any, settings: RecSettings) -> None:
    """The loaded decoder graph's logits must be as wide as the vocabulary of the semantic IDs."""
    session = getattr(decoder, "session", None)
    if session is None:
        return
    out = {o.name: o.shape for o in session.get_outputs()}
    width = out.get("logits", [None])[-1]
    if isinstance(width, int) and width != settings.vocab:
        raise BundleError(
            f"{getattr(decoder, 'path', 'rec_decoder')}: logits over {width} tokens, the semantic IDs and trie "
            f"have {settings.vocab} (level sizes {list(settings.level_sizes)})"
        )


def check_catalogue(backends: dict[str, Any], tables: RecTables) -> bool:
    """Each ONNX graph records the catalogue it was trained on (items' order and semantic IDs,
    :func:`edgewise.rec_ids.catalogue_digest`); the bundle's tables must be that catalogue. Returns
    whether any graph carried the record (bundles exported before it did not, and are accepted)."""
    have = catalogue_digest(tables.ids, tables.item_ids)
    checked = False
    for role, backend in backends.items():
        session = getattr(backend, "session", None)
        if session is None:
            continue
        want = session.get_modelmeta().custom_metadata_map.get(CATALOGUE_DIGEST_KEY)
        if want is None:
            continue
        if want != have:
            raise BundleError(
                f"{getattr(backend, 'path', role)}: the model was trained on another catalogue than the "
                f"bundle's rec/items.json and rec/semantic_ids.npz (item order or semantic IDs differ: "
                f"{want[:19]}... expected, {have[:19]}... found); export the bundle again from the run"
            )
        checked = True
    return checked
