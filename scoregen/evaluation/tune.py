"""Time grids tuned to the model: the K + 1 times on which a deterministic sampler best reproduces the
probability-flow ODE's own map of the prior draws.

Objective (the end-point matching of S4S, Frankel et al. 2025, and LD3, Tong et al. 2025, on the times alone;
the sampler's coefficients stay its paper's): the RMS end-point error ``metrics.ode_err`` of
``sample(method, grid=t, x1=x1)`` against ``pf_ode_solution(x1)`` (dopri5 at 1e-5 and the final denoising
step, computed once) on n prior draws x1. It is deterministic given the draws, so an optimiser sees no
sampling noise, and it measures what a few-step sampler is for: landing where the ODE lands.

Optimiser (the iterative refinement of Align Your Steps, Sabour et al. 2024, which optimises one time at a
time between its neighbours): sweeps over the interior times t_1, ..., t_{K-1}, each moved in log-SNR between
its two neighbours (so every trial is a valid decreasing grid) by one step of successive parabolic
interpolation: the error at the current point and at +-d, at the parabola's vertex when it is convex, the best
of these kept; d halves when nothing improved and doubles when the error is not convex there and an edge
improved. Interior times stay in
(t_min, 1); the last time is 0 for samplers that step onto the data and t_min for those with
``final_denoise``. The start is the best named grid (``GRIDS``) on the same draws, so the result is never
worse on them. Cost: ``max_evals`` sampler runs (each its NFE) plus one reference solve.

Only deterministic samplers have an end point to match (``samplers.is_deterministic``: ddim and dpmpp with
eta = 0, heun without churn, unipc, deis, ipndm, ode with a fixed-grid solver; an adaptive ode solver uses
only the grid's end points). ``held_out_errors`` checks a grid on fresh prior draws against every named grid.
"""
from __future__ import annotations

import hashlib
import json
import math
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from numbers import Integral
from pathlib import Path

import numpy as np
import torch

from .metrics import ode_err
from ..samplers import GRIDS, METHODS, is_deterministic, method_options, pf_ode_solution, sample, steps_onto_zero
from ..samplers.grids import load_grid, sampling_grid, save_grid
from ..core.flow import ADAPTIVE, model_device_dtype
from ..core.sde import T_MIN, VPSDE
from ..runtime.cache import cache_dir as runtime_cache_dir

FIRST_STEP, MAX_STEP = 0.1, 0.3  # trial steps d, as fractions of the log-SNR gap between a time's neighbours
MIN_STEP = 1e-3  # tuning ends when every time's trial step is below this
SHIPPED_GRIDS = Path(str(resources.files("scoregen") / "checkpoints" / "grids"))  # the shipped models' tuned grids
TUNING_SEED = 12_345  # grid_for's tuning draws: not a sweep's (compare draws its rows from --seed, its floor +2)


@dataclass
class TunedGrid:
    """``optimize_grid``'s result. ``t``: the K + 1 tuned times (float64, CPU; ``sample(..., grid=t)``);
    ``error``: its ``ode_err`` on the tuning draws; ``fixed_errors``: each named grid's there; ``start_grid``,
    ``start_error``: the named grid tuning started from; ``evaluations``: the sampler runs tuning made."""
    t: torch.Tensor
    error: float
    fixed_errors: dict
    start_grid: str
    start_error: float
    evaluations: int


@contextmanager
def _counting(eps_model, desc: str, progress: bool):
    """A tqdm bar (``progress``) of the calls of ``eps_model`` in the block, by a forward hook of an nn.Module (a
    plain function's calls are not counted)."""
    from tqdm.auto import tqdm

    def tick(*_):  # returns None: the network's output stays its own
        bar.update()

    with tqdm(desc=desc, unit="NFE", disable=not progress, dynamic_ncols=True) as bar:
        counted = progress and isinstance(eps_model, torch.nn.Module)
        hook = eps_model.register_forward_hook(tick) if counted else None
        try:
            yield
        finally:
            if hook is not None:
                hook.remove()


