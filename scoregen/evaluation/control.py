"""The reverse SDE as an optimally controlled process (Berner, Richter & Ullrich, "An optimal control
perspective on diffusion-based generative modeling", TMLR 2024, arXiv:2211.01364).

Forward VP-SDE ``dx = f dt + g dW``, ``f = -beta x / 2``, ``g = sqrt(beta)``. In reverse time s = 1 - t a
control u steers

    dY = (g u - f) ds + g dW,        Y_0 ~ p_1 or N(0, I),  Y_1 the generated point.          (1)

Value function. ``V = log p_t`` solves the log (Hopf–Cole) form of the Fokker–Planck equation
``dp/dt = div(beta/2 x p) + beta/2 Lap p``,

    dV/dt = beta/2 (Lap V + |grad V|^2 + x . grad V + d),                                    (2)

the HJB equation of (1) with running cost |u|^2 / 2 (value -V up to a function of t alone); its
minimiser is ``u* = -g grad(-V) = g grad log p_t``: the optimal control is the score and (1) with u* is
the reverse SDE of docs/design.md.

Cost = KL. For ``u = u* + delta`` Girsanov gives the path KL
``KL(P* || P^u) = KL(p_1 || law Y_0) + E_{P*} 1/2 int |delta|^2 ds``, and by data processing it bounds
``KL(p_0 || p_0^u)`` (equality when the bridges agree, e.g. delta = g grad log(q_t / p_t)).   (3)

log Z. For a target ``rho = Z p_0`` the weight of a path of (1) from N(0, I), the ratio of the target
path density ``rho(Y_1) prod F`` (F: the forward VP kernels) to that of (1), has ``E w = Z`` exactly, so
``E log w <= log Z``; with u* it is constant up to the time step.                              (4)

Everything is float64-ready and device-agnostic; (1) is integrated by Euler–Maruyama on a uniform grid.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..data.gmm import GaussianMixture
from ..core.sde import VPSDE

Control = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def hjb_residual(log_p: Callable, sde: VPSDE, x: torch.Tensor, t: torch.Tensor):
    """Residual of (2) for ``V = log_p(x, t)`` at points x [n, d], times t [n], by autograd.

    Returns ``(residual, scale)`` of shape [n]; ``scale`` is the sum of the absolute values of the
    five terms, so ``residual / scale`` is a relative error (round-off for the exact log p_t).
    """
    if x.dim() != 2 or t.shape != x.shape[:1]:
        raise ValueError(f"x must be [n, d] and t [n]; got {tuple(x.shape)} and {tuple(t.shape)}")
    x, t = x.detach().requires_grad_(), t.detach().requires_grad_()
    v_t, grad = torch.autograd.grad(log_p(x, t).sum(), (t, x), create_graph=True)
    lap = sum(torch.autograd.grad(grad[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(x.shape[1]))
    half_beta = sde.beta(t.detach()) / 2
    terms = [half_beta * lap, half_beta * (grad ** 2).sum(1), half_beta * (x * grad).sum(1),
             half_beta * x.shape[1]]
    residual = v_t - sum(terms)
    scale = v_t.abs() + sum(term.abs() for term in terms)
    return residual.detach(), scale.detach()


def optimal_control(eps_model, sde: VPSDE) -> Control:
    """``u*(x, t) = g(t) grad log p_t(x) = -sqrt(beta) eps / sigma`` from an eps-network (or the oracle's)."""
    def control(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -(sde.diffusion(t) / sde.sigma(t))[:, None] * eps_model(x, t)
    return control


def prior_control(sde: VPSDE) -> Control:
    """``g grad log N(x; 0, I) = -g x``: (1) with it is the stationary OU process, no information on p_0."""
    def control(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return -sde.diffusion(t)[:, None] * x
    return control


@dataclass
class ControlledPaths:
    """Euler–Maruyama paths of (1): ``t`` [K+1] from 1 to 0, ``x`` [K+1, n, d], ``u`` [K, n, d] the
    control at the left end of each step, ``h`` [K] the step sizes in s."""
    t: torch.Tensor
    x: torch.Tensor
    u: torch.Tensor
    h: torch.Tensor


def simulate(control: Control, sde: VPSDE, x1: torch.Tensor, steps: int = 500, *,
             generator: torch.Generator | None = None) -> ControlledPaths:
    """Euler–Maruyama for (1) from ``x1`` [n, d] at t = 1 to t = 0 on ``steps`` uniform steps in t:
    ``x <- x + (g u - f) h + g sqrt(h) z``, g, f and u at the left end t_k.

    The step is ``h = int beta dt / beta(t_k)`` over [t_{k+1}, t_k] (``t_k - t_{k+1}`` to first order), which
    makes the noise variance ``g^2 h`` exact: Euler–Maruyama in the clock ``tau = -log alpha_bar``, where
    (1) reads ``dY = (u / g + Y / 2) dtau + dW_tau``. (The plain step under-resolves the relative change of
    beta near t = 0, ``beta' / beta = 199`` for the linear schedule.)"""
    if x1.dim() != 2:
        raise ValueError(f"x1 must have shape [n, d]; got {tuple(x1.shape)}")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    t = torch.linspace(1, 0, int(steps) + 1, dtype=x1.dtype, device=x1.device)
    steps_h = (sde.log_alpha_bar(t[1:]) - sde.log_alpha_bar(t[:-1])) / sde.beta(t[:-1])
    xs, us = [x1], []
    for k in range(int(steps)):
        t_k, h = t[k].expand(x1.shape[0]), steps_h[k]
        g, u = sde.diffusion(t_k)[:, None], control(xs[-1], t_k)
        z = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        xs.append(xs[-1] + (g * u - sde.drift(xs[-1], t_k)) * h + g * h.sqrt() * z)
        us.append(u)
    return ControlledPaths(t, torch.stack(xs), torch.stack(us), steps_h)


def _on_grid(paths: ControlledPaths):
    """Left ends of the steps flattened to [K n, d], their times [K n] and step sizes [K, 1]."""
    k, n, d = paths.u.shape
    t_left = paths.t[:-1].repeat_interleave(n)
    return paths.x[:-1].reshape(k * n, d), t_left, paths.h[:, None]


def control_cost(paths: ControlledPaths, control: Control) -> torch.Tensor:
    """``1/2 int |u - control|^2 ds`` along each path [n]: with ``paths`` from u* and ``control = u* + delta``
    its mean is the path KL term of (3)."""
    x, t, h = _on_grid(paths)
    delta = paths.u - control(x, t).reshape(paths.u.shape)
    return 0.5 * ((delta ** 2).sum(-1) * h).sum(0)


def _log_normal(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, var I) over the last dimension."""
    return -0.5 * (((x - mean) ** 2).sum(-1) / var + x.shape[-1] * torch.log(2 * math.pi * var))


def log_path_weights(paths: ControlledPaths, sde: VPSDE, log_target: Callable) -> torch.Tensor:
    """``log w`` of (4) for paths of (1) started from N(0, I), ``log_target(x) = log rho(x)`` unnormalised [n].

    ``w = rho(Y_1) prod_k F(Y_k | Y_{k+1}) / (N(Y_0; 0, I) prod_k B_u(Y_{k+1} | Y_k))`` with F the exact forward
    kernel ``N(a y, (1 - a^2) I)``, ``a = alpha(t_k) / alpha(t_{k+1})``, and B_u the Euler–Maruyama kernel:
    ``E w = Z`` for any step count (the discrete-time Girsanov / DDPM-bound weight).
    """
    x, t, h = _on_grid(paths)
    k, n, d = paths.u.shape
    x_k, x_next = paths.x[:-1], paths.x[1:]
    g = sde.diffusion(paths.t[:-1])[:, None]
    mean_b = x_k + (g[:, :, None] * paths.u - sde.drift(x, t).reshape(k, n, d)) * h[:, :, None]
    log_b = _log_normal(x_next, mean_b, g ** 2 * h)
    alpha_ts, sigma2_ts = (c[:, None] for c in sde.transition(paths.t[:-1], paths.t[1:]))
    log_f = _log_normal(x_k, alpha_ts[:, :, None] * x_next, sigma2_ts)
    return log_target(paths.x[-1]) - sde.prior_logp(paths.x[0]) + (log_f - log_b).sum(0)


@dataclass
class LogNormalizer:
    """Estimates of log Z from log-weights: ``lower_bound = mean log w`` (<= log Z, the negative of the
    KL loss up to log Z), ``log_z = log mean w``, ``ess = (sum w)^2 / sum w^2`` in [1, n] and
    ``log_variance = Var log w`` (the log-variance loss)."""
    lower_bound: torch.Tensor
    log_z: torch.Tensor
    ess: torch.Tensor
    log_variance: torch.Tensor


def log_normalizer(log_w: torch.Tensor) -> LogNormalizer:
    """Importance-sampling summary of log-weights ``log_w`` [n]."""
    if log_w.dim() != 1 or log_w.numel() < 2:
        raise ValueError(f"log_w must have shape [n] with n >= 2; got {tuple(log_w.shape)}")
    lse = torch.logsumexp(log_w, 0)
    return LogNormalizer(log_w.mean(), lse - math.log(log_w.numel()),
                         torch.exp(2 * lse - torch.logsumexp(2 * log_w, 0)), log_w.var())


@dataclass
class GaussianEndpoint:
    """Law ``N(mean, cov)`` at t = 0 of a linear controlled process, and ``push_cost = 1/2 int |push|^2 ds``."""
    mean: torch.Tensor
    cov: torch.Tensor
    push_cost: torch.Tensor


def gaussian_endpoint(data: GaussianMixture, sde: VPSDE, start_mean: torch.Tensor, start_cov: torch.Tensor,
                      push: Callable | None = None, nodes: int = 200) -> GaussianEndpoint:
    """Exact law at t = 0 of (1) with ``u = u* + push(t)`` for Gaussian data ``N(m, S)``, started at
    ``N(start_mean, start_cov)``.

    With u* the process is linear with propagator ``Phi(t) = alpha_t S C_t^{-1}`` from t to 0,
    ``C_t = alpha_t^2 S + sigma_t^2 I`` (``dPhi/dt = Phi (beta/2 - beta C_t^{-1})``, ``Phi(0) = I``), so

        mean = m + Phi(1) (start_mean - alpha_1 m) + int_0^1 Phi(t) g(t) push(t) dt,
        cov  = S + Phi(1) (start_cov - C_1) Phi(1)^T.

    ``push(t)`` maps times [T] to x-independent perturbations [T, d]; the integrals use Gauss–Legendre
    with ``nodes`` nodes (open: t = 0, where an eps-parametrised control is 0/0, is not evaluated).
    """
    if data.num_components != 1:
        raise ValueError(f"data must be a single Gaussian; got {data.num_components} components")
    m, s = data.means[0], data.covs[0]
    eye = torch.eye(data.dim, dtype=s.dtype, device=s.device)

    def phi(t):
        alpha, sigma = sde.alpha(t)[:, None, None], sde.sigma(t)[:, None, None]
        return alpha * torch.linalg.solve(alpha ** 2 * s + sigma ** 2 * eye, s, left=False)  # S C^{-1}

    one = torch.ones(1, dtype=s.dtype, device=s.device)
    phi_1, c_1 = phi(one)[0], sde.alpha(one) ** 2 * s + sde.sigma(one) ** 2 * eye
    mean, cost = m + phi_1 @ (start_mean - sde.alpha(one) * m), s.new_zeros(())
    if push is not None:
        x, w = (torch.as_tensor(a, dtype=s.dtype, device=s.device) for a in np.polynomial.legendre.leggauss(nodes))
        t, w = (x + 1) / 2, w / 2
        delta = push(t)
        mean = mean + torch.einsum("t,tij,tj->i", w, phi(t), sde.diffusion(t)[:, None] * delta)
        cost = 0.5 * (w * (delta ** 2).sum(1)).sum()
    return GaussianEndpoint(mean, s + phi_1 @ (start_cov - c_1) @ phi_1.T, cost)
