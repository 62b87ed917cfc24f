"""Writing results: atomic files, sample pictures, and the sampler sweep's table, CSV and plot.

Every file the package writes (checkpoints, caches, tables, figures) goes through ``write_atomic``,
so an interrupted run leaves the previous file, or none, never half of one; a full disk is an OSError naming
the file and Ctrl-C a KeyboardInterrupt, whatever the writer (torch.save) makes of them. The files of one result
that belong together (``compare``'s) go through ``write_together``: all of them appear, or none. Temporary files
carry their writer's pid and host; those of writers killed mid-write (kill -9) are removed by the next write of
the same file or folder. The renderers of the sweep
(``markdown_table``, ``csv_table``, ``quality_plot``) take its rows (``scoregen.compare``) and are told
which metrics and options to show: nothing here imports the rest of the package.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import re
import shutil
import socket
import stat
import tempfile
import time
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Callable

import torch

ORPHAN_AGE_S = 3600  # a temporary file named by no pid and not written to this long is an orphan


def _new_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0o666 less the process umask."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _mode_for(path: Path) -> int:
    """The mode a file written to ``path`` gets: the existing file's own, else ``_new_file_mode()``."""
    return stat.S_IMODE(path.stat().st_mode) if path.is_file() else _new_file_mode()


@contextmanager
def _naming(path, note: str = ""):
    """Raise an OSError of the block as one that names ``path`` (not a temporary file), keeping its errno."""
    try:
        yield
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}{note}") from e


def _writer() -> str:
    """This process in the names of its temporary files and folders: ``<pid>.<host>``."""
    return f"{os.getpid()}.{socket.gethostname()}"


