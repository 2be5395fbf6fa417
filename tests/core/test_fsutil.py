import os

import pytest

from edgewise.fsutil import atomic_path, write_text_atomic


def test_replaces_the_target_with_normal_permissions(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    mask = os.umask(0)
    os.umask(mask)
    assert (target.stat().st_mode & 0o777) == (0o666 & ~mask)
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_write_private_is_0600_from_the_first_byte_and_replaces_whole(tmp_path):
    from edgewise.fsutil import write_private

    old = os.umask(0o000)  # even a umask that lets everyone read
    try:
        path = write_private(tmp_path / "keys" / "secret", "token\n")
        assert path.read_text() == "token\n" and path.stat().st_mode & 0o777 == 0o600
        write_private(path, b"\x00binary")
        assert path.read_bytes() == b"\x00binary" and path.stat().st_mode & 0o777 == 0o600
        assert [p.name for p in path.parent.iterdir()] == ["secret"]  # no temporary file left
    finally:
        os.umask(old)
