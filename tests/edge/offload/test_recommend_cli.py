"""``edgewise recommend --offload FILE``: the same cascade from the command line (the parser built
here from the command's own functions)."""

from __future__ import annotations

import argparse
import json

import pytest
import yaml

from edgewise.edge.rec_command import recommend_add_arguments, recommend_run
from edgewise.errors import ConfigError

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    recommend_add_arguments(parser)
    return recommend_run(parser.parse_args(argv))


def test_recommend_asks_the_cloud_for_more_than_the_bundle_gives(
    rec_bundle, cloud, token_file, cert, tmp_path, capsys
):
    section = {"url": cloud.url, "token_file": str(token_file), "ca_file": str(cert[0]), "timeout_s": 2.0,
               "rec": {"model": "onerec-8b"}}  # fmt: skip
    offload = tmp_path / "offload.yaml"
    offload.write_text(yaml.safe_dump(section))
    history = ["--history", "i1,i2,i3"]
    assert run([str(rec_bundle), *history, "--k", "5", "--offload", str(offload), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["source"] == "device" and cloud.behaviour.hits() == 0

    assert (
        run([str(rec_bundle), *history, "--k", "25", "--beam", "30", "--offload", str(offload), "--json"])
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    assert result["source"] == "cloud" and result["items"][0] == "cloud-0" and len(result["items"]) == 25
    assert cloud.behaviour.requests[-1]["body"] == {
        "model": "onerec-8b",
        "history": ["i1", "i2", "i3"],
        "k": 25,
        "beam": 30,
    }

    daemon_yaml = tmp_path / "daemon.yaml"  # a daemon.yaml's offload: section works too
    daemon_yaml.write_text(yaml.safe_dump({"root": "/x", "offload": section}))
    assert run([str(rec_bundle), *history, "--candidates", "cloud", "--offload", str(daemon_yaml)]) == 0
    out = capsys.readouterr()
    assert "cloud-0" in out.out and "source: cloud (the request asks for the cloud's candidates" in out.err

    cloud.stop()
    assert run([str(rec_bundle), *history, "--candidates", "cloud", "--offload", str(offload)]) == 0
    err = capsys.readouterr().err
    assert "source: device-fallback" in err and "the cloud failed: unreachable" in err


def test_bad_offload_use_is_refused_before_the_bundle_loads(tmp_path):
    with pytest.raises(ConfigError, match="--candidates cloud needs --offload FILE"):
        run([str(tmp_path / "no-bundle"), "--history", "i1", "--candidates", "cloud"])
    bad = tmp_path / "offload.yaml"
    bad.write_text(yaml.safe_dump({"url": "http://cloud.example", "rec": {"model": "r"}}))
    with pytest.raises(ConfigError, match=r"offload.yaml: field 'offload.url'.*loopback"):
        run([str(tmp_path / "no-bundle"), "--history", "i1", "--offload", str(bad)])
