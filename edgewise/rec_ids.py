"""Semantic IDs of a generative recommender, and the prefix trie that keeps its decoding valid.

Shared by export and the edge runtime: numpy and the standard library only (never torch).

An item's semantic ID is a short row of codes, one per level (TIGER / OneRec): the first levels
come from residual K-means over item embeddings (:mod:`edgewise.cloud.rec.tokenizer`), the last
level is the collision digit that tells apart items whose other codes are all the same. The model
reads and writes *tokens*, one vocabulary for all levels::

    token = level_offsets[l] + codes[:, l]        vocabulary = sum(level_sizes)

:class:`PrefixTrie` holds every valid ID as a table, so a numpy beam search can mask invalid codes
(:meth:`PrefixTrie.allowed`), advance all beams at once (:meth:`PrefixTrie.step`) and map finished
rows back to items (:meth:`PrefixTrie.item_of`) without a Python loop over items or beams.

Both save to ``.json`` (readable) or ``.npz`` (compact; what a bundle ships), atomically; loading
checks every field and raises :class:`~edgewise.errors.DataError` naming what is wrong.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgewise.errors import DataError
from edgewise.fsutil import atomic_path, write_text_atomic
from edgewise.safejson import load_json

SEMANTIC_IDS_FORMAT = "edgewise.semantic_ids"
PREFIX_TRIE_FORMAT = "edgewise.prefix_trie"
FORMAT_VERSION = 1
CATALOGUE_DIGEST_KEY = "edgewise.rec.catalogue"  # ONNX metadata: catalogue_digest of the training items
MAX_LEVEL_SIZE = 2**31 - 1


# --------------------------------------------------------------------------------------------------
# field checks shared by both classes


def _int_array(value: Any, field: str, ndim: int) -> np.ndarray:
    """``value`` as an int64 array of ``ndim`` dimensions, or a DataError naming ``field``."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{field}: not a regular array ({exc})") from None
    if arr.dtype == object or (arr.size and arr.dtype.kind not in "iu"):
        raise DataError(f"{field}: expected integers, got {arr.dtype} values")
    if arr.ndim != ndim:
        raise DataError(f"{field}: expected {ndim} dimensions, got shape {arr.shape}")
    if arr.size and (arr.min() < -(2**31) or arr.max() >= 2**31):
        raise DataError(f"{field}: values outside the int32 range")
    return arr if arr.size else arr.astype(np.int32)


def _level_sizes(value: Any, field: str = "level_sizes") -> tuple[int, ...]:
    if not isinstance(value, (list, tuple, np.ndarray)) or len(value) == 0:
        raise DataError(f"{field}: expected a non-empty list of positive integers, got {value!r:.80}")
    sizes = []
    for level, size in enumerate(value):
        if isinstance(size, (bool, np.bool_)) or not isinstance(size, (int, np.integer)):
            raise DataError(f"{field}[{level}]: expected a positive integer, got {size!r:.40}")
        if not 1 <= int(size) <= MAX_LEVEL_SIZE:
            raise DataError(f"{field}[{level}]: {int(size)} is outside 1..{MAX_LEVEL_SIZE}")
        sizes.append(int(size))
    return tuple(sizes)


def _check_header(data: Any, fmt: str, where: str) -> None:
    if not isinstance(data, dict):
        raise DataError(f"{where}: expected a mapping, got {type(data).__name__}")
    if data.get("format") != fmt:
        raise DataError(f"{where}: field 'format' is {data.get('format')!r}, expected {fmt!r}")
    if data.get("version") != FORMAT_VERSION:
        raise DataError(f"{where}: field 'version' is {data.get('version')!r}, expected {FORMAT_VERSION}")


