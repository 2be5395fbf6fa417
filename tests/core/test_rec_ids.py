"""Semantic IDs and their prefix trie (edgewise.rec_ids): the token layout, constrained-decoding
queries on a table small enough to check by hand, and every way a shipped file can be wrong."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgewise.errors import DataError
from edgewise.rec_ids import PrefixTrie, SemanticIds

# Four items, levels of 3, 2 and 2 codes; items 0 and 1 share (0, 1) and differ by the collision digit.
CODES = [[0, 1, 0], [0, 1, 1], [2, 0, 0], [1, 1, 0]]
SIZES = (3, 2, 2)


@pytest.fixture
def ids() -> SemanticIds:
    return SemanticIds(codes=np.array(CODES), level_sizes=SIZES)


@pytest.fixture
def trie(ids) -> PrefixTrie:
    return PrefixTrie.build(ids)


def test_token_layout(ids):
    assert ids.n_items == 4 and ids.n_levels == 3
    assert ids.level_offsets == (0, 3, 5) and ids.vocab_size == 7
    tokens = ids.tokens()
    assert tokens.dtype == np.int64
    assert tokens.tolist() == [[0, 4, 5], [0, 4, 6], [2, 3, 5], [1, 4, 5]]
    assert np.array_equal(ids.codes_of_tokens(tokens), ids.codes)
    with pytest.raises(ValueError, match="not a level-1 token"):
        ids.codes_of_tokens([[0, 2, 5]])  # 2 is a level-0 token


def test_codes_are_int32_and_read_only(ids):
    assert ids.codes.dtype == np.int32
    with pytest.raises(ValueError):
        ids.codes[0, 0] = 1


def test_trie_layout_by_hand(trie):
    # root; depth 1: (0) (1) (2); depth 2: (0,1) (1,1) (2,0); depth 3: items 0, 1, 3, 2
    assert trie.n_nodes == 11 and trie.n_items == 4
    assert trie.depth.tolist() == [0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3]
    assert trie.children.shape == (11, 3) and trie.children.dtype == np.int32
    assert trie.children[:7].tolist() == [
        [1, 2, 3],
        [-1, 4, -1],
        [-1, 5, -1],
        [6, -1, -1],
        [7, 8, -1],
        [9, -1, -1],
        [10, -1, -1],
    ]
    assert (trie.children[7:] == -1).all()
    assert trie.leaf_item.tolist() == [-1] * 7 + [0, 1, 3, 2]


def test_allowed_gives_exact_masks_per_level(trie):
    assert trie.allowed(np.array([0])).tolist() == [[True, True, True]]
    depth1 = trie.step(np.zeros(3, dtype=np.int64), np.array([0, 1, 2]))
    assert trie.allowed(depth1).tolist() == [[False, True], [False, True], [True, False]]
    depth2 = trie.step(depth1, np.array([1, 1, 0]))
    assert trie.allowed(depth2).tolist() == [[True, True], [True, False], [True, False]]
    # a dead beam allows nothing; the width is the next level's size, not the widest level's
    mask = trie.allowed(np.array([4, -1]))
    assert mask.shape == (2, 2) and mask.tolist() == [[True, True], [False, False]]
    assert trie.allowed(np.array([-1, -1]), level=1).tolist() == [[False, False], [False, False]]


def test_allowed_refuses_mixed_depths_and_complete_ids(trie):
    with pytest.raises(ValueError, match="depths"):
        trie.allowed(np.array([0, 1]))
    with pytest.raises(ValueError, match="complete IDs"):
        trie.allowed(np.array([7]))
    with pytest.raises(ValueError, match="level="):
        trie.allowed(np.array([-1]))


def test_step_leaves_and_invalid_prefixes(trie):
    nodes = trie.step(np.array([0, 0, 0, -1, 0]), np.array([0, 1, 5, 0, -1]))
    assert nodes.tolist() == [1, 2, -1, -1, -1]  # code 5 and code -1 do not exist; -1 stays -1
    assert trie.step(np.array([1]), np.array([0])).tolist() == [-1]  # (0, 0) is no item's prefix
    rows = np.array([[0, 1, 1], [1, 1, 0], [2, 0, 0], [0, 1, 0], [2, 1, 0], [1, 1, 1], [0, 0, 0]])
    assert trie.item_of(rows).tolist() == [1, 3, 2, 0, -1, -1, -1]
    assert trie.is_valid(rows).tolist() == [True, True, True, True, False, False, False]
    assert trie.is_valid(np.array([[2], [0]])).tolist() == [True, True]
    assert trie.is_valid(np.array([[2, 1], [1, 1]])).tolist() == [False, True]
    with pytest.raises(ValueError, match="code rows"):
        trie.item_of(np.array([[0, 1]]))


def test_trie_of_many_random_ids_matches_brute_force():
    rng = np.random.default_rng(3)
    codes = np.unique(rng.integers(0, [6, 5, 4, 3], size=(300, 4)), axis=0)
    codes = codes[rng.permutation(len(codes))]
    ids = SemanticIds(codes=codes, level_sizes=(6, 5, 4, 3))
    trie = PrefixTrie.build(ids)
    assert np.array_equal(trie.item_of(codes), np.arange(len(codes)))
    assert np.array_equal(trie.codes_of_items(), ids.codes)
    prefixes = {tuple(row[:d]) for row in codes.tolist() for d in range(5)}
    assert trie.n_nodes == len(prefixes)
    for depth in range(4):  # the mask of every prefix equals the set of codes that follow it
        rows = sorted({p for p in prefixes if len(p) == depth})
        nodes = trie.walk(np.array(rows, dtype=np.int64).reshape(len(rows), depth))
        expected = np.zeros((len(rows), ids.level_sizes[depth]), dtype=bool)
        for i, row in enumerate(rows):
            for c in range(ids.level_sizes[depth]):
                expected[i, c] = (*row, c) in prefixes
        assert np.array_equal(trie.allowed(nodes), expected)


@pytest.mark.parametrize("suffix", [".json", ".npz"])
def test_save_and_load_round_trip(ids, trie, tmp_path, suffix):
    assert SemanticIds.load(ids.save(tmp_path / f"ids{suffix}")) == ids
    loaded = PrefixTrie.load(trie.save(tmp_path / f"trie{suffix}"))
    for name in ("children", "leaf_item", "depth"):
        assert np.array_equal(getattr(loaded, name), getattr(trie, name))
    loaded.check_matches(ids)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


def test_dict_round_trip_is_json(ids, trie):
    assert SemanticIds.from_dict(json.loads(json.dumps(ids.to_dict()))) == ids
    again = PrefixTrie.from_dict(json.loads(json.dumps(trie.to_dict())))
    assert np.array_equal(again.children, trie.children)


def _ids_dict(**changes):
    data = {"format": "edgewise.semantic_ids", "version": 1, "level_sizes": list(SIZES), "codes": CODES}
    data.update(changes)
    return data


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"codes": [*CODES, [2, 0, 0]]}, r"codes: items 2 and 4 have the same ID \[2, 0, 0\]"),
        ({"codes": [[0, 1, 0], [0, 2, 0]]}, r"codes: item 1 level 1 has code 2, outside 0\.\.1"),
        ({"codes": [[0, 1, -1]]}, r"codes: item 0 level 2 has code -1"),
        ({"codes": [0, 1, 0]}, r"codes: expected 2 dimensions, got shape \(3,\)"),
        ({"codes": [[0, 1], [1, 1]]}, r"codes: 2 levels per row but level_sizes has 3"),
        ({"codes": [[0, 1, 0], [1, 1]]}, r"codes: not a regular array"),
        ({"codes": [[0.0, 1.0, 0.0]]}, r"codes: expected integers, got float64"),
        ({"codes": []}, r"codes: expected 2 dimensions"),
        ({"level_sizes": [3, 0, 2]}, r"level_sizes\[1\]: 0 is outside"),
        ({"level_sizes": [3, "2", 2]}, r"level_sizes\[1\]: expected a positive integer"),
        ({"level_sizes": []}, r"level_sizes: expected a non-empty list"),
        ({"format": "something"}, r"field 'format' is 'something'"),
        ({"version": 7}, r"field 'version' is 7"),
    ],
)
def test_from_dict_names_what_is_wrong(changes, message):
    with pytest.raises(DataError, match=rf"^ids\.json: {message}"):
        SemanticIds.from_dict(_ids_dict(**changes), source="ids.json")


def test_from_dict_names_a_missing_field():
    data = _ids_dict()
    del data["codes"]
    with pytest.raises(DataError, match="field 'codes' is missing"):
        SemanticIds.from_dict(data)


def test_load_refuses_foreign_files(tmp_path):
    (tmp_path / "ids.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        SemanticIds.load(tmp_path / "ids.npz")
    (tmp_path / "ids.json").write_text("[[[" * 100)
    with pytest.raises(DataError, match="nested"):
        SemanticIds.load(tmp_path / "ids.json")
    with pytest.raises(DataError, match="expected a .json or .npz"):
        SemanticIds.load(tmp_path / "ids.txt")
    with pytest.raises(DataError, match="file not found"):
        SemanticIds.load(tmp_path / "missing.npz")


def _corrupt(trie: PrefixTrie, **arrays) -> dict:
    data = trie.to_dict()
    data.update(arrays)
    return data


def test_trie_from_dict_refuses_malformed_tables(trie):
    children = trie.children.copy()
    children[1, 1] = 9  # (0) -> a depth-3 node: skips a level and gives node 9 two parents
    with pytest.raises(DataError, match="one level deeper"):
        PrefixTrie.from_dict(_corrupt(trie, children=children))
    children = trie.children.copy()
    children[4, 1] = -1  # drops item 1's leaf: node 8 has no parent
    with pytest.raises(DataError, match="not a tree"):
        PrefixTrie.from_dict(_corrupt(trie, children=children))
    children = trie.children.copy()
    children[1, 0] = 6  # node 6, (2, 0), gets a second parent
    with pytest.raises(DataError, match="not a tree"):
        PrefixTrie.from_dict(_corrupt(trie, children=children))
    children = trie.children.copy()
    children[1, 2] = 5  # level 1 has only codes 0 and 1
    with pytest.raises(DataError, match="code >= 2"):
        PrefixTrie.from_dict(_corrupt(trie, children=children))
    leaf = trie.leaf_item.copy()
    leaf[8] = 0  # item 0 twice, item 1 nowhere
    with pytest.raises(DataError, match="leaf_item: the items must be 0..3, each once"):
        PrefixTrie.from_dict(_corrupt(trie, leaf_item=leaf))
    with pytest.raises(DataError, match=r"depth: shape \(10,\), expected \(11,\)"):
        PrefixTrie.from_dict(_corrupt(trie, depth=trie.depth[:10]))
    with pytest.raises(DataError, match="children: entries must be -1 or a node index"):
        PrefixTrie.from_dict(_corrupt(trie, children=np.where(trie.children == 10, 11, trie.children)))
    with pytest.raises(DataError, match=r"children: 4 columns, expected max\(level_sizes\) = 3"):
        PrefixTrie.from_dict(
            _corrupt(trie, children=np.pad(trie.children, ((0, 0), (0, 1)), constant_values=-1))
        )


def test_check_matches_catches_a_trie_of_other_ids(ids, trie):
    trie.check_matches(ids)
    swapped = SemanticIds(codes=np.array(CODES)[[0, 1, 3, 2]], level_sizes=SIZES)  # items 2 and 3 swapped
    with pytest.raises(DataError, match=r"item 2's ID \[1, 1, 0\] leads to item 3 \(2 of 4 items wrong\)"):
        trie.check_matches(swapped)
    moved = SemanticIds(codes=np.array([[0, 1, 0], [0, 1, 1], [2, 0, 0], [1, 0, 0]]), level_sizes=SIZES)
    with pytest.raises(DataError, match="leads to no item"):
        trie.check_matches(moved)
    fewer = SemanticIds(codes=np.array(CODES[:3]), level_sizes=SIZES)
    with pytest.raises(DataError, match="holds 4 IDs but there are 3 items"):
        trie.check_matches(fewer)
    wider = SemanticIds(codes=np.array(CODES), level_sizes=(3, 2, 3))
    with pytest.raises(DataError, match=r"level sizes \[3, 2, 2\] do not match"):
        trie.check_matches(wider)


def test_rec_ids_imports_numpy_only():
    code = (
        "import sys, edgewise.rec_ids; "
        "print(sorted(m for m in ('torch', 'sklearn', 'scipy', 'onnxruntime', 'pydantic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_pad_left_keeps_the_most_recent_items_and_pads_on_the_left():
    from edgewise.rec_ids import pad_left

    out = pad_left([[1, 2, 3, 4, 5], [7], []], 3)
    assert out.dtype == np.int64
    assert out.tolist() == [[3, 4, 5], [0, 0, 7], [0, 0, 0]]
