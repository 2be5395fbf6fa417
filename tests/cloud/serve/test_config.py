"""The serve config: defaults that are secure, errors that name the field, tokens kept as digests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edgewise.cloud.serve.auth import TokenSet, hash_token, new_token, read_secret, write_secret
from edgewise.cloud.serve.config import TLSConfig, check_files, load_serve_config
from edgewise.errors import ConfigError

BUNDLE = {"id": "ser", "task": "ser", "bundle": "bundles/ser"}


def load(data: dict, base: Path | None = None):
    return load_serve_config(data, base=base or Path("/srv/edgewise"))


def test_defaults_are_tls_and_tokens_from_the_config_folder(tmp_path):
    path = tmp_path / "cloud" / "config.yaml"
    path.parent.mkdir()
    path.write_text("models:\n  - {id: ser, task: ser, bundle: bundles/ser}\n")
    config = load_serve_config(path)
    assert config.engine == "embedded" and config.host == "127.0.0.1" and config.scheme == "https"
    assert config.tls == TLSConfig(cert=path.parent / "tls/server.pem", key=path.parent / "tls/server.key")
    assert config.auth.tokens_file == path.parent / "tokens.sha256"
    assert config.models[0].bundle == path.parent / "bundles/ser" and config.models[0].device == "x86-local"
    assert config.max_request_bytes == 10 * 1024 * 1024


ERRORS = [
    ({"models": [BUNDLE], "port": 70000}, "field 'port'"),
    ({"models": [BUNDLE], "colour": "red"}, "unknown field 'colour'"),
    ({"models": [BUNDLE], "host": "0.0.0.0", "tls": "none"}, "tls: none is allowed on a loopback host only"),
    ({"models": [BUNDLE], "host": "10.0.0.5", "auth": "none"}, "auth: none is allowed on a loopback host only"),
    ({"models": []}, "serves the models listed in 'models' (or a fleet or registry section): none given"),
    ({"models": [{**BUNDLE, "run": "runs/ser"}]}, "give exactly one source"),
    ({"models": [{"id": "voice", "task": "tts", "run": "runs/tts"}]}, "a tts model is served from bundle, not run"),
    ({"models": [{"id": "keye", "task": "chat", "bundle": "b"}]}, "a chat model is served from upstream"),
    ({"models": [{"id": "k", "task": "chat", "upstream": "http://gpu.example:8000"}]}, "plain http is allowed for a loopback upstream only"),
    ({"models": [{"id": "k", "task": "chat", "upstream": "ftp://gpu"}]}, "models.0.upstream"),
    ({"models": [BUNDLE, BUNDLE]}, "model ids must be unique: ser"),
    ({"models": [{**BUNDLE, "task": "video"}]}, "field 'models.0.task'"),
    ({"models": [{**BUNDLE, "id": "bad id"}]}, "field 'models.0.id'"),
    ({"engine": "vllm"}, "engine vllm needs a vllm section"),
    ({"engine": "vllm", "vllm": {"preset": "keye-vl-8b"}}, "give vllm.api_key_file"),
    ({"engine": "vllm", "auth": "none", "vllm": {}}, "give vllm.preset"),
    ({"engine": "vllm", "auth": "none", "vllm": {"preset": "onerec-8b", "nodes": 2, "distributed_executor_backend": "mp"}},
     "distributed_executor_backend must be ray"),
    ({"engine": "ray", "models": [BUNDLE], "ray": {"num_replicas": 0}}, "field 'ray.num_replicas'"),
    ({"models": [BUNDLE], "max_request_bytes": 10}, "field 'max_request_bytes'"),
    ({"registry": {"root": "r"}}, "field 'registry.public_key'"),
    ({"registry": {"public_key": "f.pub", "public_url": "http://cloud.example"}}, "devices download over https only"),
    ({"host": "0.0.0.0", "registry": {"public_key": "f.pub"}}, "registry.public_url: the server listens on every address"),
    ({"fleet": {"stale_after_s": 0}}, "field 'fleet.stale_after_s'"),
]  # fmt: skip


@pytest.mark.parametrize("data, message", ERRORS, ids=[m[:40] for _, m in ERRORS])
def test_errors_name_the_field(data, message):
    with pytest.raises(ConfigError) as info:
        load(data)
    assert message in str(info.value)


def test_plain_http_without_tokens_is_fine_on_loopback():
    config = load({"models": [BUNDLE], "tls": "none", "auth": "none", "host": "::1"})
    assert config.scheme == "http" and config.auth == "none"


def test_fleet_and_registry_paths_are_relative_to_the_config(tmp_path):
    config = load({"fleet": {}, "registry": {"public_key": "keys/fleet.pub"}}, base=tmp_path)
    assert config.fleet.store == str(tmp_path / "fleet.sqlite")
    assert (
        config.registry.root == tmp_path / "registry"
        and config.registry.public_key == tmp_path / "keys/fleet.pub"
    )
    assert load({"fleet": {"store": "postgresql://db/fleet"}}).fleet.store == "postgresql://db/fleet"
    with pytest.raises(ConfigError, match="registry.public_key: .*keys/fleet.pub not found"):
        check_files(config.model_copy(update={"tls": "none", "auth": "none"}))


def test_missing_files_are_named_with_a_hint(tmp_path):
    config = load({"models": [BUNDLE]}, base=tmp_path)
    with pytest.raises(ConfigError) as info:
        check_files(config, "cloud.yaml")
    text = str(info.value)
    for field in ("tls.cert", "tls.key", "auth.tokens_file", "models[0].bundle (ser)"):
        assert f"cloud.yaml: {field}:" in text
    assert "serve-init" in text


def test_tokens_are_checked_against_their_digests(tmp_path):
    token, other = new_token(), new_token()
    path = tmp_path / "tokens.sha256"
    path.write_text(f"# comment\n\n{hash_token(token)}\n{hash_token(other).upper()}  # a second client\n")
    tokens = TokenSet.load(path)
    assert tokens.accepts(f"Bearer {token}") and tokens.accepts(f"bearer {other}")
    for header in (None, "", token, f"Basic {token}", f"Bearer {token}x", "Bearer ", f"Bearer {'a' * 5000}"):
        assert not tokens.accepts(header)


def test_a_plain_token_in_the_tokens_file_is_refused(tmp_path):
    path = tmp_path / "tokens.sha256"
    path.write_text(f"{hash_token('a')}\n{new_token()}\n")
    with pytest.raises(
        ConfigError, match=r"line 2: expected the sha256 hex digest .* never store a plain token"
    ):
        TokenSet.load(path)
    path.write_text("# nothing\n")
    with pytest.raises(ConfigError, match="no token digests"):
        TokenSet.load(path)


def test_secrets_are_written_0600_and_refused_when_others_can_read_them(tmp_path):
    path = write_secret(tmp_path / "client" / "token", "s3cret\n")
    assert path.stat().st_mode & 0o777 == 0o600
    assert read_secret(path, "token") == "s3cret"
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by others"):
        read_secret(path, "token")


def test_serving_modules_import_no_torch(serve_deps):
    code = (
        "import sys; import edgewise.cloud.serve.app, edgewise.cloud.serve.commands, edgewise.cloud.serve.backends,"
        " edgewise.cloud.serve.mqtt_bridge, edgewise.cloud.serve.vllm, edgewise.cloud.serve.ray_serve;"
        " assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