def _orphaned(entry: Path, prefix: str) -> bool:
    """Whether ``entry``, named ``<prefix><pid>.<host>.<random>.tmp``, was left by a writer of this host that is gone,
    or, named ``<prefix><random>.tmp`` (by a scoregen that named no pid), has not been written to for ORPHAN_AGE_S."""
    name = re.fullmatch(r"(?:(\d{1,9})\.(.*)\.)?[a-z0-9_]{8}\.tmp", entry.name.removeprefix(prefix))
    if name is None:
        return False
    if name[1] is None:
        return time.time() - entry.lstat().st_mtime > ORPHAN_AGE_S
    if name[2] != socket.gethostname():
        return False
    try:
        os.kill(int(name[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # a live process of another user
        pass
    return False


def _remove_orphans(folder: Path, prefix: str) -> None:
    """Remove the temporary files and folders named ``prefix...`` in ``folder`` that their writer left behind (killed
    mid-write: kill -9, a power cut), see ``_orphaned``. Best effort: never raises."""
    with suppress(OSError):
        for entry in [e for e in folder.iterdir() if e.name.startswith(prefix)]:
            with suppress(OSError):
                if _orphaned(entry, prefix):
                    shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


class _Watched:
    """A file that remembers (``error``) the first exception its ``write`` or ``flush`` raised."""

    def __init__(self, file):
        self.file, self.error = file, None

    def __getattr__(self, name):  # tell, seek, fileno, ...
        return getattr(self.file, name)

    def write(self, data):
        return self._watch(self.file.write, data)

    def flush(self):
        return self._watch(self.file.flush)

    def _watch(self, method, *args):
        try:
            return method(*args)
        except BaseException as e:
            if self.error is None:
                self.error = e
            raise


def _write(fd: int, data: bytes | Callable, mode: int) -> None:
    """Write ``data`` (bytes, or a function ``write(file)``) to the new file ``fd``, flush it to disk, give it
    ``mode`` and close it. What the file's own write or flush raised first is raised, also where ``write`` turned
    it into another exception (torch.save makes a full disk or Ctrl-C a RuntimeError)."""
    with os.fdopen(fd, "wb") as f:
        file = _Watched(f)
        try:
            file.write(data) if isinstance(data, bytes) else data(file)
        except BaseException as e:
            if file.error is None or file.error is e:
                raise
            raise file.error from None
        f.flush()
        os.fsync(f.fileno())
        os.fchmod(f.fileno(), mode)


def write_atomic(path, data: bytes | Callable) -> Path:
    """Write ``data`` (bytes, or a function ``write(file)``) to a unique temporary file beside ``path``,
    ``.<name>.<pid>.<host>.<random>.tmp``, flush it to disk, then ``os.replace`` it onto ``path``.

    The file gets the mode a plain ``open(path, "w")`` would leave: an existing file's own, else 0o666
    less the umask (``mkstemp``'s 0o600 would survive the replace). A failed write raises an OSError
    that names ``path`` (not the temporary file) and leaves the previous file at ``path`` untouched; a Ctrl-C
    raises KeyboardInterrupt. Temporary files of ``path`` that killed writers left are removed first.
    """
    path = Path(path)
    with _naming(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_orphans(path.parent, f".{path.name}.")
        mode = _mode_for(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_writer()}.", suffix=".tmp", dir=path.parent)
    try:
        with _naming(path):
            _write(fd, data, mode)
            os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def write_together(folder, files: dict[str, bytes | Callable]) -> list[Path]:
    """Write ``files`` (name -> bytes, or a function ``write(file)``) into ``folder``, all of them or none.

    Each is written into a staging folder inside ``folder`` (``.staging.<pid>.<host>.<random>.tmp``), flushed
    to disk with the mode ``write_atomic`` gives; only when all are written are they renamed into place, in
    their order (renames need no space: put the file that indexes the others last). A failed write removes the
    staging folder and raises an OSError that names the file and keeps its errno; the files in ``folder`` are
    then as before. Staging folders that killed writers left are removed first.
    """
    folder = Path(folder)
    with _naming(folder):
        folder.mkdir(parents=True, exist_ok=True)
        _remove_orphans(folder, ".staging.")
        staging = Path(tempfile.mkdtemp(prefix=f".staging.{_writer()}.", suffix=".tmp", dir=folder))
    try:
        for name, data in files.items():
            with _naming(folder / name, f"; the previous files in {folder} were left unchanged"):
                mode = _mode_for(folder / name)
                _write(os.open(staging / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), data, mode)
        for name in files:
            with _naming(folder / name):
                os.replace(staging / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [folder / name for name in files]


def check_writable(path, *, folder: bool = False) -> Path:
    """Raise an OSError naming ``path`` unless it can be written (before any work is done): a file
    (``folder=False``, replaced atomically, so its folder must take new files) or a folder of outputs.
    Probes the nearest existing folder with a temporary file, so that read-only file systems, missing
    permissions and a file in the way are all caught; creates nothing that stays."""
    path = Path(path)
    if path.is_dir() and not folder:
        raise IsADirectoryError(errno.EISDIR, f"cannot write {path}: it is a folder; give a file name")
    if path.exists() and folder and not path.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"cannot write into {path}: it exists and is not a folder")
    parent = path if folder else path.parent
    existing = next(p for p in (parent, *parent.parents) if p.exists())
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, f"{existing} is not a folder")
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None
    return path


def tile(x: torch.Tensor, cols: int) -> torch.Tensor:
    """Every image of ``x`` [n, C, H, W] in [-1, 1], each in a 1-pixel frame of 0 (grey), in rows of
    ``cols``, as one image [rows (H + 2), cols (W + 2), C]; the last row is padded with grey."""
    n, rows = x.shape[0], -(-x.shape[0] // cols)
    x = torch.nn.functional.pad(x.clamp(-1, 1), (1, 1, 1, 1), value=0.0)
    x = torch.cat([x, x.new_zeros((rows * cols - n, *x.shape[1:]))])
    c, h, w = x.shape[1:]
    return x.reshape(rows, cols, c, h, w).permute(0, 3, 1, 4, 2).reshape(rows * h, cols * w, c)


def sample_png(x: torch.Tensor) -> bytes:
    """A PNG of samples: all n images [n, C, H, W] in [-1, 1] in a near-square grid (ceil(sqrt(n))
    columns), each tile in a grey frame and pixels upscaled (nearest) to about 256 pixels a side, or a
    scatter of the first two coordinates of points [n, d]."""
    x = x.detach().float().cpu()
    buf = io.BytesIO()
    if x.dim() == 4:
        from PIL import Image
        grid = ((tile(x, math.isqrt(x.shape[0] - 1) + 1) + 1) * 127.5).round().to(torch.uint8)
        (height, width, c), scale = grid.shape, max(1, 256 // grid.shape[0])
        img = Image.fromarray(grid.squeeze(-1).numpy() if c == 1 else grid.numpy())
        img.resize((width * scale, height * scale), Image.NEAREST).save(buf, format="png")
    else:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.scatter(x[:, 0], x[:, 1], s=1)
        ax.set_aspect("equal")
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
    return buf.getvalue()


# --- the sampler sweep's rows (``compare``): one dict per row, its metrics with their ``<metric>_std`` -----
def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _metric_keys(rows: list[dict], metrics) -> list[str]:
    return [k for k in metrics if any(k in r for r in rows)]


def _cell(r: dict, key: str) -> str:
    """``value ± spread`` (and ``(reruns s)``, the spread over reruns, when the row has it)."""
    cell = _fmt(r.get(key)) + (f" ± {r[key + '_std']:.2g}" if r.get(key + "_std") is not None else "")
    return cell + (f" (reruns {r[key + '_rerun_std']:.2g})" if r.get(key + "_rerun_std") is not None else "")


def _versus(vs: dict | None) -> str:
    """A row's paired comparison with the reference row (``compare.rank``): its difference ± paired spread, and
    whether it is resolved at 95%."""
    if vs is None:
        return ""
    if vs["verdict"] == "reference":
        return "reference"
    return f"{vs['diff']:+.3g} ± {vs['diff_std']:.2g} {vs['verdict']}"


def markdown_table(rows: list[dict], metrics, options: dict) -> str:
    """The rows as a markdown table: the ``metrics`` they have, in that order, each as ``value ± spread``;
    ``options`` maps a sampler to the options shown for it (other rows show their own). Rows compared with a
    reference row (a ``vs`` field) get a column with the difference and its verdict."""
    keys = _metric_keys(rows, metrics)
    vs = next((r["vs"] for r in rows if r.get("vs")), None)
    head = ["sampler", "options", "steps", "NFE"] + keys + ([f"{vs['metric']} vs {vs['reference']}"] if vs else [])
    head += ["wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in options.get(r["sampler"], r["options"]).items())
        steps = _fmt(r["steps"]) if r.get("tol") is None else f"tol {r['tol']:g}"
        cells = [r["sampler"], opts, steps, _fmt(r["nfe"])] + [_cell(r, k) for k in keys]
        cells += [_versus(r.get("vs"))] if vs else []
        lines.append("| " + " | ".join(cells + [_fmt(r["wall_s"])]) + " |")
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict], metrics) -> bytes:
    """The rows as CSV: every column of a row but the metrics absent from all rows, options as JSON; the
    comparison with the reference row as ``vs_diff``, ``vs_diff_std`` and ``vs_verdict``."""
    keys = _metric_keys(rows, metrics)
    head = ["sampler", "method", "options", "steps", "tol", "nfe", "n"]
    head += [c for k in keys for c in (k, f"{k}_std", f"{k}_rerun_std") if any(c in r for r in rows)]
    head += ["vs_diff", "vs_diff_std", "vs_verdict"] if any(r.get("vs") for r in rows) else []
    buf = io.StringIO()
    writer = csv.DictWriter(buf, head + ["wall_s", "device"], extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        vs = {f"vs_{k}": v for k, v in (r.get("vs") or {}).items()}
        writer.writerow({**r, **vs, "options": json.dumps(r["options"], sort_keys=True)})
    return buf.getvalue().encode()


def quality_plot(rows: list[dict], title: str, metrics, log_scale=(), stars=(), z95: float = 1.96) -> bytes:
    """A PNG with one panel per metric of ``metrics`` the rows have (``log_scale`` ones on a log axis when
    all positive), NFE on a log axis, one line per sampler (``stars``: one large star, for the one-call
    models and single tuned rows), the reference row (the one without NFE: the data floor) dashed; error bars
    are 95% intervals (``z95`` spreads). A sampler keeps its colour in every panel, also in those where only
    some samplers have a value (``ode_err``). Four panels to a line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = _metric_keys(rows, metrics)
    ncols = min(4, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.5 * ncols, 3.8 * nrows), squeeze=False)
    for ax in axes.flat[len(keys):]:
        ax.set_visible(False)
    floor_row = next(r for r in rows if r["nfe"] is None)
    labels = list(dict.fromkeys(r["sampler"] for r in rows if r is not floor_row))
    palette = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    colour = {label: palette(i % palette.N) for i, label in enumerate(labels)}
    for ax, key in zip(axes.flat, keys):
        has = [r for r in rows if r is not floor_row and r.get(key) is not None]
        for label in dict.fromkeys(r["sampler"] for r in has):
            rs = sorted((r for r in has if r["sampler"] == label), key=lambda r: r["nfe"])
            ax.errorbar([r["nfe"] for r in rs], [r[key] for r in rs], yerr=[z95 * r.get(key + "_std", 0) for r in rs],
                        marker="*" if label in stars else "o", ms=10 if label in stars else 4,
                        ls="-" if len(rs) > 1 else "none", capsize=2, label=label, color=colour[label])
        if floor_row.get(key) is not None:
            ax.axhline(floor_row[key], ls="--", c="k", lw=1, label=floor_row["sampler"])
            has = has + [floor_row]
        ax.set_xscale("log")
        if key in log_scale and all(r[key] > 0 for r in has):
            ax.set_yscale("log")
        ax.set_xlabel("NFE (network calls per sample)")
        ax.set_title(f"{key} (bars: 95%)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