class _EndPointError:
    """``ode_err`` of ``method`` on a grid against the PF-ODE's map of n prior draws (``seed``), the reference
    solved once (``progress``: a bar of its network calls; ``reference_nfe``: its calls, 0 when taken) or
    taken from ``references`` (a dict shared by several tunings of one model, keyed by the draws); ``fixed``
    / ``fixed_errors``: the named grids at ``steps`` and their errors."""

    def __init__(self, eps_model, sde, method, steps, shape, n, seed, t_min, device, dtype, options, progress,
                 references: dict | None = None):
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
        if not is_deterministic(method, options) or (method == "ode" and options.get(
                "solver", method_options("ode")["solver"]) in ADAPTIVE):
            raise ValueError(f"method {method!r} with options {options} is not a deterministic map of the prior "
                             "draw on the grid's times; tunable: ddim and dpmpp with eta = 0, heun with "
                             "s_churn = 0, unipc, deis, ipndm, and ode with a fixed-grid solver")
        for name, value, low in (("steps", steps, 1), ("n", n, 2)):
            if isinstance(value, bool) or not isinstance(value, Integral) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
        if not (isinstance(shape, (tuple, list, torch.Size)) and shape
                and all(isinstance(s, Integral) and s > 0 for s in shape)):
            raise ValueError(f"shape must be the shape of one sample, a tuple of positive integers (e.g. (2,) or "
                             f"(1, 8, 8)); got {shape!r}")
        device, dtype = model_device_dtype(eps_model, device, dtype)
        self.x1 = sde.prior_sample((n, *shape), generator=torch.Generator(device).manual_seed(seed), device=device,
                                   dtype=dtype)
        self.run = dict(eps_model=eps_model, sde=sde, shape=self.x1.shape, method=method, x1=self.x1,
                        device=device, dtype=dtype, **options)
        self.fixed = {name: sampling_grid(sde, name, steps, t_min, steps_onto_zero(method))[0] for name in GRIDS}
        with _counting(eps_model, f"PF-ODE reference, seed {seed}", progress):
            samples = {name: sample(grid=t, **self.run).x for name, t in self.fixed.items()}  # options checked first
            references = {} if references is None else references
            key, self.reference_nfe = (n, seed, t_min, tuple(shape)), 0
            if key not in references:
                solved = pf_ode_solution(eps_model, sde, self.x1, t_min=t_min, device=device, dtype=dtype)
                references[key], self.reference_nfe = solved.x, solved.nfe
            self.reference = references[key]
        self.fixed_errors = {name: ode_err(x, self.reference) for name, x in samples.items()}
        self.evaluations = 0

    def __call__(self, t: torch.Tensor) -> float:
        self.evaluations += 1
        return ode_err(sample(grid=t, **self.run).x, self.reference)


def _refine(f, u0: float, f0: float, d: float) -> tuple[float, float, float]:
    """One step of successive parabolic interpolation on (0, 1) from ``u0`` (where ``f`` is ``f0``) with trial
    step ``d``: f at u0 -+ d (never past half-way to an end), at the vertex of the parabola through the three
    when it is convex; returns the best (u, f) and the next trial step."""
    us = [u0, max(u0 - d, u0 / 2), min(u0 + d, (1 + u0) / 2)]
    fs = [f0, f(us[1]), f(us[2])]
    a, b, _ = np.polyfit(us, fs, 2) if all(map(math.isfinite, fs)) else (0.0, 0.0, 0.0)
    if a > 0:
        lo, hi = max(us[1] - d, us[1] / 2), min(us[2] + d, (1 + us[2]) / 2)
        us.append(min(max(-b / (2 * a), lo), hi))
        fs.append(f(us[-1]))
    best = int(np.argmin(fs))
    d = d / 2 if best == 0 else min(2 * d, MAX_STEP) if len(us) == 3 else d
    return us[best], fs[best], d


def optimize_grid(eps_model, sde: VPSDE, method: str, steps: int, shape, *, n: int = 256, seed: int = 0,
                  t_min: float | None = None, max_evals: int = 200, device=None, dtype: torch.dtype | None = None,
                  progress: bool = False, **options) -> TunedGrid:
    """The K = ``steps`` grid on which ``method`` (with ``options``) best reproduces the PF-ODE's map of n prior
    draws: least ``ode_err`` against ``pf_ode_solution`` (see the module docstring for the method).

    Args:
        eps_model, sde: as for ``sample``.
        method: a deterministic sampler (ddim, dpmpp, unipc, deis, ipndm, heun, ode with a fixed grid); options: its
            options (eta = 0 / s_churn = 0 where it has them).
        steps: K >= 1 (K = 1 has no interior time: the best named grid is returned).
        shape: the shape of one sample, e.g. (2,) or the U-Net's ``model.shape``.
        n, seed: the tuning draws x1 ~ N(0, I) (a generator on the model's device, seeded ``seed``).
        t_min: the model's smallest training time (None: ``T_MIN``; give a checkpoint's ``config.t_min``): the
            lower end of the interior times, the last time of ``final_denoise`` samplers, the reference's end.
        max_evals: the most sampler runs the optimiser makes (each ``steps``-ish NFE at batch n); it stops
            earlier when every time has settled.
        progress: tqdm bars: the network calls of the named grids and the reference solve, then the runs, with
            the best error so far.

    Returns a ``TunedGrid``; ``held_out_errors`` checks its grid on fresh draws.
    """
    from tqdm.auto import tqdm

    if isinstance(max_evals, bool) or not isinstance(max_evals, Integral) or max_evals < 0:
        raise ValueError(f"max_evals must be an integer >= 0; got {max_evals!r}")
    t_min = T_MIN if t_min is None else t_min
    err = _EndPointError(eps_model, sde, method, steps, shape, n, seed, t_min, device, dtype, options, progress)
    # start: the best named grid whose interior times lie in (t_min, 1), where the log-SNR coordinates live
    inside = {name: t for name, t in err.fixed.items() if bool(((t[1:-1] > t_min) & (t[1:-1] < 1)).all())}
    start = min(inside, key=err.fixed_errors.get)
    t, best = err.fixed[start].clone(), err.fixed_errors[start]
    lam = sde.log_snr(torch.tensor([1.0, *t[1:-1].tolist(), t_min], dtype=torch.float64)).tolist()
    d = [FIRST_STEP] * (steps - 1)
    with tqdm(total=max_evals, desc=f"tuning {method} K={steps}", unit="run", disable=not progress,
              dynamic_ncols=True) as bar:
        while max(d, default=0.0) >= MIN_STEP and err.evaluations + 3 <= max_evals:
            for i in range(1, steps):
                if err.evaluations + 3 > max_evals:
                    break
                if d[i - 1] < MIN_STEP:
                    continue
                lo, hi = lam[i - 1], lam[i + 1]

                def f(u, i=i, lo=lo, hi=hi):
                    trial = t.clone()
                    trial[i] = sde.t_from_log_snr(torch.tensor(lo + u * (hi - lo), dtype=torch.float64))
                    try:
                        e = err(trial)
                    except ValueError:  # non-finite samples: the options were checked on the named grids
                        e = math.inf
                    bar.update(1)
                    return e

                u0 = (lam[i] - lo) / (hi - lo)
                u, best, d[i - 1] = _refine(f, u0, best, d[i - 1])
                if u != u0:  # t stays the grid that scored ``best``
                    lam[i] = lo + u * (hi - lo)
                    t[i] = sde.t_from_log_snr(torch.tensor(lam[i], dtype=torch.float64))
                bar.set_postfix(ode_err=f"{best:.4g}")
    return TunedGrid(t, best, err.fixed_errors, start, err.fixed_errors[start], err.evaluations)


