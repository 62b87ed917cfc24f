"""DPM-Solver++ (Lu et al. 2022, data prediction) in log-SNR: multistep and singlestep, orders 1-3, ODE and SDE."""
from __future__ import annotations

import math
from typing import Literal

import torch

from ..core.checks import check_choice, check_range
from ..core.flow import Model
from .common import Recorder, check_grid, on
from .logsnr import log_snr_grid, step_orders

Order = Literal[1, 2, 3]
Variant = Literal["multistep", "singlestep"]
FINAL_BELOW = 15  # lower_order_final acts on grids of fewer steps (Lu et al. 2022; diffusers)


def sample_dpmpp(model: Model, x: torch.Tensor, t: torch.Tensor, *, order: Order = 2, variant: Variant = "multistep",
                 lower_order_final: bool = True, eta: float = 0.0, generator=None,
                 record: Recorder | None = None) -> torch.Tensor:
    """DPM-Solver++ (Lu et al. 2022), data prediction in log-SNR; 2M by default, eta > 0 its SDE variant.

    From t = t_i to s = t_{i+1}, h = lambda_s - lambda_t (lambda = log(alpha / sigma)), m0, m1, m2 the
    x0_hat at t_i, t_{i-1}, t_{i-2}, r0 = h_{i-1} / h, r1 = h_{i-2} / h, and (eta = 0)

        phi1 = expm1(-h),  phi2 = phi1 / h + 1,  phi3 = phi2 / h - 1/2
        1M:  x_s = sigma_s / sigma_t x - alpha_s phi1 m0                          (= DDIM, eta 0)
        2M:  x_s = 1M - 1/2 alpha_s phi1 (m0 - m1) / r0                      (Lu et al., Alg. 2, "midpoint")
        3M:  x_s = 1M + alpha_s phi2 D1 - 2 alpha_s phi3 D2,
             D1_0 = (m0 - m1) / r0,  D1_1 = (m1 - m2) / r1,
             D1 = D1_0 + r0 / (r0 + r1) (D1_0 - D1_1) ~ h x0',  D2 = (D1_0 - D1_1) / (r0 + r1) ~ h^2 x0'' / 2.

    3M is the Taylor expansion of x0_hat in lambda to second order: x_s - 1M = alpha_s (h phi2 x0' - h^2 phi3 x0''),
    hence 2 phi3 on D2. The dpm-solver reference code (and diffusers' and k-diffusion's 3M after it) weighs D2 by
    phi3 alone, which leaves an O(h^3) local error: their 3M converges at order 2, this one at 3 (tests), and
    equals unipc(order=3, corrector=False). Multistep: one network call a step; the first steps use the x0_hat
    they have (order <= i + 1).
    eta > 0 (multistep; DPM-Solver++(2M) SDE, k-diffusion's dpmpp_2m_sde / dpmpp_3m_sde): phi1..3 at
    h_eta = (1 + eta) h, sigma_s / sigma_t x becomes sigma_s / sigma_t exp(-eta h) x, and
    sigma_s sqrt(1 - exp(-2 eta h)) z is added; eta = 1 is diffusers' "sde-dpmsolver++", and its order 1 is
    ancestral DDPM (posterior variance) draw for draw.

    Singlestep (Lu et al. 2022, Alg. 1, DPM-Solver++(2S); (3S) as in the dpm-solver reference): a step of
    order k makes k calls, at s1, s2 placed in lambda at lambda_t + r h,

        2S (r1 = 1/2):  u  = sigma_s1 / sigma_t x - alpha_s1 expm1(-r1 h) m0,  m1 = x0_hat(u, s1)
                        x_s = 1M - 1 / (2 r1) alpha_s phi1 (m1 - m0)
        3S (r1 = 1/3, r2 = 2/3):  u1, m1 as above;
                        u2 = sigma_s2 / sigma_t x - alpha_s2 expm1(-r2 h) m0 + r2 / r1 alpha_s2 phi2(r2 h) (m1 - m0)
                        x_s = 1M + 1 / r2 alpha_s phi2 (m2 - m0),  m2 = x0_hat(u2, s2).

    lower_order_final: on grids of fewer than 15 steps, step i of K has order <= K - i. A step onto
    t = 0 (h = inf) is order 1: x_s = x0_hat.
    """
    check_grid(t)
    check_choice("order", order, Order)
    check_choice("variant", variant, Variant)
    check_choice("lower_order_final", lower_order_final, (True, False))
    check_range("eta", eta, 0.0, math.inf, lo_open=False)
    if eta > 0 and variant == "singlestep":
        raise ValueError("eta > 0 (the SDE variant) needs variant='multistep'; "
                         "singlestep DPM-Solver++ is an ODE solver here")
    g = log_snr_grid(model.sde, t)
    h, alpha_s, sigma_t, sigma_s = g.h, g.alpha[1:], g.sigma[:-1], g.sigma[1:]
    p = step_orders(h, order, lower_order_final, warmup=variant == "multistep", final_below=FINAL_BELOW)
    if record is not None:
        record(t[0], x)
    if variant == "singlestep":
        return _singlestep(model, x, t, g, p, record)

    h_eta = (1 + eta) * h
    phi1 = torch.expm1(-h_eta)
    phi2 = phi1 / h_eta + 1
    phi3 = phi2 / h_eta - 0.5
    c_x = sigma_s / sigma_t * (torch.exp(-eta * h) if eta > 0 else 1.0)
    c_z = sigma_s * (-torch.expm1(-2 * eta * h)).sqrt() if eta > 0 else torch.zeros_like(h)
    p_ = torch.tensor(p)
    r0 = torch.ones_like(h)
    r1 = torch.ones_like(h)
    r0[1:] = torch.where(p_[1:] >= 2, h[:-1] / h[1:], 1.0)     # order 1 where h = inf: no 1 / r0 with r0 = 0
    r1[2:] = torch.where(p_[2:] >= 3, h[:-2] / h[2:], 1.0)
    c_d1 = torch.where(p_ == 2, -0.5 * alpha_s * phi1, torch.where(p_ == 3, alpha_s * phi2, 0.0))
    c_d2 = torch.where(p_ == 3, -2 * alpha_s * phi3, 0.0)
    c_x, c_m0, c_d1, c_d2, r0, r1, c_z = on(model, c_x, -alpha_s * phi1, c_d1, c_d2, r0, r1, c_z)
    m = []                                            # x0_hat history, newest first
    for i in range(len(h)):
        m = [model.x0(x, t[i])] + m[:2]
        x = c_x[i] * x + c_m0[i] * m[0]
        if p[i] == 2:
            x = x + c_d1[i] * (m[0] - m[1]) / r0[i]
        elif p[i] == 3:
            d1_0, d1_1 = (m[0] - m[1]) / r0[i], (m[1] - m[2]) / r1[i]
            x = x + c_d1[i] * (d1_0 + r0[i] / (r0[i] + r1[i]) * (d1_0 - d1_1)) \
                + c_d2[i] * (d1_0 - d1_1) / (r0[i] + r1[i])
        if eta > 0:
            x = x + c_z[i] * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        if record is not None:
            record(t[i + 1], x)
    return x


