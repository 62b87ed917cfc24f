"""Writing results: file modes, errors that name the user's path, destinations checked first, all samples shown."""
import errno
import io
import os
import socket
import stat
import subprocess
import sys
import time

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


def dead_pid() -> int:
    """The pid of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_temporary_files_of_killed_writers_are_removed_on_the_next_write(tmp_path):
    """A writer killed mid-write (kill -9) leaves its temporary file; the next write of the target removes those of
    dead pids of this host and old ones without a pid, and keeps those of live writers, other hosts, other files."""
    host = socket.gethostname()
    temp = {name: tmp_path / name for name in (
        f".ckpt.pt.{dead_pid()}.{host}.abcd_123.tmp",     # killed: removed
        f".ckpt.pt.{os.getpid()}.{host}.abcd_123.tmp",    # this live process: kept
        f".ckpt.pt.{dead_pid()}.elsewhere.abcd_123.tmp",  # a process of another host (a shared file system): kept
        ".ckpt.pt.x1y2z3w4.tmp", ".ckpt.pt.x1y2z3w5.tmp",  # no pid (an older scoregen): removed if old
        f".log.jsonl.{dead_pid()}.{host}.abcd_123.tmp")}  # another file's: left to that file's next write
    for path in temp.values():
        path.write_bytes(b"partial")
    old = time.time() - outputs.ORPHAN_AGE_S - 60
    os.utime(tmp_path / ".ckpt.pt.x1y2z3w4.tmp", (old, old))
    write_atomic(tmp_path / "ckpt.pt", b"new")
    kept = sorted(p.name for p in tmp_path.iterdir())
    assert kept == sorted(["ckpt.pt", *list(temp)[1:3], ".ckpt.pt.x1y2z3w5.tmp", list(temp)[5]])


class _FailingFile(io.FileIO):
    """A file on a disk with little space left: writes of more than 8 KiB raise ``error`` (set by the test)."""

    def write(self, data):
        if len(data) > 8192:
            raise self.error
        return super().write(data)


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), KeyboardInterrupt()])
def test_torch_save_onto_a_full_disk_or_ctrl_c_raises_what_the_file_raised(tmp_path, monkeypatch, error):
    """torch.save turns an exception of the file it writes into a RuntimeError (inline_container.cc, unexpected
    pos): write_atomic raises the file's own, the OSError naming the checkpoint, KeyboardInterrupt as itself."""
    target = write_atomic(tmp_path / "ckpt.pt", b"good")
    monkeypatch.setattr(_FailingFile, "error", error, raising=False)
    monkeypatch.setattr(outputs.os, "fdopen", lambda fd, mode: io.BufferedWriter(_FailingFile(fd, mode)))
    with pytest.raises(type(error)) as raised:
        write_atomic(target, lambda f: torch.save({"w": torch.zeros(100_000)}, f))  # more than the file's buffer
    if isinstance(error, OSError):
        assert raised.value.errno == errno.ENOSPC
        assert raised.value.strerror == f"cannot write {target}: No space left on device"
    assert target.read_bytes() == b"good" and [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_files_written_together_appear_together_with_the_modes_of_single_writes(tmp_path, umask):
    umask(0o022)
    (tmp_path / "b.csv").write_bytes(b"old")
    os.chmod(tmp_path / "b.csv", 0o640)
    paths = outputs.write_together(tmp_path, {"a.png": b"A", "b.csv": lambda f: f.write(b"B"), "index.json": b"{}"})
    assert paths == [tmp_path / "a.png", tmp_path / "b.csv", tmp_path / "index.json"]
    assert {p.name: (p.read_bytes(), mode(p)) for p in tmp_path.iterdir()} == {
        "a.png": (b"A", 0o644), "b.csv": (b"B", 0o640), "index.json": (b"{}", 0o644)}


def test_a_failed_write_of_files_together_leaves_the_folder_as_it_was(tmp_path, full_disk_at):
    """A full disk at the second of three files: none of the three is replaced, no staging folder stays."""
    before = {"a.png": b"old A", "b.csv": b"old B", "index.json": b"old index", "notes.txt": b"mine"}
    for name, content in before.items():
        (tmp_path / name).write_bytes(content)
    full_disk_at(2)
    with pytest.raises(OSError, match=f"cannot write {tmp_path / 'b.csv'}: No space left on device; the previous "
                                      f"files in {tmp_path} were left unchanged") as err:
        outputs.write_together(tmp_path, {"a.png": b"A", "b.csv": b"B", "index.json": b"{}"})
    assert err.value.errno == errno.ENOSPC
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
