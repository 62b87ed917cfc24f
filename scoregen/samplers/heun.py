"""EDM's sampler (Karras et al. 2022, Algorithm 2): Heun's method in y = x / alpha, s = sigma / alpha, with churn."""
from __future__ import annotations

import math

import torch

from ..core.checks import check_range
from ..core.flow import Model
from .common import Recorder, check_grid, on


def sample_heun(model: Model, x: torch.Tensor, t: torch.Tensor, *, s_churn: float = 0.0, s_tmin: float = 0.0,
                s_tmax: float = float("inf"), s_noise: float = 1.0, generator=None,
                record: Recorder | None = None) -> torch.Tensor:
    """EDM's Heun sampler (Karras et al. 2022, Algorithm 2); s_churn = 0 is deterministic.

    In EDM's variables y = x / alpha_t, s = sigma_t / alpha_t (the VE sigma) the PF-ODE is dy/ds = eps
    (EDM eq. 4 with D = x0_hat: d = (y - D) / s = eps). K steps from s_i = s(t_i) to s_{i+1}:

        gamma_i  = min(s_churn / K, sqrt(2) - 1)  if s_tmin <= s_i <= s_tmax,  else 0
        s_hat    = min(s_i (1 + gamma_i), s(1))                 (t_hat = t(s_hat) <= 1: churn stops at t = 1)
        y_hat    = y_i + sqrt(s_hat^2 - s_i^2) s_noise z
        d        = eps(alpha(t_hat) y_hat, t_hat)
        y_{i+1}  = y_hat + (s_{i+1} - s_hat) d                  (Euler)
        y_{i+1}  = y_hat + (s_{i+1} - s_hat) (d + d') / 2       (Heun, if s_{i+1} > 0),
                   d' = eps(alpha(t_{i+1}) y_{i+1}, t_{i+1})

    with t(s) = ``t_from_log_snr(-log s)``. On a grid ending at t = 0 the last step is Euler onto
    s = 0, which is DDIM's last step (x0_hat): 2K - 1 network calls; a grid ending above 0 takes
    K Heun steps, 2K calls. s_churn = 0 (the default) is Heun's method for the PF-ODE in s, second
    order, and draws no noise; s_tmin, s_tmax, s_noise are EDM's S_tmin, S_tmax, S_noise in s units.
    """
    check_grid(t)
    check_range("s_churn", s_churn, 0.0, math.inf, lo_open=False)
    check_range("s_tmin", s_tmin, 0.0, math.inf, lo_open=False)
    check_range("s_tmax", s_tmax, 0.0, math.inf, lo_open=False, hi_open=False)
    check_range("s_noise", s_noise, 0.0, math.inf)
    if s_tmin > s_tmax:
        raise ValueError(f"s_tmin must not exceed s_tmax; got s_tmin={s_tmin!r}, s_tmax={s_tmax!r}")
    sde, steps = model.sde, len(t) - 1
    s = torch.exp(-sde.log_snr(t))                      # sigma / alpha; exactly 0 at t = 0
    t_i, t_next, s_i, s_next = t[:-1], t[1:], s[:-1], s[1:]
    gamma = min(s_churn / steps, math.sqrt(2) - 1) * ((s_tmin <= s_i) & (s_i <= s_tmax)).double()
    s_max = torch.exp(-sde.log_snr(torch.tensor(1.0, dtype=torch.float64)))
    s_hat = torch.minimum(s_i * (1 + gamma), s_max).maximum(s_i)
    churn = s_hat > s_i                                 # CPU decisions, made before the loop
    t_hat = torch.where(churn, sde.t_from_log_snr(-torch.log(s_hat)).clamp(max=1.0).maximum(t_i), t_i)
    std = s_noise * ((s_hat - s_i) * (s_hat + s_i)).sqrt()
    inv_alpha_0, alpha_hat, alpha_next, h, std = on(model, 1 / sde.alpha(t[:1]), sde.alpha(t_hat),
                                                    sde.alpha(t_next), s_next - s_hat, std)
    churn, heun = churn.tolist(), (t_next > 0).tolist()
    if record is not None:
        record(t[0], x)
    y = x * inv_alpha_0[0]
    for i in range(steps):
        if churn[i]:
            y = y + std[i] * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        d = model.eps(alpha_hat[i] * y, t_hat[i])
        y_next = y + h[i] * d
        if heun[i]:
            d_next = model.eps(alpha_next[i] * y_next, t_next[i])
            y_next = y + h[i] * (0.5 * (d + d_next))
        y = y_next
        if record is not None:
            record(t_next[i], alpha_next[i] * y)
    return alpha_next[-1] * y
