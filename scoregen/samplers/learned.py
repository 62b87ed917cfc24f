"""A solver learned for one model: a multistep predictor-corrector in log-SNR whose weights, grid and network
times are data (a small JSON file, ``evaluation.tune_solver`` learns them).

From t_i to t_{i+1} (lambda = log(alpha / sigma), h_i = lambda_{i+1} - lambda_i, m_k = x0_hat at step k with
the network called at tau_k and the state's own alpha_k, sigma_k):

    predictor:  x_{i+1} = g_i sigma_{i+1} / sigma_i x_i + alpha_{i+1} (1 - e^{-h_i}) sum_j P_ij m_{i-j}
    corrector:  x_{i+1} <- g_i sigma_{i+1} / sigma_i x_i + alpha_{i+1} (1 - e^{-h_i}) sum_j C_ij m_{i+1-j}

The corrector uses m_{i+1}, taken at the predicted point (the next step's call, so no extra NFE), as UniC
(Zhao et al. 2023); the last step, onto t = 0 (sigma = 0, h = inf), is x_0 = sum_j P_Kj m_{K-1-j}. With P and C
the exponential Adams-Bashforth and Adams-Moulton weights (x0_hat interpolated in lambda by a polynomial
through the points it has, integrated exactly: ``adams_weights``), g = 1 and tau = t, this is an exponential
integrator of the PF-ODE of DPM-Solver++'s family; learning moves all of them (S4S, Frankel et al. 2025,
learns a solver's coefficients and grid by matching the PF-ODE's solutions; LD3, Tong et al. 2025, its times).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.flow import Model
from ..core.sde import VPSDE
from .common import Recorder, check_grid, on, read_json
from .logsnr import log_snr_grid

HISTORY = 3  # x0_hat values a step combines (the predictor's; the corrector adds the new one)
NODES = 32   # Gauss-Legendre nodes of the weights' integrals (exact for the polynomial part, e^lambda to 1e-15)


@dataclass
class LearnedSolver:
    """A learned solver: the grid ``t`` [K + 1] (from 1 to 0), the network's times ``tau`` [K], the state
    scales ``g`` [K], the predictor weights ``P`` [K, HISTORY] and the corrector's ``C`` [K - 1, HISTORY + 1]
    (module docstring), float64 on the CPU; ``info``: how it was learned (model, NFE, errors, cost)."""
    t: torch.Tensor
    tau: torch.Tensor
    g: torch.Tensor
    P: torch.Tensor
    C: torch.Tensor
    info: dict = field(default_factory=dict)

    @property
    def steps(self) -> int:
        """K, its steps and network calls."""
        return len(self.t) - 1

    def sample(self, eps_model, sde: VPSDE, shape, **kwargs):
        """``samplers.sample`` by this solver on its own grid (``kwargs``: generator, x1, device, ...)."""
        from . import sample
        return sample(eps_model, sde, shape, "learned", grid=self.t, solver=self, **kwargs)

    def check(self) -> "LearnedSolver":
        """Raise unless the parts fit together: a grid from 1 to 0, K network times in (0, 1], finite weights of
        shapes [K, HISTORY] and [K - 1, HISTORY + 1]."""
        check_grid(self.t)
        k = self.steps
        if not (self.t[0] == 1 and self.t[-1] == 0):
            raise ValueError(f"a learned solver's grid runs from t = 1 to t = 0; got {self.t.tolist()}")
        shapes = {"tau": (k,), "g": (k,), "P": (k, HISTORY), "C": (k - 1, HISTORY + 1)}
        for name, want in shapes.items():
            value = getattr(self, name)
            if tuple(value.shape) != want or not bool(torch.isfinite(value).all()):
                raise ValueError(f"a learned solver's {name} must be finite, of shape {want} for its {k} steps; "
                                 f"got shape {tuple(value.shape)}")
        if not bool(((self.tau > 0) & (self.tau <= 1)).all()):
            raise ValueError(f"a learned solver's network times tau must lie in (0, 1]; got {self.tau.tolist()}")
        return self


def adams_weights(lam_nodes: torch.Tensor, lam_t: torch.Tensor, lam_s: torch.Tensor) -> torch.Tensor:
    """w_j = int_{lam_t}^{lam_s} e^{lam - lam_s} L_j(lam) dlam / (1 - e^{-h}), h = lam_s - lam_t, L_j the
    Lagrange polynomials through ``lam_nodes``: the weights of x0_hat at those nodes in the exact step
    x_s = sigma_s / sigma_t x_t + sigma_s int e^lam x0_hat dlam (DPM-Solver++'s variation of constants). They
    sum to 1; one node gives DDIM. Differentiable in the lambdas (the learning moves the grid)."""
    xi, wi = (torch.tensor(a, dtype=lam_t.dtype) for a in np.polynomial.legendre.leggauss(NODES))
    h = lam_s - lam_t
    lam = lam_t + h * (1 + xi) / 2
    kernel = wi * h / 2 * torch.exp(lam - lam_s) / -torch.expm1(-h)
    weights = []
    for j in range(len(lam_nodes)):
        basis = torch.ones_like(lam)
        for k in range(len(lam_nodes)):
            if k != j:
                basis = basis * (lam - lam_nodes[k]) / (lam_nodes[j] - lam_nodes[k])
        weights.append((kernel * basis).sum())
    return torch.stack(weights)


def coefficients(sde: VPSDE, t: torch.Tensor, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """c_x = g_i sigma_{i+1} / sigma_i and c_m = alpha_{i+1} (1 - e^{-h_i}) of every step (the last: 0 and 1)."""
    grid = log_snr_grid(sde, t)
    return g * grid.sigma[1:] / grid.sigma[:-1], grid.alpha[1:] * -torch.expm1(-grid.h)


def run(model: Model, x: torch.Tensor, t, tau, c_x, c_m, P, C, record: Recorder | None = None) -> torch.Tensor:
    """The solver's loop (module docstring) on coefficients already on the model's device; differentiable, so
    that ``tune_solver`` learns through it. ``t``, ``tau``: the grid and network times (CPU)."""
    k = len(c_x)
    m, x_prev = [], None                              # x0_hat history, newest first; the last step's start
    for i in range(k):
        m_new = model.x0(x, t[i], model.eps(x, tau[i]))
        if i > 0:                                     # corrector of step i - 1, with m_new at its end
            x = c_x[i - 1] * x_prev + c_m[i - 1] * _combine(C[i - 1], [m_new] + m)
            if record is not None:
                record(t[i], x)
        m = [m_new] + m[:HISTORY - 1]
        x_prev = x
        x = c_x[i] * x + c_m[i] * _combine(P[i], m)   # predictor
    if record is not None:
        record(t[-1], x)
    return x


def _combine(w: torch.Tensor, m: list[torch.Tensor]) -> torch.Tensor:
    """sum_j w_j m_j over the history there is (the first steps have fewer)."""
    out = w[0] * m[0]
    for j in range(1, len(m)):
        out = out + w[j] * m[j]
    return out


def sample_learned(model: Model, x: torch.Tensor, t: torch.Tensor, *, solver: LearnedSolver | str | None = None,
                   generator=None, record: Recorder | None = None) -> torch.Tensor:
    """A solver learned for the model (``tune_solver``): multistep predictor-corrector with learned weights.

    ``solver``: a ``LearnedSolver`` or its file (``save_solver``); it runs on its own grid, so ``t`` must be
    ``solver.t`` (``solver.sample(...)`` passes both). One network call a step; see the module docstring.
    """
    if solver is None:
        raise ValueError("method 'learned' needs its solver: solver=<a LearnedSolver or its file, from "
                         "`scoregen tune --learn solver`>")
    solver = load_solver(solver) if isinstance(solver, (str, Path)) else solver
    if not isinstance(solver, LearnedSolver):
        raise ValueError(f"solver must be a LearnedSolver or the path of its file; got {type(solver).__name__}")
    check_grid(t)
    if len(t) != len(solver.t) or not torch.allclose(t, solver.t, rtol=0, atol=1e-12):
        raise ValueError(f"the learned solver runs on its own grid of {solver.steps} steps, {solver.t.tolist()}; "
                         f"got {t.tolist()}: sample with grid=solver.t (solver.sample(...) does)")
    c_x, c_m = coefficients(model.sde, solver.t, solver.g)
    c_x, c_m, P, C = on(model, c_x, c_m, solver.P, solver.C)
    if record is not None:
        record(t[0], x)
    return run(model, x, t, solver.tau, c_x, c_m, P, C, record)


# --- solver files ----------------------------------------------------------------------------------------
def save_solver(path, solver: LearnedSolver) -> Path:
    """Write ``solver`` as JSON (its arrays as lists, ``info`` beside them), atomically."""
    from ..runtime.outputs import write_atomic

    data = {"kind": "learned-solver", **{name: getattr(solver.check(), name).tolist()
                                         for name in ("t", "tau", "g", "P", "C")}, "info": solver.info}
    return write_atomic(path, (json.dumps(data, indent=1) + "\n").encode())


def load_solver(path) -> LearnedSolver:
    """The ``LearnedSolver`` of a file written by ``save_solver``, checked."""
    data = read_json(path, "learned-solver file")
    if not (isinstance(data, dict) and data.get("kind") == "learned-solver"):
        raise ValueError(f"{path} is not a learned-solver file (from `scoregen tune --learn solver`): it has no "
                         "\"kind\": \"learned-solver\"")
    try:
        arrays = {name: torch.tensor(data[name], dtype=torch.float64) for name in ("t", "tau", "g", "P", "C")}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path} is not a complete learned-solver file: {e}") from None
    try:
        return LearnedSolver(**arrays, info=data.get("info", {})).check()
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


__all__ = ["LearnedSolver", "sample_learned", "adams_weights", "save_solver", "load_solver", "HISTORY"]
