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

from ..core.checks import check_choice, check_tolerances
from ..core.flow import ADAPTIVE, FIXED, Model, ProbabilityFlow, check_state, final_step
from .common import Recorder, check_grid

Solver = Literal[FIXED + ADAPTIVE]
Variable = Literal["t", "log_snr", "edm"]
TOL = 1e-5  # rtol and atol of the adaptive solvers when not given


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
        check_tolerances(rtol=rtol, atol=atol)
    elif rtol is not None or atol is not None:
        raise ValueError(f"rtol/atol apply to adaptive solvers {ADAPTIVE}, not {solver!r}")
    x = odeint_pf(model, x, t, solver=solver, variable=variable, rtol=rtol, atol=atol, record=record)
    return final_step(model, x, t[-1], final_denoise, record)
