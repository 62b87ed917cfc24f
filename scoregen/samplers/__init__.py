"""One entry point for every sampler: ``sample(eps_model, sde, shape, method, steps, ...)``.

``METHODS`` is the registry: each entry names its function, its options with their defaults and
allowed values, and a hook that fills method-specific defaults and checks combinations.
Registering a sampler is one entry and one function
``fn(model, sde, x, *, generator, record, **options) -> x`` (``x`` the prior draw at t = 1,
``model`` a counted, shape-checked ``common.Model``). ``GRIDS`` are the time grids (``grids.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Callable

import torch

from ..nets.vae import VAE, sample_vae
from ..sde import VPSDE
from .common import Model, Recorder, Trajectory, model_device_dtype
from .ddim import sample_ddim
from .ddpm import VARIANCES, sample_ddpm
from .grids import GRIDS, GRIDS_FROM_ZERO
from .ode import ADAPTIVE, VARIABLES, sample_ode
from .ode import SOLVERS as ODE_SOLVERS
from .sde import SOLVERS as SDE_SOLVERS
from .sde import sample_sde

T_MIN = 1e-3  # where the continuous samplers stop (and log_snr/karras grids of ddpm/ddim end)


@dataclass(frozen=True)
class Method:
    """A registered sampler (see the module docstring)."""
    fn: Callable
    summary: str
    options: dict                                   # option -> default; "steps" always present
    choices: dict = field(default_factory=dict)     # option -> allowed values
    resolve: Callable | None = None                 # (options, given) -> None: fill defaults, check


@dataclass
class SampleResult:
    """``x`` on the model's device; ``nfe`` network calls made; ``options`` as resolved (method included);
    ``trajectory`` (times, states) from t = 1 to the end when asked."""
    x: torch.Tensor
    nfe: int
    options: dict
    trajectory: Trajectory | None = None


def _check_range(name: str, value, lo: float, hi: float, lo_open=True, hi_open=True) -> None:
    ok = isinstance(value, Real) and not isinstance(value, bool) and (lo < value if lo_open else lo <= value) \
        and (value < hi if hi_open else value <= hi)
    if not ok:
        span = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ValueError(f"{name} must be a number in {span}; got {value!r}")


def _resolve_discrete(opts: dict, given: set) -> None:
    """ddpm/ddim: the grid runs to t_min (default 0 where the grid allows it, else T_MIN), then t_0 = 0."""
    from_zero = opts["grid"] in GRIDS_FROM_ZERO
    if opts["t_min"] is None:
        opts["t_min"] = 0.0 if from_zero else T_MIN
    _check_range(f"t_min (grid={opts['grid']!r})", opts["t_min"], 0.0, 1.0, lo_open=not from_zero)
    if "eta" in opts:
        _check_range("eta", opts["eta"], 0.0, 1.0, lo_open=False, hi_open=False)


def _resolve_continuous(opts: dict, given: set) -> None:
    """sde/ode: t_min in (0, 1); sde's dt -> steps; ode's steps or rtol/atol, whichever the solver uses."""
    _check_range("t_min", opts["t_min"], 0.0, 1.0)
    if opts.get("dt") is not None:
        if "steps" in given:
            raise ValueError("give steps or dt, not both")
        _check_range("dt", opts["dt"], 0.0, 1.0, hi_open=False)
        opts["steps"] = math.ceil((1 - opts["t_min"]) / opts["dt"])
    if opts.get("solver") in ADAPTIVE:
        if "steps" in given:
            raise ValueError(f"steps does not apply to adaptive solver {opts['solver']!r}: it picks its own "
                             "steps; set rtol/atol, or choose a fixed-grid solver")
        opts["steps"] = None
        for name in ("rtol", "atol"):
            _check_range(name, opts[name], 0.0, 1.0)
    elif "rtol" in opts:
        for name in ("rtol", "atol"):
            if name in given:
                raise ValueError(f"{name} applies to adaptive solvers {ADAPTIVE}, not {opts['solver']!r}")
            opts[name] = None


METHODS: dict[str, Method] = {
    "ddpm": Method(sample_ddpm, "ancestral DDPM (Ho et al. 2020) on any grid",
                   {"steps": 1000, "variance": "posterior", "t_min": None},
                   {"variance": VARIANCES}, _resolve_discrete),
    "ddim": Method(sample_ddim, "DDIM (Song et al. 2021, eq. 12); eta = 0 deterministic",
                   {"steps": 50, "eta": 0.0, "t_min": None}, {}, _resolve_discrete),
    "sde": Method(sample_sde, "reverse-time SDE by torchsde.sdeint",
                  {"steps": 1000, "dt": None, "solver": "euler", "t_min": T_MIN, "final_denoise": True},
                  {"solver": tuple(SDE_SOLVERS), "final_denoise": (True, False)}, _resolve_continuous),
    "ode": Method(sample_ode, "probability-flow ODE by torchdiffeq.odeint",
                  {"steps": 20, "solver": "rk4", "variable": "t", "rtol": 1e-5, "atol": 1e-5,
                   "t_min": T_MIN, "final_denoise": True},
                  {"solver": ODE_SOLVERS, "variable": VARIABLES, "final_denoise": (True, False)},
                  _resolve_continuous),
    "vae": Method(sample_vae, "VAE decoder (Kingma & Welling 2014): one call on z ~ N(0, I); the model is a VAE, "
                  "the sde is not used", {"steps": 1, "mean": True}, {"mean": (True, False)}),
}


def describe() -> str:
    """The registry as text: one line per method, then its options with defaults and allowed values."""
    lines = []
    for name, m in METHODS.items():
        lines.append(f"{name}: {m.summary}")
        lines += [f"    {k} = {v!r}" + (f"  {m.choices[k]}" if k in m.choices else "") for k, v in m.options.items()]
    return "\n".join(lines + [f"grids: {', '.join(GRIDS)}"])


def sample(eps_model, sde: VPSDE, shape, method: str, steps: int | None = None, *, grid: str = "uniform",
           generator: torch.Generator | None = None, device=None, dtype: torch.dtype | None = None,
           return_trajectory: bool = False, **options) -> SampleResult:
    """Draw ``shape[0]`` samples by ``method`` from x_1 ~ N(0, I) at t = 1 (see ``METHODS``).

    Args:
        eps_model: callable ``(x, t) -> eps``, t a float tensor [batch] in (0, 1]. An nn.Module
            fixes device and dtype; a plain function takes ``device`` (cpu) and ``dtype`` (float32).
        sde: the VPSDE the model was trained with.
        shape: (batch, *data_shape).
        method: a key of ``METHODS``; steps: its number of steps (None: the method's default).
        grid: a key of ``GRIDS``. generator: seeds everything (prior, noise, Brownian motion).
        return_trajectory: keep the intermediate states in ``result.trajectory``.
        options: the method's options (``METHODS[method].options``).

    Runs under ``torch.no_grad()``; checks the model output's shape on every call and the
    samples' finiteness once at the end.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if not isinstance(sde, VPSDE):
        raise ValueError(f"sde must be a VPSDE (the one eps_model was trained with); got {type(sde).__name__}")
    if method != "vae" and isinstance(eps_model, VAE):
        raise ValueError(f"eps_model is a VAE: sample it with method='vae' (one decoder call); method {method!r} "
                         "needs an eps-network")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None; got {generator!r}")
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; valid: {', '.join(GRIDS)}")
    m = METHODS[method]
    unknown = sorted(set(options) - set(m.options) - {"steps"})
    if unknown:
        raise ValueError(f"option(s) {', '.join(unknown)} do not belong to method {method!r}; "
                         f"its options: {', '.join(k for k in m.options if k != 'steps')}")
    for name, value in options.items():
        if name in m.choices and value not in m.choices[name]:
            raise ValueError(f"{name}={value!r} is not valid for method {method!r}; valid: {m.choices[name]}")
    given = set(options) | ({"steps"} if steps is not None else set())
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, Integral) or steps < 1):
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    opts = {**m.options, **options, "grid": grid}
    if steps is not None:
        opts["steps"] = int(steps)
    if m.resolve is not None:
        m.resolve(opts, given)
    if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) < 1 \
            or not all(isinstance(n, Integral) and n > 0 for n in shape):
        raise ValueError(f"shape must be (batch, *data_shape) of positive integers; got {shape!r}")
    shape = tuple(shape)
    device, dtype = model_device_dtype(eps_model, device, dtype)
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device} but the model samples on {device}; "
                         f"use torch.Generator({device.type!r})")
    model = Model(eps_model, device, dtype)
    record = Recorder() if return_trajectory else None
    with torch.no_grad():
        x = sde.prior_sample(shape, generator=generator, device=device, dtype=dtype)
        x = m.fn(model, sde, x, generator=generator, record=record, **opts)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"method {method!r} produced non-finite samples: eps_model returned NaN/inf "
                         "or the step count is too small for its solver")
    return SampleResult(x, model.nfe, {"method": method, **opts}, record.result() if record else None)


__all__ = ["sample", "SampleResult", "Trajectory", "Method", "METHODS", "GRIDS", "describe"]
