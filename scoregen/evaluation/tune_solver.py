"""Solvers learned for the model: the weights, grid, network times and state scales of ``samplers.learned``,
fitted so that K network calls land where the probability-flow ODE lands.

Objective: the mean squared end-point error against ``pf_ode_solution`` (dopri5 at 1e-5 and the final
denoising step) on n tuning draws x1 (the RMS of it is ``metrics.ode_err``), as S4S (Frankel et al. 2025) and
LD3 (Tong et al. 2025) fit theirs. It is deterministic given the draws and differentiable in every learned
number, so it is minimised by gradient: Adam on mini-batches of the tuning draws, the learning rate decayed
on a cosine, the gradient through the K network calls (the network's weights stay fixed).

Start: UniPC's best named grid on the same draws (the one ``optimize_grid`` would start from), the
exponential Adams-Bashforth weights of order ``START_ORDER`` and the Adams-Moulton weights of one more on it
(``learned.adams_weights``; UniPC-2's UniP and UniC are approximations of these, and like it the start
converges at order 3), tau = t and g = 1. The result is the better of start and end on all the tuning
draws, so it is never worse there.

What is learned: K - 1 interior times (as shares of the log-SNR range, a softmax, so the grid stays
ordered), K network times (a shift in log-SNR from the state's own time), K state scales and
K HISTORY + (K - 1)(HISTORY + 1) weights (as corrections to the start's): 10K - 5 numbers, 45 at K = 5.
Few against n x dim matched coordinates, but the tuning draws are one sample: the held-out error
(``held_out_solver_errors``, on a seed the solver was not learned on) is the number to report.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from importlib import resources
from numbers import Integral
from pathlib import Path

import torch

from ..core.flow import Model, model_device_dtype
from ..core.sde import T_MIN, VPSDE
from ..runtime.cache import cache_dir as runtime_cache_dir
from ..samplers import sample
from ..samplers.common import on
from ..samplers.learned import HISTORY, LearnedSolver, adams_weights, coefficients, load_solver, run
from .metrics import ode_err
from .tune import _EndPointError, _counting

START_ORDER = 2  # points of the start's predictor (3 started worse on the digits U-Net at 5 NFE: 0.64 vs 0.16)
BASE = "unipc"   # the fixed solver the start's grid is chosen for, and the fallback where no solver is learned


def _start_weights(lam: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The exponential Adams-Bashforth (P, ``START_ORDER`` points) and Adams-Moulton (C, one more: the new
    point) weights on the K evaluation points lam [K] (the step onto t = 0: x_0 = m_{K-1}), zero-padded to
    HISTORY (+ 1)."""
    k = len(lam)
    P = torch.zeros(k, HISTORY, dtype=lam.dtype)
    C = torch.zeros(k - 1, HISTORY + 1, dtype=lam.dtype)
    P[-1, 0] = 1.0
    for i in range(k - 1):
        q = min(i + 1, START_ORDER)
        P[i, :q] = adams_weights(lam[i - torch.arange(q)], lam[i], lam[i + 1])
        q = min(i + 2, START_ORDER + 1)  # as UniC-p: the new point raises the order by one
        C[i, :q] = adams_weights(lam[i + 1 - torch.arange(q)], lam[i], lam[i + 1])
    return P, C


def exponential_adams(sde: VPSDE, t: torch.Tensor) -> LearnedSolver:
    """The start on the grid ``t`` (from 1 to 0): ``_start_weights`` at its first K times, tau = t, g = 1. An
    exponential Adams predictor-corrector of order ``START_ORDER`` (tests: its order on the Gaussian)."""
    k = len(t) - 1
    P, C = _start_weights(sde.log_snr(t[:-1]))
    return LearnedSolver(t, t[:-1].clone(), torch.ones(k, dtype=torch.float64), P, C).check()


class _Parameters(torch.nn.Module):
    """The learned numbers (module docstring) and the solver they make; float64 on the CPU."""

    def __init__(self, sde: VPSDE, t: torch.Tensor, t_min: float):
        super().__init__()
        self.sde = sde
        lam_end = sde.log_snr(torch.tensor([1.0, t_min], dtype=torch.float64))
        self.lam_1, self.lam_min = lam_end[0], lam_end[1]
        lam = torch.cat([sde.log_snr(t[:-1]), self.lam_min[None]])  # t[0] = 1: lam[0] = lam_1
        self.a = torch.nn.Parameter(torch.log((lam[1:] - lam[:-1]) / (self.lam_min - self.lam_1)))
        k = len(t) - 1
        self.shift = torch.nn.Parameter(torch.zeros(k, dtype=torch.float64))
        self.g = torch.nn.Parameter(torch.ones(k, dtype=torch.float64))
        self.dP = torch.nn.Parameter(torch.zeros(k, HISTORY, dtype=torch.float64))
        self.dC = torch.nn.Parameter(torch.zeros(k - 1, HISTORY + 1, dtype=torch.float64))

    def solver(self) -> LearnedSolver:
        """The solver of the current numbers (differentiable in them)."""
        share = torch.cumsum(torch.softmax(self.a, 0), 0)[:-1]
        lam = torch.cat([self.lam_1[None], self.lam_1 + (self.lam_min - self.lam_1) * share])
        t = torch.cat([self.sde.t_from_log_snr(lam), lam.new_zeros(1)])
        t = torch.cat([t.new_ones(1), t[1:]])  # exactly 1 at the start
        tau = self.sde.t_from_log_snr(lam + self.shift).clamp(max=1.0)
        P, C = _start_weights(lam)
        return LearnedSolver(t, tau, self.g, P + self.dP, C + self.dC)


