"""Predictor-corrector sampling (Song et al. 2021, Algorithms 2 and 4) for the VP-SDE."""
from __future__ import annotations

import math
from numbers import Integral
from typing import Literal

import torch

from ..core.checks import check_choice, check_range
from ..core.flow import Model, final_step
from .common import Recorder, check_grid, on, transition

Predictor = Literal["reverse_diffusion", "ancestral"]


def sample_pc(model: Model, x: torch.Tensor, t: torch.Tensor, *, predictor: Predictor = "reverse_diffusion",
              corrector_steps: int = 1, snr: float = 0.16, final_denoise: bool = True, generator=None,
              record: Recorder | None = None) -> torch.Tensor:
    """Predictor-corrector sampling (Song et al. 2021, Algorithm 4) with a Langevin corrector.

    From t = t_i to s = t_{i+1}, with b = sigma_{t|s}^2 = 1 - alpha_bar_t / alpha_bar_s (the step's discrete
    beta) and score = -eps / sigma:

        predictor   x <- (2 - sqrt(1 - b)) x + b score(x, t) + sqrt(b) z     ("reverse_diffusion", Algorithm 4)
                    x <- (x + b score(x, t)) / sqrt(1 - b) + sqrt(b) z       ("ancestral", score_sde's VP one)
        corrector   corrector_steps times, at s (Algorithm 5):
                    g = score(x, s),  z ~ N(0, I)
                    e = 2 (1 - b) (snr ||z|| / ||g||)^2      (Algorithm 5's alpha_i, b the step just taken)
                    x <- x + e g + sqrt(2 e) z

    ||.|| is the per-sample L2 norm averaged over the batch (as score_sde's LangevinCorrector), so e is one
    step size for the batch, computed on the device. The order is Algorithm 4's: predictor, then corrector
    at the new time (score_sde's pc_sampler runs the corrector at t_i before the predictor instead).
    corrector_steps = 0 is the predictor alone: "reverse_diffusion" is then an Euler-Maruyama-like
    discretisation of the reverse SDE, "ancestral" DDPM's update with variance beta. Ends at t[-1] > 0,
    then (``final_denoise``) x0_hat there. K (1 + corrector_steps) network calls, + 1 for final_denoise.
    """
    check_grid(t, end_above_zero=True)
    check_choice("predictor", predictor, Predictor)
    if isinstance(corrector_steps, bool) or not isinstance(corrector_steps, Integral) or corrector_steps < 0:
        raise ValueError(f"corrector_steps must be a non-negative integer; got {corrector_steps!r}")
    check_range("snr", snr, 0.0, math.inf)
    check_choice("final_denoise", final_denoise, (True, False))
    t, s = t[:-1], t[1:]
    _, sigma_t, _, sigma_s, _, b = transition(model.sde, t, s)
    if predictor == "reverse_diffusion":
        c_x = 2 - (1 - b).sqrt()
        c_eps = -b / sigma_t
    else:
        c_x = 1 / (1 - b).sqrt()
        c_eps = -b / (sigma_t * (1 - b).sqrt())
    c_x, c_eps, std, c_score, c_step = on(model, c_x, c_eps, b.sqrt(), -1 / sigma_s, 2 * (1 - b) * snr ** 2)
    if record is not None:
        record(t[0], x)
    for i in range(len(t)):
        eps = model.eps(x, t[i])
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = c_x[i] * x + c_eps[i] * eps + std[i] * z
        for _ in range(corrector_steps):
            g = c_score[i] * model.eps(x, s[i])
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            step = c_step[i] * (_mean_norm(z) / _mean_norm(g)) ** 2
            x = x + step * g + (2 * step).sqrt() * z
        if record is not None:
            record(s[i], x)
    return final_step(model, x, s[-1], final_denoise, record)


def _mean_norm(v: torch.Tensor) -> torch.Tensor:
    """The per-sample L2 norm averaged over the batch, a 0-dim tensor on v's device."""
    return v.flatten(1).norm(dim=1).mean()
