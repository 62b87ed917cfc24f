"""What the exponential integrators in log-SNR (DPM-Solver++, UniPC) share: the grid as lambda, h and the
order of each step.

lambda = log(alpha / sigma) increases towards the data; a step from t to s (s < t) has h = lambda_s -
lambda_t > 0. At t = 0, sigma = 0 and lambda = +inf: a step onto the data has h = inf, exp(-h) = 0, and is
of order 1, x_s = x0_hat (as DDIM's last step, and diffusers' ``final_sigmas_type="zero"``). All of it is
float64 on the CPU, from the SDE; x0_hat itself is ``Model.x0``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..core.sde import VPSDE


class LogSNRGrid(NamedTuple):
    """alpha, sigma, lambda at the K + 1 times of a grid, and h [K], the step sizes in lambda."""
    alpha: torch.Tensor
    sigma: torch.Tensor
    lam: torch.Tensor
    h: torch.Tensor


def log_snr_grid(sde: VPSDE, t: torch.Tensor) -> LogSNRGrid:
    """The grid ``t`` in log-SNR (t = 0 gives sigma = 0, lambda = +inf, h = inf)."""
    lam = sde.log_snr(t)
    return LogSNRGrid(sde.alpha(t), sde.sigma(t), lam, lam[1:] - lam[:-1])


def step_orders(h: torch.Tensor, order: int, lower_order_final: bool, *, warmup: bool = True,
                final_below: int | None = None) -> list[int]:
    """The order of each of the K = len(h) steps: ``order``, lowered

    - by the warm-up of a multistep method (``warmup``): step i has i earlier x0_hat, so order <= i + 1;
    - by ``lower_order_final``: step i has order <= K - i (only when K < ``final_below``, if given;
      DPM-Solver++ and diffusers' DPMSolverMultistepScheduler use 15, UniPC always lowers);
    - to 1 for a step onto t = 0 (h = inf).
    """
    k = len(h)
    orders = []
    for i in range(k):
        p = min(order, i + 1) if warmup else order
        if lower_order_final and (final_below is None or k < final_below):
            p = min(p, k - i)
        orders.append(1 if bool(torch.isinf(h[i])) else p)
    return orders
