"""Writing results: file modes, errors that name the user's path, destinations checked first, all samples shown."""
import errno
import io
import os
import stat

import pytest
import torch
from PIL import Image

from scoregen.runtime import outputs
from scoregen.runtime.outputs import check_writable, sample_png, tile, write_atomic


@pytest.fixture
def umask():
    """Set the process umask for a test, restoring it after."""
    saved = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(saved)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_new_files_get_the_mode_open_would_give_and_rewrites_keep_theirs(tmp_path, umask):
    umask(0o022)
    assert mode(write_atomic(tmp_path / "a.json", b"{}")) == 0o644
    umask(0o077)
    assert mode(write_atomic(tmp_path / "b.json", b"{}")) == 0o600
    os.chmod(tmp_path / "a.json", 0o640)
    umask(0o022)
    write_atomic(tmp_path / "a.json", b"[]")
    assert mode(tmp_path / "a.json") == 0o640 and (tmp_path / "a.json").read_bytes() == b"[]"


def test_a_failed_write_names_the_path_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = write_atomic(tmp_path / "ckpt.pt", b"good")

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(outputs.os, "fsync", full_disk)
    with pytest.raises(OSError, match=f"cannot write {target}: No space left on device") as err:
        write_atomic(target, b"half")
    assert err.value.errno == errno.ENOSPC and ".tmp" not in str(err.value)
    assert target.read_bytes() == b"good" and [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_destinations_are_checked_without_leaving_anything(tmp_path):
    (tmp_path / "file").write_text("x")
    assert check_writable(tmp_path / "new" / "deeper" / "x.png") == tmp_path / "new" / "deeper" / "x.png"
    assert check_writable(tmp_path / "res", folder=True) == tmp_path / "res"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing created
    with pytest.raises(NotADirectoryError, match=f"cannot write {tmp_path / 'file' / 'res'}: .*not a folder"):
        check_writable(tmp_path / "file" / "res", folder=True)
    with pytest.raises(NotADirectoryError, match="exists and is not a folder"):
        check_writable(tmp_path / "file", folder=True)
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        check_writable(tmp_path, folder=False)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path):
    (tmp_path / "ro").mkdir(mode=0o555)
    with pytest.raises(PermissionError, match=f"cannot write {tmp_path / 'ro' / 'res'}: Permission denied"):
        check_writable(tmp_path / "ro" / "res", folder=True)


@pytest.mark.parametrize("n, rows, cols", [(1, 1, 1), (9, 3, 3), (10, 3, 4), (16, 4, 4), (17, 4, 5)])
def test_every_sample_is_shown(n, rows, cols):
    x = torch.linspace(-0.9, 0.9, n)[:, None, None, None].expand(n, 1, 2, 2)
    grid = tile(x, cols)
    assert grid.shape == (rows * 4, cols * 4, 1)
    tiles = grid[..., 0].reshape(rows, 4, cols, 4).permute(0, 2, 1, 3).reshape(rows * cols, 4, 4)
    assert torch.equal(tiles[:n, 1:3, 1:3], x[:, 0])                  # each image, in order
    assert torch.equal(tiles[n:], torch.zeros_like(tiles[n:]))        # the rest of the last row is grey
    png = Image.open(io.BytesIO(sample_png(x)))
    assert png.size[0] / png.size[1] == cols / rows
