"""UniPC (Zhao et al. 2023): the unified predictor-corrector in log-SNR, data prediction, B(h) = bh1 or bh2."""
from __future__ import annotations

import math
from typing import Literal

import torch

from ..core.checks import check_choice
from ..core.flow import Model
from .common import Recorder, check_grid, on
from .logsnr import log_snr_grid, step_orders

Order = Literal[1, 2, 3]
Variant = Literal["bh1", "bh2"]


def sample_unipc(model: Model, x: torch.Tensor, t: torch.Tensor, *, order: Order = 2, corrector: bool = True,
                 variant: Variant = "bh2", lower_order_final: bool = True, generator=None,
                 record: Recorder | None = None) -> torch.Tensor:
    """UniPC (Zhao et al. 2023): UniP predictor with the UniC corrector.

    Data prediction in the B(h) form (as diffusers' UniPCMultistepScheduler), from t = t_i to s = t_{i+1}:
    h = lambda_s - lambda_t, hh = -h, m0 = x0_hat at t_i and m_k at t_{i-k}, r_k = (lambda_{t_{i-k}} - lambda_t) / h,
    D_k = (m_k - m0) / r_k, and for a step of order p

        B(h) = hh ("bh1") or expm1(hh) ("bh2");  b_n = n! hh phi_{n+1}(hh) / B(h)   (phi_1(z) = expm1(z) / z,
        phi_{n+1}(z) = (phi_n(z) - 1 / n!) / z);  R_{nk} = r_k^(n-1),  n, k = 1..p,  r_p = 1
        UniP-p:  x_s = sigma_s / sigma_t x - alpha_s expm1(hh) m0 - alpha_s B(h) sum_{k<p} rho_k D_k,
                 R[:p-1, :p-1] rho = b[:p-1]  (rho = 1/2 for p = 2)
        UniC-p:  with m_s = x0_hat at the predicted x_s (the next step's call, so no extra NFE),
                 x_s^c = sigma_s / sigma_t x - alpha_s expm1(hh) m0 - alpha_s B(h) (sum_{k<p} rho_k D_k
                         + rho_p (m_s - m0)),  R rho = b  (rho = 1/2 for p = 1)

    UniC-p corrects step i once x0_hat at its end is known, raising its order to p + 1; the next step starts
    from x_s^c but keeps m_s (taken at the uncorrected point) in its history; the last step is not corrected.
    Warm-up: step i has order <= i + 1; lower_order_final: step i of K has order <= K - i (any K, as
    diffusers' UniPCMultistepScheduler); a step onto t = 0 (h = inf) is order 1, x_s = x0_hat.
    ``corrector=False`` is UniP alone.
    """
    check_grid(t)
    check_choice("order", order, Order)
    check_choice("corrector", corrector, (True, False))
    check_choice("variant", variant, Variant)
    check_choice("lower_order_final", lower_order_final, (True, False))
    g = log_snr_grid(model.sde, t)
    k = len(g.h)
    p = step_orders(g.h, order, lower_order_final)
    c_x = g.sigma[1:] / g.sigma[:-1]
    c_m0 = -g.alpha[1:] * torch.expm1(-g.h)
    c_b = torch.zeros_like(g.h)
    r = torch.ones(k, order, dtype=torch.float64)     # step i: r_1..r_{p-1}; rho of UniP-p, of UniC-p (rho_p last)
    rho_p, rho_c = torch.zeros(k, order, dtype=torch.float64), torch.zeros(k, order, dtype=torch.float64)
    for i in range(k):
        if math.isinf(g.h[i]):                        # onto t = 0: order 1, x_s = x0_hat (and never corrected)
            continue
        q = p[i]
        r[i, :q - 1] = (g.lam[i - torch.arange(1, q)] - g.lam[i]) / g.h[i]
        big_r, b, bh = _r_b(r[i, :q - 1], -g.h[i], variant)
        c_b[i] = -g.alpha[i + 1] * bh
        if q >= 2:
            rho_p[i, :q - 1] = 0.5 if q == 2 else torch.linalg.solve(big_r[:-1, :-1], b[:-1])
        rho_c[i, :q] = 0.5 if q == 1 else torch.linalg.solve(big_r, b)
    c_x, c_m0, c_b, r, rho_p, rho_c = on(model, c_x, c_m0, c_b, r, rho_p, rho_c)
    if record is not None:
        record(t[0], x)
    m, x_prev = [], None                              # x0_hat history (newest first); the last step's start
    for i in range(k):
        m_s = model.x0(x, t[i])
        if corrector and i > 0:                       # UniC-p of step i - 1, with m_s at its end
            j, q = i - 1, p[i - 1]
            x = c_x[j] * x_prev + c_m0[j] * m[0] + c_b[j] * (
                _sum(rho_c[j], r[j], m, q - 1) + rho_c[j, q - 1] * (m_s - m[0]))
        if record is not None and i > 0:
            record(t[i], x)                           # the state step i starts from (corrected)
        m = [m_s] + m[:order - 1]
        x_prev = x
        x = c_x[i] * x + c_m0[i] * m[0]               # UniP-p
        if p[i] >= 2:
            x = x + c_b[i] * _sum(rho_p[i], r[i], m, p[i] - 1)
    if record is not None:
        record(t[-1], x)
    return x


def _r_b(r: torch.Tensor, hh: torch.Tensor, variant: str):
    """R (p x p, R_nk = r_k^(n-1) with r_p = 1), b (b_n = n! hh phi_{n+1}(hh) / B(h)) and B(h)."""
    rks = torch.cat([r, torch.ones(1, dtype=torch.float64)])
    p = len(rks)
    bh = hh if variant == "bh1" else torch.expm1(hh)
    hphi = torch.expm1(hh) / hh - 1                   # hh phi_2(hh)
    b, factorial = [], 1.0
    for n in range(1, p + 1):
        b.append(hphi * factorial / bh)
        factorial *= n + 1
        hphi = hphi / hh - 1 / factorial              # hh phi_{n+2}(hh)
    return torch.stack([rks ** (n - 1) for n in range(1, p + 1)]), torch.stack(b), bh


def _sum(rho: torch.Tensor, r: torch.Tensor, m: list[torch.Tensor], n: int):
    """sum_{k=1..n} rho_k D_k, D_k = (m_k - m_0) / r_k (0 for n = 0)."""
    out = 0
    for j in range(n):
        out = out + rho[j] * ((m[j + 1] - m[0]) / r[j])
    return out