def _run(model: Model, solver: LearnedSolver, x1: torch.Tensor) -> torch.Tensor:
    """The solver's end points from x1, differentiable in its numbers (``sample_learned`` without its checks)."""
    c_x, c_m = coefficients(model.sde, solver.t, solver.g)
    return run(model, x1, solver.t, solver.tau, *on(model, c_x, c_m, solver.P, solver.C))


def _detached(solver: LearnedSolver) -> LearnedSolver:
    parts = (solver.t, solver.tau, solver.g, solver.P, solver.C)
    return LearnedSolver(*(p.detach().clone() for p in parts))


@contextmanager
def _frozen(eps_model):
    """The network's parameters without gradients in the block (only the solver's numbers learn), as they were
    after it."""
    params = list(eps_model.parameters()) if isinstance(eps_model, torch.nn.Module) else []
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad_(flag)


def optimize_solver(eps_model, sde: VPSDE, steps: int, shape, *, n: int = 512, seed: int = 0,
                    t_min: float | None = None, iters: int = 150, batch: int = 128, lr: float = 0.02,
                    device=None, dtype: torch.dtype | None = None, progress: bool = False,
                    references: dict | None = None) -> LearnedSolver:
    """The ``steps``-call solver (``samplers.learned``) learned for ``eps_model`` on n prior draws (see the
    module docstring).

    Args:
        eps_model, sde: as for ``sample``; shape: one sample's shape (the U-Net's ``model.shape``).
        steps: K >= 2 network calls.
        n, seed: the tuning draws x1 ~ N(0, I) (a generator on the model's device, seeded ``seed``).
        t_min: the model's smallest training time (None: ``T_MIN``): the reference's end and the lower end of
            the network's times.
        iters, batch, lr: Adam steps, tuning draws per step, and the learning rate of the weights (times and
            shifts learn at 3 lr), cosine-decayed to 0.
        progress: tqdm bars of the reference's network calls and of the steps (with the error so far).
        references: a dict that keeps the PF-ODE's solutions of the draws for the next call (several K).

    Returns a ``LearnedSolver`` whose ``info`` holds the tuning error, the start's, the fixed solvers' on the
    named grids, the network calls and the minutes spent.
    """
    from tqdm.auto import tqdm

    for name, value, low in (("steps", steps, 2), ("iters", iters, 0), ("batch", batch, 1)):
        if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be a positive number; got {lr!r}")
    start_time = time.perf_counter()
    t_min = T_MIN if t_min is None else t_min
    err = _EndPointError(eps_model, sde, BASE, steps, shape, n, seed, t_min, device, dtype, {}, progress,
                         references)
    inside = {name: t for name, t in err.fixed.items() if bool((t[1:-1] > t_min).all())}  # a log-SNR start
    start_grid = min(inside, key=err.fixed_errors.get)
    device, dtype = model_device_dtype(eps_model, device, dtype)
    model = Model(eps_model, sde, device, dtype)
    params = _Parameters(sde, err.fixed[start_grid], t_min)
    x1, reference = err.x1, err.reference

    def full_error() -> float:
        with torch.no_grad():
            return ode_err(_run(model, params.solver(), x1), reference)

    start_error = full_error()
    start = _detached(params.solver())
    slow = [params.dP, params.dC, params.g]
    opt = torch.optim.Adam([{"params": [params.a, params.shift], "lr": 3 * lr}, {"params": slow, "lr": lr}])
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(iters, 1))
    g = torch.Generator().manual_seed(seed)
    with _frozen(eps_model), tqdm(total=iters, desc=f"learning a {steps}-call solver", unit="step",
                                  disable=not progress, dynamic_ncols=True) as bar:
        for _ in range(iters):
            idx = torch.randperm(n, generator=g)[:batch].to(device)
            opt.zero_grad()
            loss = (_run(model, params.solver(), x1[idx]) - reference[idx]).pow(2).mean()
            loss.backward()
            opt.step()
            schedule.step()
            bar.update()
            bar.set_postfix(ode_err=f"{math.sqrt(loss.item()):.4g}")
    error = full_error()
    solver = _detached(params.solver()) if error <= start_error else start
    info = {"steps": steps, "t_min": t_min, "n": n, "seed": seed, "iters": iters, "batch": batch, "lr": lr,
            "start": {"grid": start_grid, "order": START_ORDER, "error": start_error},
            "errors": {"tuning": {"learned": min(error, start_error),
                                  **{f"{BASE}-{k}": v for k, v in err.fixed_errors.items()}}},
            "calls": {"reference": err.reference_nfe, "named grids": steps * len(err.fixed), "learning": model.nfe,
                      "note": "reference and named grids at batch n; learning at batch `batch`, each call also "
                              "back-propagated"},
            "minutes": (time.perf_counter() - start_time) / 60}
    solver.info = info
    return solver


