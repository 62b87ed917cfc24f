"""Time grids: where a sampler evaluates the network.

A grid is a monotone map ``tau(u)`` from ``u`` in [0, 1] onto [t_lo, 1] (``tau(0) = t_lo``,
``tau(1) = 1``); K steps visit ``t_i = tau(i / K)``, i = K, ..., 0. All schedule math is the SDE's.

    uniform     t = t_lo + (1 - t_lo) u                       (DDPM: t_i = i / K with t_lo = 0)
    quadratic   t = t_lo + (1 - t_lo) u^2                     (DDIM, Song et al. 2021, App. D.2)
    log_snr     log_snr(t) uniform in u                       (DPM-Solver, Lu et al. 2022)
    karras      s^(1/rho) uniform in u, s = sigma / alpha, rho = 7   (EDM, Karras et al. 2022, eq. 5)

``uniform`` and ``quadratic`` reach t_lo = 0; ``log_snr`` and ``karras`` need t_lo > 0.
"""
from __future__ import annotations

import torch

from ..sde import VPSDE

RHO = 7.0


def _uniform(sde: VPSDE, u: torch.Tensor, t_lo: torch.Tensor) -> torch.Tensor:
    return t_lo + (1 - t_lo) * u


def _quadratic(sde: VPSDE, u: torch.Tensor, t_lo: torch.Tensor) -> torch.Tensor:
    return t_lo + (1 - t_lo) * u ** 2


def _log_snr(sde: VPSDE, u: torch.Tensor, t_lo: torch.Tensor) -> torch.Tensor:
    lam_lo, lam_hi = sde.log_snr(t_lo), sde.log_snr(torch.ones_like(t_lo))
    return sde.t_from_log_snr(lam_lo + u * (lam_hi - lam_lo))


def _karras(sde: VPSDE, u: torch.Tensor, t_lo: torch.Tensor) -> torch.Tensor:
    s_lo, s_hi = (torch.exp(-sde.log_snr(t) / RHO) for t in (t_lo, torch.ones_like(t_lo)))
    s = (s_lo + u * (s_hi - s_lo)) ** RHO
    return sde.t_from_log_snr(-torch.log(s))


GRIDS = {"uniform": _uniform, "quadratic": _quadratic, "log_snr": _log_snr, "karras": _karras}
GRIDS_FROM_ZERO = ("uniform", "quadratic")  # the grids that may end at t_lo = 0


def tau(sde: VPSDE, grid: str, u, t_lo: float) -> torch.Tensor:
    """The grid map ``tau(u)`` in float64 on the CPU (u a float or a CPU tensor)."""
    u = torch.as_tensor(u, dtype=torch.float64)
    return GRIDS[grid](sde, u, torch.tensor(float(t_lo), dtype=torch.float64))


def time_grid(sde: VPSDE, grid: str, steps: int, t_lo: float) -> torch.Tensor:
    """``[t_K, ..., t_0] = tau([K, ..., 0] / K)``: K + 1 decreasing times from 1 to t_lo (float64, CPU).

    The end points are exact: t_K = 1 and t_0 = t_lo.
    """
    t = tau(sde, grid, torch.arange(steps, -1, -1, dtype=torch.float64) / steps, t_lo)
    t[0], t[-1] = 1.0, t_lo
    return t


def tau_and_rate(sde: VPSDE, grid: str, u, t_lo: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``tau(u)`` and ``d tau / du`` at every point of ``u`` (a float or a CPU tensor), float64 on the
    CPU: one autograd call, ``tau`` being elementwise."""
    with torch.enable_grad():
        u = torch.as_tensor(u, dtype=torch.float64).clone().requires_grad_()
        t = tau(sde, grid, u, t_lo)
        (rate,) = torch.autograd.grad(t.sum(), u)
    return t.detach(), rate
