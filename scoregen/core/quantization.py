"""The data's quantisation grid: level k of L sits at ``x = 2 k / (L - 1) - 1`` in [-1, 1].

The one owner of the grid arithmetic (``level_index``, ``quantize``), its checks (``check_levels``,
``check_on_grid``) and the detection of quantised data where a density of continuous data is wanted
(``grid_levels``, ``warn_if_quantized``). Used by the loaders, the VAE's discretised decoder and the
likelihoods; imports nothing of the package.
"""
from __future__ import annotations

import warnings

import torch


def level_index(x: torch.Tensor, levels: int) -> torch.Tensor:
    """The nearest level ``k = round((x + 1) (L - 1) / 2)`` in {0, ..., L-1}, as x's dtype."""
    return torch.round((x + 1) * (levels - 1) / 2).clamp(0, levels - 1)


def quantize(x: torch.Tensor, levels: int) -> torch.Tensor:
    """x moved to the nearest point ``2 k / (L - 1) - 1`` of the L-level grid (clamped to [-1, 1])."""
    return 2 * level_index(x, levels) / (levels - 1) - 1


def check_levels(levels) -> None:
    if levels is not None and (int(levels) != levels or levels < 2):
        raise ValueError(f"levels must be an integer >= 2 or None (continuous data); got {levels!r}")


GRID_ATOL = 1e-4  # how far from a grid point a value may be and still count as on the grid


def check_on_grid(x: torch.Tensor, levels: int) -> None:
    """Raise unless x lies on the L-level grid (a discrete log-probability is meaningless off it)."""
    if not torch.allclose(x, quantize(x, levels), atol=GRID_ATOL):
        raise ValueError(f"x must lie on the {levels}-level grid 2k/(L-1)-1 (not dequantised); "
                         f"use levels=None for continuous data")


class QuantizedDataWarning(UserWarning):
    """Data that sit on a quantisation grid where a density of continuous (or dequantised) data is wanted.
    Silence it with ``warnings.simplefilter("ignore", QuantizedDataWarning)``."""


MIN_REPEATS = 4  # entries per distinct value that quantised data must show: fewer is too little to tell


def grid_levels(x: torch.Tensor, max_levels: int = 256) -> int | None:
    """The smallest L <= ``max_levels`` such that x looks quantised onto the L-level grid ``2k/(L-1)-1``:
    at least two distinct values, repeated (at least ``MIN_REPEATS`` entries per distinct value), all on
    the grid. None for continuous or dequantised data, and for data too small to tell: a few values lie on
    some grid of up to 256 levels by chance, so e.g. 4 points in 2-D (8 entries) count only with at most 2
    distinct values, while 50 points (100 entries) of a 17-level grid count. Sorts the first 65536 values to
    rule out continuous data, then reads x whole for the candidate L; synchronises with the host."""
    flat = x.detach().flatten()
    if not flat.is_floating_point():
        return None
    head = flat[:65536]
    values = torch.unique(head).double()
    if not 2 <= values.numel() <= min(max_levels, head.numel() // MIN_REPEATS):  # too few repeats to tell
        return None
    steps = torch.arange(1, max_levels, device=flat.device, dtype=torch.float64)[:, None]   # L - 1
    k = ((values + 1) * steps / 2).round()                                               # [L - 1, distinct]
    fits = ((2 * k / steps - 1 - values).abs() <= GRID_ATOL) & (k >= 0) & (k <= steps)
    found = fits.all(1).nonzero()
    if found.numel() == 0:
        return None
    levels = 2 + int(found[0])
    return levels if bool(((flat - quantize(flat, levels)).abs() <= GRID_ATOL).all()) else None


def warn_if_quantized(x: torch.Tensor, message: str, stacklevel: int = 3) -> None:
    """A ``QuantizedDataWarning`` of ``message`` (formatted with ``levels``) when x looks quantised
    (``grid_levels``: it needs ``MIN_REPEATS`` entries per distinct value, so a handful of points pass silently)."""
    levels = grid_levels(x)
    if levels is not None:
        warnings.warn(f"x lies on the {levels}-level grid 2k/(L-1)-1 (quantised data): "
                      + message.format(levels=levels), QuantizedDataWarning, stacklevel=stacklevel)
