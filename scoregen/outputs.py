"""Writing results: atomic files and sample pictures.

Every file the package writes (checkpoints, caches, tables, figures) goes through ``write_atomic``,
so an interrupted run leaves the previous file, or none, never half of one.
"""
from __future__ import annotations

import io
import math
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch


def write_atomic(path, data: bytes | Callable) -> Path:
    """Write ``data`` (bytes, or a function ``write(file)``) to a unique temporary file beside ``path``,
    flush it to disk, then ``os.replace`` it onto ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data) if isinstance(data, bytes) else data(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def tile(x: torch.Tensor, k: int) -> torch.Tensor:
    """The first k^2 images [n, C, H, W] in [-1, 1], each in a 1-pixel frame of 0 (grey), as one image
    [k (H + 2), k (W + 2), C]."""
    x = torch.nn.functional.pad(x[:k * k].clamp(-1, 1), (1, 1, 1, 1), value=0.0)
    c, h, w = x.shape[1:]
    return x.reshape(k, k, c, h, w).permute(0, 3, 1, 4, 2).reshape(k * h, k * w, c)


def sample_png(x: torch.Tensor) -> bytes:
    """A PNG of samples: a square grid of images [n, C, H, W] in [-1, 1], each tile in a grey frame and
    pixels upscaled (nearest) to about 256 pixels a side, or a scatter of the first two coordinates of
    points [n, d]."""
    x = x.detach().float().cpu()
    buf = io.BytesIO()
    if x.dim() == 4:
        from PIL import Image
        grid = ((tile(x, math.isqrt(x.shape[0])) + 1) * 127.5).round().to(torch.uint8)
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
