"""Edits of an unsigned rec bundle that a device must refuse (shared by the pipeline and daemon tests)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from edgewise.rec_ids import PrefixTrie, SemanticIds


def rehash(bundle: Path, key: str) -> None:
    """Record the current sha256 and size of ``preprocessing.rec.files[key]`` (an unsigned bundle's
    manifest can be edited; a signed one would then fail its signature)."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    record = manifest["preprocessing"]["rec"]["files"][key]
    path = bundle / record["path"]
    record.update(sha256=hashlib.sha256(path.read_bytes()).hexdigest(), size_bytes=path.stat().st_size)
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=2))


def swap_catalogue(bundle: Path, *, trie_only: bool = False) -> None:
    """Items 0 and 1 swap semantic IDs in both the IDs and the trie, and the manifest records the new
    files: the tables agree with each other and the hashes, not with the model. With ``trie_only``
    the IDs stay, so the trie no longer matches them."""
    ids = SemanticIds.load(bundle / "rec" / "semantic_ids.npz")
    codes = ids.codes.copy()
    codes[[0, 1]] = codes[[1, 0]]
    swapped = SemanticIds(codes, ids.level_sizes)
    if not trie_only:
        swapped.save(bundle / "rec" / "semantic_ids.npz")
        rehash(bundle, "semantic_ids")
    PrefixTrie.build(swapped).save(bundle / "rec" / "prefix_trie.npz")
    rehash(bundle, "prefix_trie")