FIXED = {"ddim": ("ddim", {}), "dpmpp": ("dpmpp", {}), "dpmpp3": ("dpmpp", {"order": 3}), "unipc": ("unipc", {}),
         "unipc3": ("unipc", {"order": 3}), "deis": ("deis", {}), "ipndm": ("ipndm", {})}  # name: method, options


def held_out_solver_errors(eps_model, sde: VPSDE, solver: LearnedSolver, shape, *, n: int = 512, seed: int = 1,
                           t_min: float | None = None, device=None, dtype: torch.dtype | None = None,
                           progress: bool = False, references: dict | None = None) -> dict:
    """``{"learned": ode_err of solver, "<fixed>-<grid>": ode_err of each of FIXED on each named grid}`` at the
    solver's K network calls, on n prior draws of ``seed`` (choose one it was not learned on)."""
    t_min = T_MIN if t_min is None else t_min
    err = _EndPointError(eps_model, sde, "ddim", solver.steps, shape, n, seed, t_min, device, dtype, {}, progress,
                         references)
    run = dict(x1=err.x1, device=err.x1.device, dtype=err.x1.dtype)
    errors = {"learned": ode_err(solver.sample(eps_model, sde, err.x1.shape, **run).x, err.reference),
              **{f"ddim-{grid}": e for grid, e in err.fixed_errors.items()}}  # err measured ddim's
    with _counting(eps_model, f"fixed solvers, seed {seed}", progress):
        for name, (method, options) in FIXED.items():
            for grid, t in err.fixed.items() if name != "ddim" else ():
                x = sample(eps_model, sde, err.x1.shape, method, grid=t, **run, **options).x
                errors[f"{name}-{grid}"] = ode_err(x, err.reference)
    return errors



def best_fixed(errors: dict) -> tuple[str, float]:
    """The fixed solver-grid of least error in ``held_out_solver_errors``' result, and its error."""
    return min(((k, v) for k, v in errors.items() if k != "learned"), key=lambda kv: kv[1])


def learn_solver(eps_model, sde: VPSDE, steps: int, shape, *, n: int = 512, seed: int = 0,
                 held_out_seed: int | None = None, n_held: int | None = None, t_min: float | None = None,
                 references: dict | None = None, progress: bool = False, **options) -> LearnedSolver:
    """``optimize_solver`` on n draws of ``seed`` (``options``: its iters, batch, lr, device, dtype), then
    ``held_out_solver_errors`` on ``n_held`` (None: n) draws of ``held_out_seed`` (None: seed + 1), kept in
    ``info["errors"]["held_out"]``: a solver with the numbers its file should carry."""
    solver = optimize_solver(eps_model, sde, steps, shape, n=n, seed=seed, t_min=t_min, progress=progress,
                             references=references, **options)
    held = held_out_solver_errors(eps_model, sde, solver, shape, n=n_held or n,
                                  seed=seed + 1 if held_out_seed is None else held_out_seed, t_min=t_min,
                                  device=options.get("device"), dtype=options.get("dtype"), progress=progress,
                                  references=references)
    solver.info["errors"]["held_out"] = held
    return solver


SHIPPED_SOLVERS = Path(str(resources.files("scoregen") / "checkpoints" / "solvers"))  # the shipped models'


def solver_path(info, steps: int, cache_dir=None) -> tuple[Path, Path]:
    """Where the ``steps``-call learned solver of the model ``info`` (``ModelInfo``) is shipped and cached: the
    name holds a hash of the model's files, so a changed model has none."""
    name = f"{Path(info.path).stem}-{info.digest()}-learned-{steps}.json"
    return SHIPPED_SOLVERS / name, runtime_cache_dir(cache_dir) / "solvers" / name


def solver_for(loaded, steps: int, *, cache_dir=None) -> LearnedSolver | None:
    """The ``steps``-call solver learned for ``loaded`` (``models.LoadedModel``): shipped with the package for its
    shipped checkpoints, else saved in ``cache_dir/solvers`` by ``scoregen tune --learn solver``; None if
    neither (the caller falls back to ``BASE``: learning takes minutes, never done behind a sweep's back)."""
    for path in solver_path(loaded.info, steps, cache_dir):
        if path.is_file():
            return load_solver(path)
    return None


__all__ = ["optimize_solver", "held_out_solver_errors", "learn_solver", "best_fixed", "solver_for", "solver_path",
           "START_ORDER", "BASE"]
