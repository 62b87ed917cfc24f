"""DEIS (Zhang & Chen 2023) and iPNDM (variable step): Adams-Bashforth for the PF-ODE in rho = sigma / alpha.

With rho = sigma / alpha = exp(-lambda) the PF-ODE is d(x / alpha) / d rho = eps(x, t) (EDM's dy/ds = eps, y = x /
alpha, s = rho), so from t = t_i to s = t_{i+1}, interpolating eps through its last p values,

    x_s = alpha_s (x_t / alpha_t + sum_{j<p} C_ij eps_{i-j}),   C_ij = int_{rho_t}^{rho_s} L_j(v(rho)) d rho,

L_j the Lagrange basis polynomials in a variable v through v(t_i), ..., v(t_{i-p+1}): v = t (DEIS "tAB"), rho
(DEIS "rhoAB", which is iPNDM-v) or log rho (diffusers' DEISMultistepScheduler, solver_type "logrho"). p = 1 is
DDIM. Every C_ij is computed before the loop, float64 on the CPU, by Gauss-Legendre quadrature in u = log rho.
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from ..core.checks import check_choice
from ..core.flow import Model
from ..core.sde import VPSDE
from .common import Recorder, check_grid, on
from .logsnr import log_snr_grid, step_orders

Order = Literal[1, 2, 3]
IPNDMOrder = Literal[1, 2, 3, 4]
Basis = Literal["t", "rho", "log_rho"]
NODES = 64  # Gauss-Legendre nodes per piece of each step (tests: 64 and 128 agree to rounding)


def sample_deis(model: Model, x: torch.Tensor, t: torch.Tensor, *, order: Order = 3, basis: Basis = "t",
                generator=None, record: Recorder | None = None) -> torch.Tensor:
    """DEIS (Zhang & Chen 2023): the exponential multistep integrator, eps extrapolated in t (tAB), rho or log rho.

    From t = t_i to s = t_{i+1}, rho = sigma / alpha, eps_{i-j} the network's output at t_{i-j}:

        x_s = alpha_s (x_t / alpha_t + sum_{j<p} C_ij eps_{i-j}),  C_ij = int_{rho_t}^{rho_s} L_j(v(rho)) d rho

    L_j the Lagrange basis polynomial of the p points v(t_i), ..., v(t_{i-p+1}) that is 1 at v(t_{i-j}), in the
    variable v = t ("t": the paper's tAB), v = rho ("rho": its rhoAB, equal to ``ipndm``) or
    v = log rho ("log_rho": diffusers' DEISMultistepScheduler, algorithm_type "deis", solver_type "logrho").
    Order 1 is DDIM (eta 0): x_s = alpha_s x0_hat + sigma_s eps. Multistep: one network call a step; step i
    has order <= i + 1 (warm-up) and a step onto t = 0 is order 1, x_s = x0_hat.
    """
    check_grid(t)
    check_choice("order", order, Order)
    check_choice("basis", basis, Basis)
    return _adams_bashforth(model, x, t, *ab_coefficients(model.sde, t, int(order), basis), record)


def sample_ipndm(model: Model, x: torch.Tensor, t: torch.Tensor, *, order: IPNDMOrder = 4, generator=None,
                 record: Recorder | None = None) -> torch.Tensor:
    """iPNDM (Zhang & Chen 2023), variable step: Adams-Bashforth in EDM's sigma, rho = sigma / alpha; orders 1-4.

    In y = x / alpha and rho the PF-ODE is dy/d rho = eps (EDM eq. 4, d = (y - D) / rho), and each step is the
    variable-step Adams-Bashforth step through the last p values of eps (iPNDM-v: ``sample_ipndm_v`` of ComfyUI's
    k-diffusion, from zju-pi/diff-sampler's ``ipndm_v_sampler``):

        y_s = y_t + sum_{j<p} C_ij eps_{i-j},  C_ij = int_{rho_t}^{rho_s} L_j(rho) d rho,  x_s = alpha_s y_s

    which is ``deis`` with basis "rho". Step i has order <= i + 1 (warm-up); a step onto t = 0 is order 1,
    x_s = x0_hat (k-diffusion's "denoising step"). Order 1 is Euler in rho, which is DDIM (eta 0).
    Orders 1 and 2 equal ``sample_ipndm_v``. Its closed forms of orders 3 and 4 are not Adams-Bashforth on
    non-uniform steps: order 3 computes temp = (1 - a b) / 2 where AB3 has (1 - a) b / 2 (they agree on steps
    uniform in rho), and order 4 weighs d_cur 57/24, not AB4's 55/24, even on uniform steps.
    """
    check_grid(t)
    check_choice("order", order, IPNDMOrder)
    return _adams_bashforth(model, x, t, *ab_coefficients(model.sde, t, int(order), "rho"), record)


def ab_coefficients(sde: VPSDE, t: torch.Tensor, order: int, basis: str, nodes: int = NODES):
    """The order p_i of each step and C [K, order] (float64, CPU; C_ij = 0 for j >= p_i):
    C_ij = int_{rho_t}^{rho_s} L_j(v(rho)) d rho for t = t_i, s = t_{i+1}.

    p_i = 1: C_i0 = rho_s - rho_t (exact; also onto rho = 0). p_i >= 2 (rho_s > 0): Gauss-Legendre in
    u = log rho, d rho = e^u du. In u the integrand is e^u times a polynomial in e^u or u (bases "rho",
    "log_rho": entire) or in t(u) (basis "t": analytic in the strip |Im u| < pi / 2 for the linear and cosine
    schedules), so ``nodes`` points converge to rounding on any step, where quadrature in rho would lose digits
    to the log near rho = 0 on steps that span decades of rho. A discrete schedule's t(u) has kinks at its knots
    k / N: basis "t" integrates piece by piece between them.
    """
    g = log_snr_grid(sde, t)
    p = step_orders(g.h, order, False)
    rho = g.sigma / g.alpha
    v = {"t": t, "rho": rho, "log_rho": -g.lam}[basis]
    c = torch.zeros(len(p), order, dtype=torch.float64)
    c[:, 0] = rho[1:] - rho[:-1]                                 # order 1; the rows of higher order are replaced
    multi = torch.tensor(p) > 1
    if not multi.any():
        return p, c
    # the pieces [hi, lo] of the steps of order >= 2: between the grid's times (and a discrete schedule's knots)
    ends = t if basis != "t" or sde.num_steps is None else \
        torch.cat([t, torch.arange(1, sde.num_steps, dtype=torch.float64) / sde.num_steps]).unique().flip(0)
    step = torch.searchsorted(-t, -ends[:-1], right=True) - 1    # the step i of each piece
    keep = multi[step]
    hi, lo, step = ends[:-1][keep], ends[1:][keep], step[keep]
    q = torch.tensor(p)[step]
    x_gl, w_gl = (torch.from_numpy(a) for a in np.polynomial.legendre.leggauss(nodes))
    a, b = -sde.log_snr(hi)[:, None], -sde.log_snr(lo)[:, None]  # in u = log rho, from u_t down to u_s
    u = (a + b) / 2 + (b - a) / 2 * x_gl
    w = (b - a) / 2 * w_gl * torch.exp(u)
    vu = {"t": lambda: sde.t_from_log_snr(-u), "rho": lambda: torch.exp(u), "log_rho": lambda: u}[basis]()
    vk = v[(step[:, None] - torch.arange(order)).clamp(min=0)]   # v(t_i), v(t_{i-1}), ... of each piece's step i
    for j in range(order):
        lj = torch.ones_like(u)
        for k in range(order):
            if k != j:                                           # L_j = prod_{k < p_i, k != j} (v - v_k) / (v_j - v_k)
                lj = torch.where((k < q)[:, None], lj * (vu - vk[:, [k]]) / (vk[:, [j]] - vk[:, [k]]), lj)
        integral = torch.where(j < q, (w * lj).sum(1), 0.0)
        c[multi, j] = torch.zeros(len(p), dtype=torch.float64).index_add_(0, step, integral)[multi]
    return p, c


def _adams_bashforth(model: Model, x: torch.Tensor, t: torch.Tensor, p: list[int], c: torch.Tensor,
                     record: Recorder | None) -> torch.Tensor:
    """The multistep loop: x_s = alpha_s / alpha_t x_t + alpha_s sum_{j<p_i} C_ij eps_{i-j}."""
    alpha = model.sde.alpha(t)
    c_x, c_eps = on(model, alpha[1:] / alpha[:-1], alpha[1:, None] * c)
    if record is not None:
        record(t[0], x)
    eps = []                                                     # eps history, newest first
    for i in range(len(p)):
        eps = [model.eps(x, t[i])] + eps[:c.shape[1] - 1]
        x = c_x[i] * x
        for j in range(p[i]):
            x = x + c_eps[i, j] * eps[j]
        if record is not None:
            record(t[i + 1], x)
    return x
