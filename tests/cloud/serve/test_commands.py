"""``serve-init`` writes a config folder that is secure as written; ``serve`` refuses, with a message
and before opening its port, what it cannot serve."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest
import yaml

from edgewise.cloud.serve.auth import TokenSet
from edgewise.cloud.serve.commands import (
    serve_add_arguments,
    serve_init_add_arguments,
    serve_init_run,
    serve_run,
)
from edgewise.cloud.serve.config import load_serve_config
from edgewise.errors import ConfigError
from tests.cloud.serve.conftest import edit_config, serve_init


def init(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    serve_init_add_arguments(parser)
    return serve_init_run(parser.parse_args(list(argv)))


def serve(config: Path) -> int:
    parser = argparse.ArgumentParser()
    serve_add_arguments(parser)
    return serve_run(parser.parse_args(["--config", str(config)]))


def test_serve_init_writes_a_secure_folder(tmp_path, ser_bundle, tiny_run, capsys):
    from cryptography import x509

    out = tmp_path / "cloud"
    config_path = serve_init(out, f"bundle:ser-tiny={ser_bundle}", f"run:ser-teacher={tiny_run}", host="0.0.0.0",
                             cert_host="cloud.example")  # fmt: skip
    printed = capsys.readouterr().out
    token = (out / "client" / "token").read_text().strip()
    assert len(token) >= 40 and token not in printed and token not in (out / "tokens.sha256").read_text()
    assert (out / "client" / "token").stat().st_mode & 0o777 == 0o600
    assert (out / "tls" / "server.key").stat().st_mode & 0o777 == 0o600
    config = load_serve_config(config_path)
    assert config.host == "0.0.0.0" and config.scheme == "https"
    assert [(m.id, m.task, m.source) for m in config.models] == [
        ("ser-tiny", "ser", "bundle"),
        ("ser-teacher", "ser", "run"),
    ]
    assert TokenSet.load(config.auth.tokens_file).accepts(f"Bearer {token}")
    cert = x509.load_pem_x509_certificate(config.tls.cert.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "cloud.example" in names.get_values_for_type(x509.DNSName)
    assert "clients must connect as cloud.example" in printed
    with pytest.raises(ConfigError, match="exists; serve-init does not replace a config"):
        init(str(out), "--bundle", f"x={ser_bundle}")


def test_serve_init_refuses_what_it_cannot_serve(tmp_path, ser_bundle):
    for argv, message in (
        ([], "name what to serve"),
        (["--bundle", str(ser_bundle)], "expected ID=DIR"),
        (["--bundle", f"x={tmp_path}"], "is not a bundle"),
        (["--run", f"x={tmp_path / 'none'}"], "is not a folder"),
        (["--run", f"x={ser_bundle}"], "is not a finished training run"),
        (["--bundle", f"bad id={ser_bundle}"], "field 'models.0.id'"),
    ):
        with pytest.raises(ConfigError, match=message):
            init(str(tmp_path / "out"), *argv)
    assert not (tmp_path / "out" / "config.yaml").exists()


def test_serve_init_for_vllm_uses_the_token_as_the_api_key(tmp_path, capsys):
    assert init(str(tmp_path / "gpu"), "--vllm-preset", "keye-vl-8b", "--port", "8000") == 0
    capsys.readouterr()
    parser = argparse.ArgumentParser()
    serve_add_arguments(parser)
    assert (
        serve_run(parser.parse_args(["--config", str(tmp_path / "gpu" / "config.yaml"), "--print-command"]))
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "vllm serve Kwai-Keye/Keye-VL-8B-Preview" in out
        and f"$(cat {tmp_path / 'gpu' / 'client' / 'token'})" in out
    )


def test_a_model_of_another_task_stops_the_start(tmp_path, ser_bundle, port):
    config = serve_init(tmp_path / "cloud", f"bundle:ser={ser_bundle}", port=port)
    data = yaml.safe_load(config.read_text())
    edit_config(config, models=[{**data["models"][0], "task": "rec"}])
    with pytest.raises(
        ConfigError, match=r"model 'ser' \(rec, bundle\): .*task 'rec', but bundle .* is a 'ser' model"
    ):
        serve(config)


def test_a_busy_port_is_a_clear_error(tmp_path, ser_bundle, port):
    config = serve_init(tmp_path / "cloud", f"bundle:ser={ser_bundle}", port=port)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", port))
        busy.listen()
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve(config)


def test_missing_certificate_is_named(tmp_path, ser_bundle, port):
    config = serve_init(tmp_path / "cloud", f"bundle:ser={ser_bundle}", port=port)
    (tmp_path / "cloud" / "tls" / "server.pem").unlink()
    with pytest.raises(ConfigError, match=r"tls\.cert: .*server\.pem not found"):
        serve(config)
