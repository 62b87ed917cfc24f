"""Time grids: where a sampler evaluates the network.

A grid is a monotone map ``tau(u)`` from ``u`` in [0, 1] onto [t_lo, 1] (``tau(0) = t_lo``,
``tau(1) = 1``); K steps visit ``t_i = tau(i / K)``, i = K, ..., 0. All schedule math is the SDE's.

    uniform     t = t_lo + (1 - t_lo) u                       (DDPM: t_i = i / K with t_lo = 0)
    quadratic   t = t_lo + (1 - t_lo) u^2                     (DDIM, Song et al. 2021, App. D.2)
    log_snr     log_snr(t) uniform in u                       (DPM-Solver, Lu et al. 2022)
    karras      s^(1/rho) uniform in u, s = sigma / alpha, rho = 7   (EDM, Karras et al. 2022, eq. 5)

``uniform`` and ``quadratic`` reach t_lo = 0; ``log_snr`` and ``karras`` need t_lo > 0.

``sampling_grid`` turns a rule and a step count into the grid a sampler takes: for a sampler that steps onto
t = 0 the last time is 0, for one that stops at t_min > 0 (and then denoises) the last time is t_min.

A grid file (``save_grid``, ``load_grid``) holds the times themselves as JSON: ``{"t": [...], ...}`` (a tuned grid,
``scoregen.tune``, with how it was made) or a bare list of decreasing times.
"""
from __future__ import annotations

import json
from numbers import Real
from pathlib import Path

import torch

from ..core.checks import check_t_min
from ..core.sde import T_MIN, VPSDE
from ..runtime.outputs import write_atomic
from .common import check_grid, read_json

RHO = 7.0


def _uniform(sde: VPSDE, u: torch.Tensor, t_lo: torch.Tensor) -> torch.Tensor:
    return t_lo + (1 - t_lo) * u


def _quadratic(sde: VPSDE, u: torch.Tensor, t_lo: torch.Tensor) -> torch.Tensor:
    return t_lo + (1 - t_lo) * u ** 2


def _log_snr(sde: VPSDE, u: torch.Tensor, t_lo: torch.Tensor) -> torch.Tensor:
    lam_lo, lam_hi = sde.log_snr(t_lo), sde.log_snr(torch.ones_like(t_lo))
    return sde.t_from_log_snr(lam_lo + u * (lam_hi - lam_lo))


def _karras(sde: VPSDE, u: torch.Tensor, t_lo: torch.Tensor) -> torch.Tensor:
    s_lo, s_hi = (torch.exp(-sde.log_snr(t) / RHO) for t in (t_lo, torch.ones_like(t_lo)))
    s = (s_lo + u * (s_hi - s_lo)) ** RHO
    return sde.t_from_log_snr(-torch.log(s))


GRIDS = {"uniform": _uniform, "quadratic": _quadratic, "log_snr": _log_snr, "karras": _karras}
GRIDS_FROM_ZERO = ("uniform", "quadratic")  # the grids that may end at t_lo = 0


def tau(sde: VPSDE, grid: str, u, t_lo: float) -> torch.Tensor:
    """The grid map ``tau(u)`` in float64 on the CPU (u a float or a CPU tensor)."""
    u = torch.as_tensor(u, dtype=torch.float64)
    return GRIDS[grid](sde, u, torch.tensor(float(t_lo), dtype=torch.float64))


def time_grid(sde: VPSDE, grid: str, steps: int, t_lo: float) -> torch.Tensor:
    """``[t_K, ..., t_0] = tau([K, ..., 0] / K)``: K + 1 decreasing times from 1 to t_lo (float64, CPU).

    The end points are exact: t_K = 1 and t_0 = t_lo.
    """
    t = tau(sde, grid, torch.arange(steps, -1, -1, dtype=torch.float64) / steps, t_lo)
    t[0], t[-1] = 1.0, t_lo
    return t


def sampling_grid(sde: VPSDE, grid: str, steps: int, t_min: float | None,
                  onto_zero: bool) -> tuple[torch.Tensor, float]:
    """The K + 1 times of ``steps`` steps of rule ``grid`` (float64, CPU), as ``sample`` passes them on,
    and t_min, the model's smallest training time (None: ``T_MIN``).

    ``onto_zero`` (ddpm, ddim, ...): the grid from 1 to 0 for ``GRIDS_FROM_ZERO`` (t_i = i / K for uniform:
    DDPM's grid), else ``time_grid`` to t_min with its last time then set to 0: the last step lands on the
    data. Else (samplers with ``final_denoise``): ``time_grid`` from 1 to t_min.
    """
    t_min = T_MIN if t_min is None else t_min
    check_t_min(t_min)
    t = time_grid(sde, grid, steps, 0.0 if onto_zero and grid in GRIDS_FROM_ZERO else t_min)
    if onto_zero:
        t[-1] = 0.0
    return t, float(t_min)


# --- grid files ----------------------------------------------------------------------------------------
def _grid_of(values, where: str) -> torch.Tensor:
    """``values``, a list of numbers, as a grid (float64, CPU), checked by ``common.check_grid``; errors name
    ``where``."""
    if not isinstance(values, (list, tuple)):
        raise ValueError(f"{where} must be a list of decreasing times in [0, 1]; got a {type(values).__name__}")
    bad = [(i, v) for i, v in enumerate(values) if isinstance(v, bool) or not isinstance(v, Real)]
    if bad:
        i, v = bad[0]
        raise ValueError(f"{where} must be a list of decreasing times in [0, 1]; got {v!r} at index {i}")
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    try:
        check_grid(t)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return t


def save_grid(path, t, **info) -> Path:
    """Write the grid ``t`` (a tensor or list of decreasing times in [0, 1]) to ``path`` as JSON, ``{"t": [...],
    **info}`` (``info``: JSON values, e.g. method, steps, options, checkpoint, errors), atomically
    (``outputs.write_atomic``). ``load_grid`` reads it back."""
    values = t.tolist() if isinstance(t, torch.Tensor) else t
    grid = _grid_of(values, "t")
    return write_atomic(path, (json.dumps({"t": grid.tolist(), **info}, indent=1) + "\n").encode())


def resolve_grid(grid) -> str | torch.Tensor:
    """A grid argument as samplers take it: a ``GRIDS`` name stays a name; a tensor becomes float64 on the CPU;
    a grid file (``.json``, or any existing path) becomes its times (``load_grid``)."""
    if isinstance(grid, torch.Tensor):
        return grid.detach().to("cpu", torch.float64)
    if isinstance(grid, str) and grid in GRIDS:
        return grid
    if isinstance(grid, (str, Path)) and (Path(grid).suffix == ".json" or Path(grid).exists()):
        return load_grid(grid)
    raise ValueError(f"unknown grid {grid!r}; valid: {', '.join(GRIDS)}, or a grid file (.json)")


def load_grid(path) -> torch.Tensor:
    """The grid of a JSON file (float64, CPU): ``save_grid``'s ``{"t": [...], ...}`` or a bare list of decreasing
    times in [0, 1] (any library's timestep list, as times). ``sample(..., grid=load_grid(path))`` runs on it."""
    data = read_json(path, "grid file")
    if isinstance(data, dict):
        if "t" not in data:
            raise ValueError(f"{path} is not a grid file: its JSON object has no 't' (the times); "
                             f"keys: {', '.join(map(str, data))}")
        data = data["t"]
    return _grid_of(data, f"the times of {path}")
