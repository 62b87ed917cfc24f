"""DDIM (Song, Meng & Ermon 2021, eq. 12) on any decreasing grid 1 >= t_K > ... > t_0 = 0."""
from __future__ import annotations

import torch

from ..sde import VPSDE
from .common import Model, Recorder, discrete_grid, on, transition


def sample_ddim(model: Model, sde: VPSDE, x: torch.Tensor, *, steps: int, grid: str, t_min: float,
                eta: float = 0.0, generator=None, record: Recorder | None = None) -> torch.Tensor:
    """From t = t_i to s = t_{i-1} (eq. 12, with eq. 16's sigma as c):

        x0_hat = (x_t - sigma_t eps) / alpha_t
        c      = eta sigma_s / sigma_t sigma_{t|s}         (sigma_{t|s}^2 = 1 - alpha_t^2 / alpha_s^2)
        x_s    = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps + c z

    eta = 0 is deterministic (the PF-ODE's first-order exponential integrator); eta = 1 is
    ancestral sampling with the posterior variance (``ddpm``), draw for draw.
    """
    t, s = discrete_grid(sde, grid, steps, t_min)
    alpha_t, sigma_t, alpha_s, sigma_s, _, sigma2_ts = transition(sde, t, s)
    c = eta * sigma_s / sigma_t * sigma2_ts.sqrt()
    t, s, alpha_t, sigma_t, alpha_s, c_eps, c = on(model, t, s, alpha_t, sigma_t, alpha_s,
                                                   (sigma_s ** 2 - c ** 2).clamp(min=0).sqrt(), c)
    if record is not None:
        record(t[0], x)
    for i in range(steps):
        eps = model(x, t[i])
        x0_hat = (x - sigma_t[i] * eps) / alpha_t[i]
        x = alpha_s[i] * x0_hat + c_eps[i] * eps
        if eta > 0:
            x = x + c[i] * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if record is not None:
            record(s[i], x)
    return x
