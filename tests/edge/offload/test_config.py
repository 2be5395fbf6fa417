"""The offload section: shape checked with the device profile, in full where it runs; the daemon's
section overrides the profile's key by key; errors name the file and the field."""

from __future__ import annotations

import pytest
import yaml

from edgewise.devices import load_profile
from edgewise.edge.daemon import load_daemon_config
from edgewise.edge.offload.config import OffloadConfig, check_url, resolve_offload
from edgewise.errors import ConfigError


def profile_yaml(tmp_path, offload) -> str:
    """x86-local with an ``offload:`` section, as a profile file of its own."""
    data = load_profile("x86-local").model_dump(mode="json", exclude={"offload"})
    data["name"] = "x86-offload"
    data["offload"] = offload
    path = tmp_path / "x86-offload.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize(
    "url",
    [
        "https://cloud.example:8443",
        "https://10.0.0.5/",
        "http://127.0.0.1:8000",
        "http://localhost:80",
        "http://[::1]:9",
    ],
)
def test_https_anywhere_and_http_only_to_loopback(url):
    assert check_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://cloud.example:8000", "plain http is allowed only to a loopback host"),
        ("http://10.0.0.5", "plain http is allowed only to a loopback host"),
        ("ftp://cloud.example", "expected an https:// URL"),
        ("https://user:pw@cloud.example", "must not carry credentials"),
        ("https://cloud.example/?x=1", "without a query"),
        ("cloud.example", "expected an https:// URL"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url, says):
    with pytest.raises(ValueError, match=says):
        check_url(url)


def test_a_profile_section_is_checked_when_the_profile_loads(tmp_path):
    path = profile_yaml(tmp_path, {"timeout_s": -1, "ser": {"model": "t", "below": 0.5}})
    with pytest.raises(ConfigError, match=r"field 'offload.timeout_s': input should be greater than 0"):
        load_profile(path)
    path = profile_yaml(tmp_path, {"url": "http://cloud.example", "ser": {"model": "t"}})
    with pytest.raises(ConfigError, match=r"field 'offload.url'.*loopback"):
        load_profile(path)
    path = profile_yaml(tmp_path, {"ser": {"model": "t", "below": 1.5}})
    with pytest.raises(ConfigError, match=r"field 'offload.ser.below'"):
        load_profile(path)
    path = profile_yaml(tmp_path, {"retry": 3})
    with pytest.raises(ConfigError, match=r"unknown field 'offload.retry'"):
        load_profile(path)


def test_the_profile_gives_the_policy_and_the_daemon_the_site(tmp_path, token_file, cert):
    policy = {"timeout_s": 1.5, "retries": 2, "breaker": {"failures": 4}, "ser": {"model": "t", "below": 0.7}}
    profile = load_profile(profile_yaml(tmp_path, policy))  # no url: fine in a profile
    assert profile.offload.url is None and profile.offload.breaker.cooldown_s == 30.0
    site = {"url": "https://cloud.example:8443", "token_file": str(token_file), "ca_file": str(cert[0])}
    merged = resolve_offload(profile.offload, {**site, "breaker": {"cooldown_s": 5}}, "daemon.yaml")
    assert merged.url == "https://cloud.example:8443" and merged.timeout_s == 1.5 and merged.retries == 2
    assert merged.breaker.failures == 4 and merged.breaker.cooldown_s == 5  # merged key by key
    assert merged.ser.below == 0.7 and merged.tasks == ["ser"]
    assert resolve_offload(profile.offload, {"enabled": False}, "daemon.yaml") is None
    assert resolve_offload(None, None, "daemon.yaml") is None


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ({"ser": {"model": "t"}}, r"daemon.yaml: field 'offload.url' is required for route http"),
        ({"url": "https://c.example", "token_file": "/nope/token", "ser": {"model": "t"}},
         r"field 'offload.token_file': file not found: /nope/token"),
        ({"url": "https://c.example", "ca_file": "/nope/ca.pem", "ser": {"model": "t"}},
         r"field 'offload.ca_file': file not found"),
        ({"url": "https://c.example"}, r"field 'offload': no task to offload"),
        ({"url": "https://c.example", "route": "carrier-pigeon", "ser": {"model": "t"}},
         r"field 'offload.route': input should be 'http' or 'mqtt'"),
        ({"url": "https://c.example", "ser": {"below": 0.5}}, r"field 'offload.ser.model' is required"),
    ],
)  # fmt: skip
def test_a_section_that_cannot_run_names_the_field(section, says):
    with pytest.raises(ConfigError, match=says):
        resolve_offload(None, section, "daemon.yaml")


def test_the_mqtt_route_needs_no_url(tmp_path):
    config = resolve_offload(None, {"route": "mqtt", "rec": {"model": "r"}}, "daemon.yaml")
    assert config.route == "mqtt" and config.url is None


def test_an_empty_or_spaced_token_file_is_refused(tmp_path):
    empty = tmp_path / "empty.token"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match=r"offload.token_file'.*is empty"):
        resolve_offload(
            None, {"url": "https://c.example", "token_file": str(empty), "ser": {"model": "t"}}, "d"
        )
    spaced = tmp_path / "spaced.token"
    spaced.write_text("two words\n")
    with pytest.raises(ConfigError, match=r"does not hold one token"):
        resolve_offload(
            None, {"url": "https://c.example", "token_file": str(spaced), "ser": {"model": "t"}}, "d"
        )


def test_max_wait_is_the_timeouts_plus_the_backoff_ceilings():
    config = OffloadConfig(timeout_s=2, retries=3, backoff={"base_s": 0.5, "max_s": 1.5})
    assert config.max_wait_s == pytest.approx(2 * 4 + 0.5 + 1.0 + 1.5)


def test_the_daemon_fails_at_start_on_an_unusable_offload_section(tmp_path):
    config = tmp_path / "daemon.yaml"
    base = {"root": str(tmp_path / "root"), "mqtt": {"fleet": "lab", "device": "d1"}}
    config.write_text(yaml.safe_dump({**base, "offload": {"ser": {"model": "t"}}}))
    with pytest.raises(ConfigError, match=rf"{config}: field 'offload.url' is required"):
        load_daemon_config(config)
    config.write_text(
        yaml.safe_dump(
            {**base, "offload": {"url": "https://c.example", "timeout_s": "soon", "ser": {"model": "t"}}}
        )
    )
    with pytest.raises(ConfigError, match=r"field 'offload.timeout_s': input should be a valid number"):
        load_daemon_config(config)
    config.write_text(
        yaml.safe_dump({**base, "offload": {"url": "https://c.example", "ser": {"model": "t"}}})
    )
    cfg, _ = load_daemon_config(config)
    assert cfg.offload["url"] == "https://c.example"
