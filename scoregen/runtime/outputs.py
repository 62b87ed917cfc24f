"""Writing results: atomic files, sample pictures, and the sampler sweep's table, CSV and plot.

Every file the package writes (checkpoints, caches, tables, figures) goes through ``write_atomic``,
so an interrupted run leaves the previous file, or none, never half of one. The renderers of the sweep
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
import stat
import tempfile
from pathlib import Path
from typing import Callable

import torch


def _new_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0o666 less the process umask."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomic(path, data: bytes | Callable) -> Path:
    """Write ``data`` (bytes, or a function ``write(file)``) to a unique temporary file beside ``path``,
    flush it to disk, then ``os.replace`` it onto ``path``.

    The file gets the mode a plain ``open(path, "w")`` would leave: an existing file's own, else 0o666
    less the umask (``mkstemp``'s 0o600 would survive the replace). A failed write raises an OSError
    that names ``path`` (not the temporary file) and leaves the previous file at ``path`` untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        mode = stat.S_IMODE(path.stat().st_mode) if path.is_file() else _new_file_mode()
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path}: {e.strerror}") from e
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data) if isinstance(data, bytes) else data(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from e
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


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


def markdown_table(rows: list[dict], metrics, options: dict) -> str:
    """The rows as a markdown table: the ``metrics`` they have, in that order, each as ``value ± spread``;
    ``options`` maps a sampler to the options shown for it (other rows show their own)."""
    keys = _metric_keys(rows, metrics)
    head = ["sampler", "options", "steps", "NFE"] + keys + ["wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        opts = ", ".join(f"{k}={v}" for k, v in options.get(r["sampler"], r["options"]).items())
        steps = _fmt(r["steps"]) if r.get("tol") is None else f"tol {r['tol']:g}"
        cells = [r["sampler"], opts, steps, _fmt(r["nfe"])]
        cells += [_fmt(r.get(k)) + (f" ± {r[k + '_std']:.2g}" if r.get(k + "_std") is not None else "")
                  for k in keys]
        lines.append("| " + " | ".join(cells + [_fmt(r["wall_s"])]) + " |")
    return "\n".join(lines) + "\n"


def csv_table(rows: list[dict], metrics) -> bytes:
    """The rows as CSV: every column of a row but the metrics absent from all rows, options as JSON."""
    keys = _metric_keys(rows, metrics)
    head = ["sampler", "method", "options", "steps", "tol", "nfe", "n"]
    head += [c for k in keys for c in (k, f"{k}_std") if any(c in r for r in rows)] + ["wall_s", "device"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, head, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "options": json.dumps(r["options"], sort_keys=True)})
    return buf.getvalue().encode()


def quality_plot(rows: list[dict], title: str, metrics, log_scale=(), stars=()) -> bytes:
    """A PNG with one panel per metric of ``metrics`` the rows have (``log_scale`` ones on a log axis when
    all positive), NFE on a log axis, one line per sampler (``stars``: one large star, for the one-call
    models and single tuned rows), the reference row (the one without NFE: the data floor) dashed; error bars
    are the spreads. A sampler keeps its colour in every panel, also in those where only some samplers have
    a value (``ode_err``)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = _metric_keys(rows, metrics)
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.8), squeeze=False)
    floor_row = next(r for r in rows if r["nfe"] is None)
    labels = list(dict.fromkeys(r["sampler"] for r in rows if r is not floor_row))
    palette = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    colour = {label: palette(i % palette.N) for i, label in enumerate(labels)}
    for ax, key in zip(axes[0], keys):
        has = [r for r in rows if r is not floor_row and r.get(key) is not None]
        for label in dict.fromkeys(r["sampler"] for r in has):
            rs = sorted((r for r in has if r["sampler"] == label), key=lambda r: r["nfe"])
            ax.errorbar([r["nfe"] for r in rs], [r[key] for r in rs], yerr=[r.get(key + "_std", 0) for r in rs],
                        marker="*" if label in stars else "o", ms=10 if label in stars else 4,
                        ls="-" if len(rs) > 1 else "none", capsize=2, label=label, color=colour[label])
        if floor_row.get(key) is not None:
            ax.axhline(floor_row[key], ls="--", c="k", lw=1, label=floor_row["sampler"])
            has = has + [floor_row]
        ax.set_xscale("log")
        if key in log_scale and all(r[key] > 0 for r in has):
            ax.set_yscale("log")
        ax.set_xlabel("NFE (network calls per sample)")
        ax.set_title(key)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()