def _field(data: dict[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise DataError(f"{where}: field '{key}' is missing")
    return data[key]


def _readonly(arr: np.ndarray, dtype: type, *, copy: bool = True) -> np.ndarray:
    out = np.array(arr, dtype=dtype, order="C", copy=copy or None)
    out.flags.writeable = False
    return out


# --------------------------------------------------------------------------------------------------
# saving and loading (.json or .npz, chosen by the suffix)


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".json", ".npz"):
        raise DataError(f"{path}: expected a .json or .npz file")
    return suffix


def _save(path: str | Path, payload: dict[str, Any]) -> Path:
    """``payload`` (strings, ints, lists of ints and arrays) as JSON or npz, atomically."""
    path = Path(path)
    if _suffix(path) == ".json":
        plain = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in payload.items()}
        return write_text_atomic(path, json.dumps(plain, separators=(",", ":")) + "\n")
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k: np.asarray(v) for k, v in payload.items()})
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return path


def _load(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if suffix == ".json":
        return load_json(path.read_bytes(), source=str(path))
    try:
        with np.load(path, allow_pickle=False) as npz:
            data: dict[str, Any] = {key: npz[key] for key in npz.files}
    except Exception as exc:  # zipfile, ValueError (pickled object arrays), OSError: not our file
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    for key in ("format", "version"):  # stored as 0-d arrays
        if key in data and data[key].ndim == 0:
            data[key] = data[key].item()
    return data


# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class SemanticIds:
    """One unique row of codes per item: ``codes`` int32 (n_items, L), ``codes[:, l]`` in
    ``0..level_sizes[l]-1``; the last level is the collision digit."""

    codes: np.ndarray
    level_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        sizes = _level_sizes(self.level_sizes)
        codes = _int_array(self.codes, "codes", 2)
        _check_codes(codes, sizes)
        object.__setattr__(self, "level_sizes", sizes)
        object.__setattr__(self, "codes", _readonly(codes, np.int32))

    @property
    def n_items(self) -> int:
        return int(self.codes.shape[0])

    @property
    def n_levels(self) -> int:
        return len(self.level_sizes)

    @property
    def level_offsets(self) -> tuple[int, ...]:
        """First token of each level: ``token = level_offsets[l] + code``."""
        return tuple(int(x) for x in np.concatenate([[0], np.cumsum(self.level_sizes)[:-1]]))

    @property
    def vocab_size(self) -> int:
        return int(sum(self.level_sizes))

    def tokens(self) -> np.ndarray:
        """Global token ids, int64 (n_items, L)."""
        return self.codes.astype(np.int64) + np.asarray(self.level_offsets, dtype=np.int64)

    def codes_of_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """Codes (..., L) of token rows (..., L); a token outside its level's range is a ValueError."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if tokens.shape[-1:] != (self.n_levels,):
            raise ValueError(f"expected token rows of {self.n_levels}, got shape {tokens.shape}")
        codes = tokens - np.asarray(self.level_offsets, dtype=np.int64)
        bad = (codes < 0) | (codes >= np.asarray(self.level_sizes))
        if bad.any():
            where = np.argwhere(bad)[0]
            raise ValueError(
                f"token {int(tokens[tuple(where)])} at {tuple(where.tolist())} is not a level-{where[-1]} token"
            )
        return codes.astype(np.int32)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SemanticIds):
            return NotImplemented
        return self.level_sizes == other.level_sizes and np.array_equal(self.codes, other.codes)

    __hash__ = None  # type: ignore[assignment]  # mutable-looking content: compare, never hash

    def __repr__(self) -> str:
        return f"SemanticIds(n_items={self.n_items}, level_sizes={self.level_sizes})"

    # ---- serialisation
    def to_dict(self) -> dict[str, Any]:
        """A JSON-able mapping (``from_dict`` reads it back)."""
        return {
            "format": SEMANTIC_IDS_FORMAT,
            "version": FORMAT_VERSION,
            "level_sizes": list(self.level_sizes),
            "codes": self.codes.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "semantic_ids") -> SemanticIds:
        """Read :meth:`to_dict`'s mapping (lists or arrays); a bad field is a DataError naming it."""
        _check_header(data, SEMANTIC_IDS_FORMAT, source)
        try:
            sizes = _level_sizes(_field(data, "level_sizes", source))
            return cls(codes=_int_array(_field(data, "codes", source), "codes", 2), level_sizes=sizes)
        except DataError as exc:
            msg = str(exc)
            raise DataError(msg if msg.startswith(f"{source}:") else f"{source}: {msg}") from None

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.json or .npz) atomically."""
        payload = self.to_dict()
        payload["codes"] = self.codes
        return _save(path, payload)

    @classmethod
    def load(cls, path: str | Path) -> SemanticIds:
        return cls.from_dict(_load(path), source=str(path))


def catalogue_digest(ids: SemanticIds, item_ids: Sequence[str]) -> str:
    """What a rec model was trained on, as one string: its items' order and their semantic IDs.

    The export writes it into each ONNX graph's metadata (:data:`CATALOGUE_DIGEST_KEY`) and the
    device compares it with the bundle's ``items.json`` and ``semantic_ids.npz``, so a trie and IDs
    that agree with each other but not with the model are refused."""
    h = hashlib.sha256()
    h.update(json.dumps({"level_sizes": list(ids.level_sizes), "items": [str(x) for x in item_ids]}).encode())
    h.update(np.ascontiguousarray(ids.codes, dtype="<i4").tobytes())
    return "sha256:" + h.hexdigest()


def _check_codes(codes: np.ndarray, sizes: tuple[int, ...]) -> None:
    n, n_levels = codes.shape
    if n == 0:
        raise DataError("codes: no items (expected shape (n_items, n_levels) with n_items >= 1)")
    if n_levels != len(sizes):
        raise DataError(f"codes: {n_levels} levels per row but level_sizes has {len(sizes)} ({list(sizes)})")
    bad = (codes < 0) | (codes >= np.asarray(sizes, dtype=np.int64))
    if bad.any():
        item, level = (int(x) for x in np.argwhere(bad)[0])
        raise DataError(
            f"codes: item {item} level {level} has code {int(codes[item, level])}, outside 0..{sizes[level] - 1}"
            f" ({int(bad.any(axis=1).sum())} items have codes out of range)"
        )
    order = np.lexsort(codes.T[::-1])
    same = np.all(codes[order[1:]] == codes[order[:-1]], axis=1)
    if same.any():
        first = int(np.argmax(same))
        a, b = sorted((int(order[first]), int(order[first + 1])))
        raise DataError(
            f"codes: items {a} and {b} have the same ID {codes[a].tolist()}"
            f" ({int(same.sum())} duplicate rows; every item needs a unique ID)"
        )


# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PrefixTrie:
    """Every valid semantic ID as a table of nodes.

    Node 0 is the root; a node at depth ``d`` stands for one prefix of ``d`` codes (nodes are
    numbered depth by depth, prefixes in lexicographic order within a depth). ``children[node,
    code]`` is the node one code deeper, or -1 where no item's ID continues that way; ``leaf_item``
    is the item of a depth-L node and -1 elsewhere; ``depth`` is each node's depth.
    Shapes: children int32 (n_nodes, max(level_sizes)), leaf_item and depth int32 (n_nodes,).
    """

    children: np.ndarray
    leaf_item: np.ndarray
    depth: np.ndarray
    level_sizes: tuple[int, ...]

    def __post_init__(self) -> None:
        sizes = _level_sizes(self.level_sizes)
        children = _int_array(self.children, "children", 2)
        leaf_item = _int_array(self.leaf_item, "leaf_item", 1)
        depth = _int_array(self.depth, "depth", 1)
        _check_trie(children, leaf_item, depth, sizes)
        object.__setattr__(self, "level_sizes", sizes)
        object.__setattr__(self, "children", _readonly(children, np.int32))
        object.__setattr__(self, "leaf_item", _readonly(leaf_item, np.int32))
        object.__setattr__(self, "depth", _readonly(depth, np.int32))

    # ---- building
    @classmethod
    def build(cls, ids: SemanticIds) -> PrefixTrie:
        """The trie of ``ids``: O(n_items * L) numpy work after one lexicographic sort."""
        codes = ids.codes.astype(np.int64)
        n, n_levels = codes.shape
        order = np.lexsort(codes.T[::-1])
        sorted_codes = codes[order]
        # new_prefix[d][i]: sorted row i starts a new prefix of length d+1
        differs = np.ones((n, n_levels), dtype=bool)
        differs[1:] = sorted_codes[1:] != sorted_codes[:-1]
        new_prefix = np.logical_or.accumulate(differs, axis=1)
        node_of_row = np.zeros((n, n_levels + 1), dtype=np.int64)  # column d: node of the length-d prefix
        first = 1
        for d in range(n_levels):
            rank = np.cumsum(new_prefix[:, d]) - 1  # 0.. within depth d+1
            node_of_row[:, d + 1] = first + rank
            first += int(rank[-1]) + 1
        n_nodes = first
        children = np.full((n_nodes, max(ids.level_sizes)), -1, dtype=np.int32)
        depth = np.zeros(n_nodes, dtype=np.int32)
        for d in range(n_levels):
            starts = new_prefix[:, d]
            children[node_of_row[starts, d], sorted_codes[starts, d]] = node_of_row[starts, d + 1]
            depth[node_of_row[starts, d + 1]] = d + 1
        leaf_item = np.full(n_nodes, -1, dtype=np.int32)
        leaf_item[node_of_row[:, n_levels]] = order
        # a tree by construction: skip the checks and copies that a shipped table goes through
        trie = object.__new__(cls)
        for name, value in (("children", children), ("leaf_item", leaf_item), ("depth", depth)):
            object.__setattr__(trie, name, _readonly(value, np.int32, copy=False))
        object.__setattr__(trie, "level_sizes", ids.level_sizes)
        return trie

    # ---- sizes
    @property
    def n_nodes(self) -> int:
        return int(self.children.shape[0])

    @property
    def n_levels(self) -> int:
        return len(self.level_sizes)

    @property
    def n_items(self) -> int:
        return int((self.leaf_item >= 0).sum())

    @property
    def nbytes(self) -> int:
        return int(self.children.nbytes + self.leaf_item.nbytes + self.depth.nbytes)

    # ---- queries (vectorized over a batch of beams)
    def step(self, nodes: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """The node after appending ``codes`` (B,) to ``nodes`` (B,); -1 where that prefix is not
        valid (and -1 stays -1)."""
        nodes = np.asarray(nodes, dtype=np.int64)
        codes = np.asarray(codes, dtype=np.int64)
        nodes, codes = np.broadcast_arrays(nodes, codes)
        ok = (nodes >= 0) & (nodes < self.n_nodes) & (codes >= 0) & (codes < self.children.shape[1])
        out = np.full(nodes.shape, -1, dtype=np.int64)
        out[ok] = self.children[nodes[ok], codes[ok]]
        return out

    def allowed(self, nodes: np.ndarray, level: int | None = None) -> np.ndarray:
        """bool (B, level_sizes[level]): which codes may follow each node. All live nodes must be
        at depth ``level`` (inferred from them when not given); a -1 node allows nothing."""
        nodes = np.asarray(nodes, dtype=np.int64)
        if nodes.ndim != 1:
            raise ValueError(f"expected nodes of shape (B,), got {nodes.shape}")
        live = (nodes >= 0) & (nodes < self.n_nodes)
        depths = np.unique(self.depth[nodes[live]])
        if level is None:
            if depths.size == 0:
                raise ValueError("no live node to infer the level from: pass level=")
            level = int(depths[0])
        if depths.size > 1 or (depths.size == 1 and int(depths[0]) != level):
            raise ValueError(f"nodes at depths {depths.tolist()}, expected all at depth {level}")
        if not 0 <= level < self.n_levels:
            raise ValueError(
                f"level {level}: nodes at depth {self.n_levels} are complete IDs (levels 0..{self.n_levels - 1})"
            )
        width = self.level_sizes[level]
        mask = np.zeros((nodes.shape[0], width), dtype=bool)
        mask[live] = self.children[nodes[live], :width] >= 0
        return mask

    def walk(self, prefixes: np.ndarray) -> np.ndarray:
        """Node of each prefix row (B, d) with d <= L; -1 where the prefix is not valid."""
        prefixes = np.asarray(prefixes, dtype=np.int64)
        if prefixes.ndim != 2 or prefixes.shape[1] > self.n_levels:
            raise ValueError(f"expected prefix rows (B, d) with d <= {self.n_levels}, got {prefixes.shape}")
        nodes = np.zeros(prefixes.shape[0], dtype=np.int64)
        for d in range(prefixes.shape[1]):
            nodes = self.step(nodes, prefixes[:, d])
        return nodes

    def item_of(self, code_rows: np.ndarray) -> np.ndarray:
        """Item index (int64) of each full code row (B, L); -1 where the row is no item's ID."""
        code_rows = np.asarray(code_rows, dtype=np.int64)
        if code_rows.ndim != 2 or code_rows.shape[1] != self.n_levels:
            raise ValueError(f"expected code rows (B, {self.n_levels}), got shape {code_rows.shape}")
        nodes = self.walk(code_rows)
        out = np.full(nodes.shape, -1, dtype=np.int64)
        out[nodes >= 0] = self.leaf_item[nodes[nodes >= 0]]
        return out

    def is_valid(self, code_rows: np.ndarray) -> np.ndarray:
        """bool (B,): each row (B, d), d <= L, is a prefix of some item's ID (a whole ID when d = L)."""
        return self.walk(code_rows) >= 0

    def codes_of_items(self) -> np.ndarray:
        """The ID of every item, int32 (n_items, L), rebuilt from the table (vectorized)."""
        n_levels, n_nodes = self.n_levels, self.n_nodes
        parent = np.full(n_nodes, -1, dtype=np.int64)
        code = np.full(n_nodes, -1, dtype=np.int64)
        src, col = np.nonzero(self.children >= 0)
        dst = self.children[src, col]
        parent[dst], code[dst] = src, col
        leaves = np.flatnonzero(self.leaf_item >= 0)
        out = np.zeros((leaves.size, n_levels), dtype=np.int32)
        node = leaves
        for d in range(n_levels - 1, -1, -1):
            out[:, d] = code[node]
            node = parent[node]
        result = np.zeros_like(out)
        result[self.leaf_item[leaves]] = out
        return result

    def check_matches(self, ids: SemanticIds, *, source: str = "prefix trie") -> None:
        """DataError unless this trie holds exactly ``ids`` (the same level sizes, and every item
        at its own ID and nothing else)."""
        if self.level_sizes != ids.level_sizes:
            raise DataError(
                f"{source}: level sizes {list(self.level_sizes)} do not match the semantic IDs' {list(ids.level_sizes)}"
            )
        found = self.item_of(ids.codes)
        wrong = np.flatnonzero(found != np.arange(ids.n_items))
        if wrong.size:
            i = int(wrong[0])
            got = "no item" if found[i] < 0 else f"item {int(found[i])}"
            raise DataError(
                f"{source}: does not match the semantic IDs: item {i}'s ID {ids.codes[i].tolist()} leads to {got}"
                f" ({wrong.size} of {ids.n_items} items wrong)"
            )
        if self.n_items != ids.n_items:
            raise DataError(f"{source}: holds {self.n_items} IDs but there are {ids.n_items} items")

    # ---- serialisation
    def __repr__(self) -> str:
        return f"PrefixTrie(n_items={self.n_items}, n_nodes={self.n_nodes}, level_sizes={self.level_sizes})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PREFIX_TRIE_FORMAT,
            "version": FORMAT_VERSION,
            "level_sizes": list(self.level_sizes),
            "children": self.children.tolist(),
            "leaf_item": self.leaf_item.tolist(),
            "depth": self.depth.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "prefix_trie") -> PrefixTrie:
        """Read :meth:`to_dict`'s mapping (lists or arrays); a malformed table is a DataError."""
        _check_header(data, PREFIX_TRIE_FORMAT, source)
        try:
            return cls(
                children=_int_array(_field(data, "children", source), "children", 2),
                leaf_item=_int_array(_field(data, "leaf_item", source), "leaf_item", 1),
                depth=_int_array(_field(data, "depth", source), "depth", 1),
                level_sizes=_level_sizes(_field(data, "level_sizes", source)),
            )
        except DataError as exc:
            msg = str(exc)
            raise DataError(msg if msg.startswith(f"{source}:") else f"{source}: {msg}") from None

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (.json or .npz) atomically."""
        payload = self.to_dict()
        payload.update(children=self.children, leaf_item=self.leaf_item, depth=self.depth)
        return _save(path, payload)

    @classmethod
    def load(cls, path: str | Path) -> PrefixTrie:
        return cls.from_dict(_load(path), source=str(path))


def _check_trie(
    children: np.ndarray, leaf_item: np.ndarray, depth: np.ndarray, sizes: tuple[int, ...]
) -> None:
    """Refuse any table that is not a tree of valid IDs (so a query can never index out of it)."""
    n_nodes, width = children.shape
    n_levels = len(sizes)
    if width != max(sizes):
        raise DataError(f"children: {width} columns, expected max(level_sizes) = {max(sizes)}")
    if n_nodes < 1 + n_levels:
        raise DataError(f"children: {n_nodes} nodes cannot hold one ID of {n_levels} levels")
    for name, arr in (("leaf_item", leaf_item), ("depth", depth)):
        if arr.shape != (n_nodes,):
            raise DataError(f"{name}: shape {arr.shape}, expected ({n_nodes},) (one per node of children)")
    if ((children < -1) | (children >= n_nodes)).any():
        raise DataError(f"children: entries must be -1 or a node index 1..{n_nodes - 1}")
    if depth[0] != 0 or ((depth < 0) | (depth > n_levels)).any():
        raise DataError(f"depth: the root (node 0) must be at depth 0 and every node at 0..{n_levels}")
    if (depth[1:] == 0).any() or (np.diff(depth) < 0).any():
        raise DataError("depth: nodes must be numbered depth by depth (root alone at depth 0)")
    live = children >= 0
    # nodes are depth-ordered: each depth is one block of rows; past a level's size (and in the
    # leaves' rows) every entry is -1
    bounds = np.searchsorted(depth, np.arange(n_levels + 2))
    for d in range(n_levels + 1):
        size = sizes[d] if d < n_levels else 0
        if live[bounds[d] : bounds[d + 1], size:].any():
            what = (
                "a leaf has children"
                if d == n_levels
                else f"a depth-{d} node has a child for a code >= {size}"
            )
            raise DataError(f"children: {what}")
    src, _ = np.nonzero(live)
    dst = children[live].astype(np.intp)
    if (depth[dst] != depth[src] + 1).any():
        raise DataError("children: a child is not exactly one level deeper than its parent")
    n_parents = np.bincount(dst, minlength=n_nodes)
    if n_parents[0] != 0 or (n_parents[1:] != 1).any():
        raise DataError("children: not a tree (every node but the root must have exactly one parent)")
    is_leaf = depth == n_levels
    if ((leaf_item >= 0) != is_leaf).any() or (leaf_item[~is_leaf] != -1).any():
        raise DataError(
            f"leaf_item: must be an item index exactly at depth-{n_levels} nodes and -1 elsewhere"
        )
    items = np.sort(leaf_item[is_leaf])
    if not np.array_equal(items, np.arange(items.size)):
        raise DataError(f"leaf_item: the items must be 0..{items.size - 1}, each once")
    if not live[: bounds[n_levels]].any(axis=1).all():
        raise DataError("children: a node above the last level has no child (a dead-end prefix)")


def pad_left(rows: Sequence[np.ndarray | list[int]], length: int) -> np.ndarray:
    """(len(rows), length) int64: each row of 1-based item indices cut to its last ``length`` and
    left-padded with 0, the layout every recommender (and its exported graphs) reads."""
    out = np.zeros((len(rows), length), dtype=np.int64)
    for r, row in enumerate(rows):
        row = np.asarray(row, dtype=np.int64)[-length:] if length else np.zeros(0, dtype=np.int64)
        if row.size:
            out[r, length - row.size :] = row
    return out
