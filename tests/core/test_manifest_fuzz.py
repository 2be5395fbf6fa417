"""Property-based fuzzing of the bundle manifest parser: any bytes give a Manifest or a
BundleError naming the problem, never another exception. A small sample runs here;
``benchmarks/fuzz_parsers.py`` runs 10^5 cases."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgewise.bundle import BundleError, parse_manifest
from tests.core.test_bundle import write_ser
from tests.edge.telemetry.strategies import manifest_bytes, nested


@pytest.fixture(scope="module")
def seed(tmp_path_factory) -> dict:
    """A valid manifest, as the bundle writer makes it: the fuzzer's starting point."""
    bundle = write_ser(tmp_path_factory.mktemp("fuzz") / "out", archive=False)
    return json.loads((bundle / "manifest.json").read_bytes())


def test_the_seed_parses(seed):
    assert parse_manifest(json.dumps(seed).encode()).name == "ser-tiny"


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_manifest_bytes_give_a_manifest_or_a_bundle_error(seed, data):
    raw = data.draw(manifest_bytes(seed))
    try:
        manifest = parse_manifest(raw)
    except BundleError as exc:
        assert str(exc).startswith("manifest.json")
    else:
        assert parse_manifest(manifest.to_json_bytes()) == manifest


def test_a_deeply_nested_manifest_is_a_bundle_error():
    """json.loads raises RecursionError at ~1000 levels; the depth is bounded before it runs."""
    with pytest.raises(BundleError, match="manifest.json"):
        parse_manifest(nested(5000).encode())
