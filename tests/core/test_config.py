"""Config files: an empty or non-mapping file is an error naming the file, for every loader."""

from __future__ import annotations

import pytest

from edgewise.cli import main
from edgewise.config import StrictModel, load_config, read_yaml
from edgewise.errors import ConfigError


class Settings(StrictModel):
    threshold: float = 0.5


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty config file"),
        ("# only a comment\n\n", "empty config file"),
        ("---\n", "empty config file"),
        ("- a\n- b\n", "expected a mapping of settings at the top level, got list ['a', 'b']"),
        ("just a sentence\n", "expected a mapping of settings at the top level, got str 'just a sentence'"),
        ("a: [1\n", "not valid YAML"),
    ],
    ids=["empty", "comments", "document-marker", "list", "scalar", "syntax"],
)
def test_an_unusable_file_is_refused_naming_it(tmp_path, text, message):
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    for load in (read_yaml, lambda p: load_config(Settings, p)):
        with pytest.raises(ConfigError) as info:
            load(path)
        assert str(info.value).startswith(f"{path}: ") and message in str(info.value)


def test_an_explicit_empty_mapping_still_means_the_defaults(tmp_path):
    path = tmp_path / "defaults.yaml"
    path.write_text("{}\n")
    assert load_config(Settings, path).threshold == 0.5


def test_a_file_that_is_not_text_is_a_config_error(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match=f"{path}: cannot read config file"):
        read_yaml(path)


def test_train_with_an_empty_config_exits_2_naming_the_file(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    code = main(
        ["train", "ser", "--config", str(empty), "--data", str(tmp_path), "--out", str(tmp_path / "run")]
    )
    err = capsys.readouterr().err
    assert code == 2 and f"{empty}: empty config file" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_the_daemon_refuses_an_empty_config(tmp_path):
    from edgewise.edge.daemon import load_daemon_config

    path = tmp_path / "daemon.yaml"
    path.write_text("\n")
    with pytest.raises(ConfigError, match="empty config file"):
        load_daemon_config(path)
