"""DDIM (Song, Meng & Ermon 2021, eq. 12) on any decreasing grid 1 >= t_K > ... > t_0 >= 0."""
from __future__ import annotations

import torch

from ..core.checks import check_range
from ..core.flow import Model
from .common import Recorder, check_grid, on, transition


def sample_ddim(model: Model, x: torch.Tensor, t: torch.Tensor, *, eta: float = 0.0, generator=None,
                record: Recorder | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12); eta = 0 is deterministic.

    From t = t_i to s = t_{i-1} (eq. 16's sigma as c):

        x0_hat = (x_t - sigma_t eps) / alpha_t
        c      = eta sigma_s / sigma_t sigma_{t|s}         (sigma_{t|s}^2 = 1 - alpha_t^2 / alpha_s^2)
        x_s    = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps + c z

    eta = 0 is deterministic (the PF-ODE's first-order exponential integrator); eta = 1 is
    ancestral sampling with the posterior variance (``ddpm``), draw for draw. eta in [0, 1].
    """
    check_grid(t)
    check_range("eta", eta, 0.0, 1.0, lo_open=False, hi_open=False)
    t, s = t[:-1], t[1:]
    _, sigma_t, alpha_s, sigma_s, _, sigma2_ts = transition(model.sde, t, s)
    c = eta * sigma_s / sigma_t * sigma2_ts.sqrt()
    alpha_s, c_eps, c = on(model, alpha_s, (sigma_s ** 2 - c ** 2).clamp(min=0).sqrt(), c)
    if record is not None:
        record(t[0], x)
    for i in range(len(t)):
        eps = model.eps(x, t[i])
        x = alpha_s[i] * model.x0(x, t[i], eps) + c_eps[i] * eps
        if eta > 0:
            x = x + c[i] * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if record is not None:
            record(s[i], x)
    return x
