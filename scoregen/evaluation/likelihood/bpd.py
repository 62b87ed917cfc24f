"""The one bits/dim convention that every model of the package (diffusion, VAE) is reported in:
``bits_per_dim`` and ``dequantize``.

Data in [-1, 1] are the level k of L levels mapped to ``x = 2 k / (L - 1) - 1`` (17 levels for the
digits, 256 for 8-bit images), so each point is the centre of a bin of width ``Delta = 2 / (L - 1)``.

- A *density* model p (PF-ODE, a VAE with a continuous decoder) is evaluated on uniformly dequantised
  data ``x + Delta (u - 1/2)``, ``u ~ U[0, 1)^D`` (``dequantize``). Since ``P(k) = int_bin p`` and
  Jensen's inequality, ``log P(k) >= E_u[log p(x + Delta (u - 1/2))] + D log Delta`` (Theis et al. 2016).
- A *discrete* model (the DDPM bound and the VAE with their discretised-Gaussian decoders) gives
  ``log P(k)`` (or a bound on it) directly: no Delta term.
- ``bits/dim = -log P / (D ln 2)``: ``bits_per_dim(logp, D, levels=L)`` for a density on dequantised
  data, ``bits_per_dim(logp, D)`` for a discrete log-probability. For continuous data (levels None) the
  same call without levels reports the density itself (it may be negative).

A model that is uniform on the L^D bins has exactly log2(L) bits/dim under both readings.
"""
from __future__ import annotations

import math

import torch

from ...core.quantization import check_levels


def bits_per_dim(logp: torch.Tensor, dim: int, levels: int | None = None) -> torch.Tensor:
    """``-(logp + D log Delta) / (D ln 2)`` with ``Delta = 2 / (L - 1)``; ``-logp / (D ln 2)`` for levels None.

    Args:
        logp: log-likelihood in nats (per sample, any shape): a log-density of dequantised data when
            ``levels`` is given, else a discrete log-probability (or a density of continuous data).
        dim: D, the number of dimensions of one sample.
        levels: L, the data's quantisation levels, or None (see the module docstring).
    """
    if int(dim) != dim or dim < 1:
        raise ValueError(f"dim must be a positive integer; got {dim!r}")
    check_levels(levels)
    log_delta = 0.0 if levels is None else math.log(2 / (levels - 1))
    return -(logp + dim * log_delta) / (dim * math.log(2))


def dequantize(x: torch.Tensor, levels: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantisation ``x + Delta (u - 1/2)``, ``u ~ U[0, 1)``, ``Delta = 2 / (L - 1)``."""
    if levels is None:
        raise ValueError("levels must be an integer >= 2 to dequantise; continuous data need none")
    check_levels(levels)
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + 2 / (levels - 1) * (u - 0.5)
