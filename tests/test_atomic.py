"""c2fmae.atomic: a failed write keeps the old file and leaves nothing behind; umask permissions."""
import os

import pytest

from c2fmae.atomic import atomic_open, atomic_write_bytes


def test_failed_write_keeps_old_file_and_no_temp(tmp_path):
    path = tmp_path / "sub" / "a.json"
    atomic_write_bytes(path, b"one")
    with pytest.raises(RuntimeError):
        with atomic_open(path, "w") as f:
            f.write("two")
            raise RuntimeError("killed mid-write")
    assert path.read_bytes() == b"one" and os.listdir(path.parent) == ["a.json"]


def test_permissions_follow_umask_and_bad_mode(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    with atomic_open(tmp_path / "b.bin") as f:
        f.write(b"x")
    assert (tmp_path / "b.bin").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    with pytest.raises(ValueError, match="mode must be 'w' or 'wb'"):
        with atomic_open(tmp_path / "c", "a"):
            pass
