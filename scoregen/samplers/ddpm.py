"""Ancestral sampling (Ho et al. 2020, Algorithm 2) on any decreasing grid 1 >= t_K > ... > t_0 >= 0."""
from __future__ import annotations

import torch

from ..core.checks import check_choice
from ..core.flow import Model, Variance
from .common import Recorder, check_grid, on, transition


def sample_ddpm(model: Model, x: torch.Tensor, t: torch.Tensor, *, variance: Variance = "posterior",
                generator=None, record: Recorder | None = None) -> torch.Tensor:
    """Ancestral DDPM (Ho et al. 2020, Algorithm 2) on any grid.

    x_s ~ q(x_s | x_t, x0_hat) from t = t_i to s = t_{i-1} (Kingma et al. 2021, App. A):

        x0_hat = (x_t - sigma_t eps) / alpha_t
        mean   = alpha_{t|s} sigma_s^2 / sigma_t^2 x_t + alpha_s sigma_{t|s}^2 / sigma_t^2 x0_hat
        var    = sigma_{t|s}^2 sigma_s^2 / sigma_t^2  ("posterior", beta-tilde)  or  sigma_{t|s}^2  ("beta")

    with no noise on the last step. K = 1000 uniform steps of
    ``VPSDE.from_ddpm_betas(linspace(1e-4, 0.02, 1000))`` is the original DDPM; fewer is respaced DDPM.
    """
    check_grid(t)
    check_choice("variance", variance, Variance)
    t, s = t[:-1], t[1:]
    _, sigma_t, alpha_s, sigma_s, alpha_ts, sigma2_ts = transition(model.sde, t, s)
    c_x = alpha_ts * sigma_s ** 2 / sigma_t ** 2
    c_x0 = alpha_s * sigma2_ts / sigma_t ** 2
    var = sigma2_ts * sigma_s ** 2 / sigma_t ** 2 if variance == "posterior" else sigma2_ts.clone()
    var[-1] = 0.0
    c_x, c_x0, std = on(model, c_x, c_x0, var.sqrt())
    if record is not None:
        record(t[0], x)
    for i in range(len(t)):
        x0_hat = model.x0(x, t[i])
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = c_x[i] * x + c_x0[i] * x0_hat + std[i] * z
        if record is not None:
            record(s[i], x)
    return x
