"""The probability-flow ODE (Song et al. 2021, eq. 13) integrated by ``torchdiffeq.odeint``.

    dx/dt = f(x, t) - g(t)^2 score(x, t) / 2 = -beta x / 2 + beta eps / (2 sigma)

in one of three variables (the same ODE, solved on the same grid points, with different error):

    "t"        the equation above
    "log_snr"  dx/dlambda = sigma^2 x - sigma eps, lambda = log(alpha / sigma)  (Lu et al. 2022, §3.1;
               for the VP-SDE d log alpha / d lambda = sigma^2)
    "edm"      dy/ds = eps(alpha y, t(s)), y = x / alpha, s = sigma / alpha  (Song et al. 2021 DDIM, eq. 14;
               Karras et al. 2022, eq. 4): Euler in s is DDIM with eta = 0.

On the mixture oracle "t" is as accurate per NFE as the others or more (README table), so it is
the default.

Fixed-grid solvers step exactly on the grid points (no interior output points); adaptive ones
pick their own steps with rtol/atol on the RMS norm of the whole batch and synchronise with the
host to do so, as does torchdiffeq's fixed-grid loop when it compares times on a GPU. Since they
sync anyway, adaptive solves also check their start (``check_state``) and every network output
(``ProbabilityFlow(check_finite=True)``): a NaN or inf would otherwise shrink the step to zero and
end in torchdiffeq's ``AssertionError: underflow in dt 0.0``.
"""
from __future__ import annotations

from typing import Literal

import torch
from torchdiffeq import odeint

from .common import Model, Recorder, check_choice, check_grid, check_range, final_step

FIXED = ("euler", "midpoint", "heun2", "heun3", "rk4")
ADAPTIVE = ("dopri5", "bosh3", "adaptive_heun", "dopri8")
Solver = Literal[FIXED + ADAPTIVE]
Variable = Literal["t", "log_snr", "edm"]
TOL = 1e-5  # rtol and atol of the adaptive solvers when not given


def _first_bad(x: torch.Tensor) -> str:
    """"k of n values, the first at index (i, ...)": where a tensor is NaN or inf."""
    bad = ~torch.isfinite(x)
    return f"{int(bad.sum())} of {bad.numel()} values, the first at index {tuple(bad.nonzero()[0].tolist())}"