def _singlestep(model: Model, x: torch.Tensor, t: torch.Tensor, g, p: list[int], record) -> torch.Tensor:
    """DPM-Solver++(1S/2S/3S): the intermediate times and coefficients of each step, then the loop."""
    sde, h = model.sde, g.h
    alpha_s, sigma_t, sigma_s = g.alpha[1:], g.sigma[:-1], g.sigma[1:]
    r1 = torch.tensor([0.5 if k == 2 else 1 / 3 for k in p], dtype=torch.float64)
    r2 = torch.full_like(h, 2 / 3)
    k1 = torch.tensor([k >= 2 for k in p])                     # steps with intermediate points: h finite
    h_ = torch.where(k1, h, 1.0)
    s1 = torch.where(k1, sde.t_from_log_snr(g.lam[:-1] + r1 * h_), t[:-1])
    s2 = torch.where(k1, sde.t_from_log_snr(g.lam[:-1] + r2 * h_), t[:-1])
    phi1 = torch.expm1(-h)
    phi2 = torch.where(k1, phi1 / h_ + 1, 0.0)
    phi2_r2 = torch.expm1(-r2 * h_) / (r2 * h_) + 1
    a1, a2 = sde.alpha(s1), sde.alpha(s2)
    coeffs = on(model, sigma_s / sigma_t, -alpha_s * phi1, sde.sigma(s1) / sigma_t, -a1 * torch.expm1(-r1 * h_),
                sde.sigma(s2) / sigma_t, -a2 * torch.expm1(-r2 * h_), r2 / r1 * a2 * phi2_r2,
                -0.5 / r1 * alpha_s * phi1, alpha_s * phi2 / r2)
    c_x, c_m0, c1_x, c1_m0, c2_x, c2_m0, c2_d, c_2s, c_3s = coeffs
    for i in range(len(h)):
        m0 = model.x0(x, t[i])
        if p[i] >= 2:
            m1 = model.x0(c1_x[i] * x + c1_m0[i] * m0, s1[i])
        if p[i] == 3:
            m2 = model.x0(c2_x[i] * x + c2_m0[i] * m0 + c2_d[i] * (m1 - m0), s2[i])
        x = c_x[i] * x + c_m0[i] * m0
        if p[i] == 2:
            x = x + c_2s[i] * (m1 - m0)
        elif p[i] == 3:
            x = x + c_3s[i] * (m2 - m0)
        if record is not None:
            record(t[i + 1], x)
    return x