def held_out_errors(eps_model, sde: VPSDE, method: str, t: torch.Tensor, shape, *, n: int = 256, seed: int = 1,
                    t_min: float | None = None, device=None, dtype: torch.dtype | None = None, progress: bool = False,
                    **options) -> dict:
    """``{"tuned": ode_err of grid t, name: ode_err of each named grid of GRIDS at the same K}`` of ``method``
    (with ``options``) on n prior draws of ``seed``: choose a seed the grid was not tuned on.
    ``t_min`` (the reference's end and the named grids'): None is t[-1] for ``final_denoise`` samplers (where
    the grid stops), else ``T_MIN``. ``progress``: a tqdm bar of the network calls of the named grids and the
    reference solve."""
    if not (isinstance(t, torch.Tensor) and t.dim() == 1 and len(t) >= 2):
        raise ValueError(f"t must be a grid, a 1-D tensor of decreasing times; got {t!r}")
    if t_min is None:
        t_min = T_MIN if method not in METHODS or steps_onto_zero(method) else float(t[-1])
    err = _EndPointError(eps_model, sde, method, len(t) - 1, shape, n, seed, t_min, device, dtype, options,
                         progress)
    return {"tuned": err(t.detach().to("cpu", torch.float64)), **err.fixed_errors}


def grid_for(loaded, method: str, steps: int, options: dict | None = None, *, cache_dir=None,
             progress: bool = False) -> torch.Tensor:
    """The tuned ``steps``-step grid of ``method`` (with ``options``) for the model ``loaded``
    (``models.LoadedModel``): shipped with the package for its shipped checkpoints (``SHIPPED_GRIDS``), else read
    from ``cache_dir/grids`` (None: ``~/.cache/scoregen``), else tuned by ``optimize_grid`` with its defaults at the
    model's t_min on the draws of ``TUNING_SEED`` (so that a sweep's own draws are held out) and saved there. The
    file's name holds a hash of the model's files (``ModelInfo.digest``), so a changed model is tuned afresh."""
    options, info = dict(options or {}), loaded.info
    key = hashlib.sha1(json.dumps([options, info.t_min], sort_keys=True).encode()).hexdigest()[:8]
    name = f"{Path(info.path).stem}-{info.digest()}-{method}-{steps}-{key}.json"
    path = runtime_cache_dir(cache_dir) / "grids" / name
    for found in (SHIPPED_GRIDS / name, path):
        if found.is_file():
            return load_grid(found)
    tuned = optimize_grid(loaded.model, loaded.sde, method, steps, tuple(info.shape), t_min=info.t_min,
                          seed=TUNING_SEED, progress=progress, **options)
    save_grid(path, tuned.t, method=method, steps=steps, options=options, checkpoint=info.path, t_min=info.t_min,
              start_grid=tuned.start_grid, errors={"tuning": {"tuned": tuned.error, **tuned.fixed_errors}})
    return tuned.t


__all__ = ["TunedGrid", "optimize_grid", "held_out_errors", "grid_for"]