def check_state(x: torch.Tensor, name: str = "x") -> None:
    """Raise unless ``x`` is a floating tensor [n, ...] with n >= 1, all finite (one host sync)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor; got dtype {x.dtype} (integer levels k of L: "
                         f"scale them to [-1, 1] as 2k/(L-1) - 1 first)")
    if x.dim() < 2:
        raise ValueError(f"{name} must have shape [n, ...] with a batch dimension; got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}): give at least one point")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} has NaN/inf values ({_first_bad(x)})")


class ProbabilityFlow:
    """The PF-ODE right-hand side in ``variable``; the state is x, or y = x / alpha for "edm".
    ``check_finite``: raise on a non-finite network output (a host sync per call: adaptive solvers only)."""

    def __init__(self, model: Model, variable: str, record: Recorder | None = None, check_finite: bool = False):
        self.model, self.sde, self.variable, self.record = model, model.sde, variable, record
        self.check_finite = check_finite

    def v_of_t(self, t: torch.Tensor) -> torch.Tensor:
        if self.variable == "t":
            return t
        log_snr = self.sde.log_snr(t)
        return log_snr if self.variable == "log_snr" else torch.exp(-log_snr)

    def t_of_v(self, v: torch.Tensor) -> torch.Tensor:
        if self.variable == "t":
            return v
        log_snr = v if self.variable == "log_snr" else -torch.log(v)
        return self.sde.t_from_log_snr(log_snr).clamp(max=1.0)

    def scale(self, t: torch.Tensor) -> torch.Tensor:
        """x = scale(t) * state."""
        return self.sde.alpha(t) if self.variable == "edm" else torch.ones_like(t)

    def __call__(self, v: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = self.t_of_v(v)
        x = self.scale(t) * y
        eps = self.model.eps(x, t)
        if self.check_finite and not bool(torch.isfinite(eps).all()):
            where = "" if bool(torch.isfinite(x).all()) else (f"; its input x_t had NaN/inf ({_first_bad(x)}): "
                                                          "the solve diverged where the network extrapolates")
            raise ValueError(f"eps_model returned NaN/inf at t={float(t):.4g} during the adaptive ODE solve "
                             f"({_first_bad(eps)}){where}")
        if self.variable == "edm":
            return eps
        sigma = self.sde.sigma(t)
        if self.variable == "log_snr":
            return sigma ** 2 * x - sigma * eps
        return self.sde.drift(x, t) + 0.5 * self.sde.diffusion(t) ** 2 * eps / sigma

    def record_step(self, v0: torch.Tensor, y0: torch.Tensor, dv) -> None:
        """Records the start of each accepted adaptive step (torchdiffeq's ``callback_accept_step``)."""
        t = self.t_of_v(v0)
        self.record(t, self.scale(t) * y0)


def odeint_pf(model: Model, x: torch.Tensor, times: torch.Tensor, *, solver: str, variable: str,
              rtol: float | None = None, atol: float | None = None, record: Recorder | None = None) -> torch.Tensor:
    """Solve the PF-ODE from times[0] to times[-1] (either direction): a fixed-grid solver steps
    on every point of ``times``; an adaptive one (rtol, atol) uses only the end points."""
    flow = ProbabilityFlow(model, variable, record, check_finite=solver in ADAPTIVE)
    times = times.to(dtype=torch.float64)
    if solver in ADAPTIVE:
        check_state(x)
        times = times[[0, -1]]
        if record is not None:
            flow.callback_accept_step = flow.record_step
    scale = flow.scale(times)
    v = flow.v_of_t(times).to(device=x.device, dtype=x.dtype)
    # adaptive: step onto the end point instead of past it (t < 0 is outside the schedule)
    tol = dict(rtol=rtol, atol=atol, options={"step_t": v[-1:]}) if solver in ADAPTIVE else {}
    ys = odeint(flow, x / scale[0], v, method=solver, **tol)
    if record is not None and solver in FIXED:
        for t_i, c_i, y_i in zip(times, scale, ys):
            record(t_i, c_i * y_i)
    x = scale[-1] * ys[-1]
    if record is not None and solver in ADAPTIVE:
        record(times[-1], x)
    return x


def sample_ode(model: Model, x: torch.Tensor, t: torch.Tensor, *, solver: Solver = "rk4", variable: Variable = "t",
               rtol: float | None = None, atol: float | None = None, final_denoise: bool = True, generator=None,
               record: Recorder | None = None) -> torch.Tensor:
    """The probability-flow ODE (Song et al. 2021, eq. 13) by torchdiffeq.odeint.

    From t[0] to t[-1] > 0: a fixed-grid ``solver`` steps on every time of the grid; an adaptive one uses
    its end points only and picks its own steps to rtol/atol (None: ``TOL``; fixed-grid solvers take
    neither). Then (``final_denoise``) x0_hat at t[-1]. Deterministic given x_1."""
    check_grid(t, end_above_zero=True)
    check_choice("solver", solver, Solver)
    check_choice("variable", variable, Variable)
    check_choice("final_denoise", final_denoise, (True, False))
    if solver in ADAPTIVE:
        rtol, atol = (TOL if tol is None else tol for tol in (rtol, atol))
        check_range("rtol", rtol, 0.0, 1.0)
        check_range("atol", atol, 0.0, 1.0)
    elif rtol is not None or atol is not None:
        raise ValueError(f"rtol/atol apply to adaptive solvers {ADAPTIVE}, not {solver!r}")
    x = odeint_pf(model, x, t, solver=solver, variable=variable, rtol=rtol, atol=atol, record=record)
    return final_step(model, x, t[-1], final_denoise, record)
