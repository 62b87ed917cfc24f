"""One entry point for every sampler: ``sample(eps_model, sde, shape, method, steps, ...)``.

The contract. A sampler is one function ``sample_<name>(model, x, t, *, generator, record, <options>) -> x``:
``model`` the counted, shape-checked ``core.flow.Model`` (``model.eps(x, t)``, ``model.x0(x, t)``, ``model.sde``),
``x`` the prior draw at t[0], ``t`` the grid itself (a float64 CPU tensor of decreasing times), ``generator``
its noise, ``record`` a ``Recorder`` or None. Its options are its keyword-only parameters, named as in its
paper, with their defaults; a ``Literal`` annotation lists an option's values. It checks its own values.
A sampler that steps onto t = 0 takes a grid ending at 0; one that cannot (eps / sigma is singular there)
has a ``final_denoise`` option, gets a grid ending at t_min > 0 and finishes with one Tweedie step.

``METHODS`` maps names to these functions (as torchdiffeq's ``SOLVERS``); ``STEPS`` holds each method's
default step count; options, defaults, ``describe()`` and the CLI's help are read from the signatures.
``GRIDS`` are the named time grids (``grids.py``).
"""
from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from numbers import Integral

import torch

from ..core.sde import T_MIN, VPSDE
from ..core.flow import Model, check_finite, check_model, kind_of, model_device_dtype
from .common import Recorder, Trajectory, check_grid, check_memory
from .ddim import sample_ddim
from .ddpm import sample_ddpm
from .deis import sample_deis, sample_ipndm
from .dpmpp import sample_dpmpp
from .grids import GRIDS, sampling_grid
from .heun import sample_heun
from .learned import sample_learned
from .ode import TOL, sample_ode
from .pc import sample_pc
from .sde import sample_sde
from .unipc import sample_unipc

METHODS = {"ddpm": sample_ddpm, "ddim": sample_ddim, "sde": sample_sde, "ode": sample_ode,
           "dpmpp": sample_dpmpp, "unipc": sample_unipc, "deis": sample_deis, "ipndm": sample_ipndm,
           "heun": sample_heun, "pc": sample_pc, "learned": sample_learned}
STEPS = {"ddpm": 1000, "ddim": 50, "sde": 1000, "ode": 20,  # default step counts
         "dpmpp": 20, "unipc": 20, "deis": 10, "ipndm": 10, "heun": 18, "pc": 1000,
         "learned": 5}
_CONTRACT = ("generator", "record")  # keyword-only parameters every sampler has, which are not options


def method_options(method: str) -> dict:
    """``{option: default}`` of ``method``: its keyword-only parameters, less the contract's."""
    params = inspect.signature(METHODS[method]).parameters.values()
    return {p.name: p.default for p in params if p.kind is p.KEYWORD_ONLY and p.name not in _CONTRACT}


def choices(method: str) -> dict:
    """``{option: allowed values}`` for the options annotated ``Literal`` (or ``bool``)."""
    hints = typing.get_type_hints(METHODS[method])
    out = {}
    for name in method_options(method):
        hint = hints.get(name)
        if typing.get_origin(hint) is typing.Literal:
            out[name] = typing.get_args(hint)
        elif hint is bool:
            out[name] = (True, False)
    return out


def steps_onto_zero(method: str) -> bool:
    """Whether ``method`` steps onto t = 0 (its grids end at 0); the others stop at t_min > 0 and finish with
    ``final_denoise`` (eps / sigma is singular at 0)."""
    return "final_denoise" not in method_options(method)


def is_deterministic(method: str, options: dict | None = None) -> bool:
    """Whether ``method`` with ``options`` is a deterministic map of the prior draw (it draws no noise after
    x1): ddim and dpmpp with eta = 0, heun without churn, unipc, deis, ipndm, learned and every ode solver."""
    o = {**method_options(method), **(options or {})}
    return method in ("ddim", "dpmpp", "heun", "unipc", "deis", "ipndm", "learned", "ode") and not o.get("eta") \
        and not o.get("s_churn")


def summary(method: str) -> str:
    """The first line of the method's docstring (its summary line)."""
    return inspect.getdoc(METHODS[method]).split("\n")[0].rstrip(".")


@dataclass
class SampleResult:
    """``x`` on the model's device; ``nfe`` network calls made; ``options`` as resolved (method, steps, grid,
    t_min and the method's options); ``trajectory`` (times, states) from t = 1 to the end when asked. For a
    latent model (kind "latent", ``nets.latent``) ``x`` is decoded from ``latents``, the sampler's own
    output, in ``decoder_calls`` (1) calls of the decoder, which ``nfe`` does not count."""
    x: torch.Tensor
    nfe: int
    options: dict
    trajectory: Trajectory | None = None
    latents: torch.Tensor | None = None
    decoder_calls: int = 0


def describe() -> str:
    """The registry as text: one line per method, then its options with defaults and allowed values."""
    lines = []
    for name in METHODS:
        allowed = choices(name)
        lines.append(f"{name}: {summary(name)}")
        lines.append(f"    steps = {STEPS[name]}")
        lines += [f"    {k} = {v!r}" + (f"  {allowed[k]}" if k in allowed else "")
                  for k, v in method_options(name).items()]
    return "\n".join(lines + [f"grids: {', '.join(GRIDS)}, or explicit decreasing times (a tensor or a list)"])


def sample(eps_model, sde: VPSDE, shape, method: str, steps: int | None = None, *, grid="uniform",
           t_min: float | None = None, generator: torch.Generator | None = None, device=None,
           dtype: torch.dtype | None = None, x1: torch.Tensor | None = None, return_trajectory: bool = False,
           **options) -> SampleResult:
    """Draw ``shape[0]`` samples by ``method`` from x_1 ~ N(0, I) at t = 1 (see ``METHODS``).

    Args:
        eps_model: an nn.Module or callable ``(x, t) -> eps``, t a float tensor [batch] in (0, 1]. An nn.Module
            fixes device and dtype; a plain function takes ``device`` (cpu) and ``dtype`` (float32).
            A latent model (kind "latent", ``core.flow.kind_of``: ``nets.latent.LatentDiffusion``, with ``shape``
            and ``to_data(u)``) is sampled in its latent space and its samples decoded (``SampleResult``).
        sde: the VPSDE the model was trained with.
        shape: (batch, *data_shape); for a latent model (batch, *eps_model.shape).
        method: a key of ``METHODS``; steps: its number of steps (None: ``STEPS[method]``).
        grid: a key of ``GRIDS`` (with ``steps``), or the grid itself: a 1-D tensor (or a list or tuple) of
            decreasing times from t[0] <= 1 to its last time (0 for samplers that step onto the data, > 0 for
            the others).
        t_min: the model's smallest training time (None: ``T_MIN``; give a checkpoint's ``config.t_min``):
            where samplers with ``final_denoise`` stop and where log_snr/karras grids end.
        generator: seeds everything (prior, noise, Brownian motion).
        x1: the prior draw at t[0] itself, finite, of ``shape`` (None: drawn from ``generator``), e.g. the
            same draws for several samplers and their reference solution.
        return_trajectory: keep the intermediate states in ``result.trajectory``.
        options: the method's options (``method_options(method)``).

    Runs under ``torch.no_grad()``; refuses up front a request whose state would not fit in the device's
    memory (``common.check_memory``); checks the model output's shape on every call and the samples'
    finiteness once at the end.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    if not isinstance(sde, VPSDE):
        raise ValueError(f"sde must be a VPSDE (the one eps_model was trained with); got {type(sde).__name__}")
    check_model("eps_model", eps_model)
    kind = kind_of(eps_model)
    if kind == "vae":
        raise ValueError(f"eps_model is a VAE: sample it with its own one decoder call, vae.sample(n, generator=...); "
                         f"method {method!r} needs an eps-network")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator or None; got {generator!r}")
    fn, defaults = METHODS[method], method_options(method)
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"option(s) {', '.join(unknown)} do not belong to method {method!r}; "
                         f"its options: {', '.join(defaults)}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, Integral) or steps < 1):
        raise ValueError(f"steps must be a positive integer; got {steps!r}")
    onto_zero = steps_onto_zero(method)
    if isinstance(grid, (list, tuple)):
        try:
            grid = torch.tensor(grid, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"grid given as a list must hold numbers (decreasing times); got {grid!r}") from None
    if isinstance(grid, torch.Tensor):
        if steps is not None or t_min is not None:
            raise ValueError("an explicit grid fixes the steps and the last time: give no steps or t_min")
        t = grid.detach().to("cpu", torch.float64)
        check_grid(t, end_above_zero=not onto_zero)
        name, t_min = "explicit", float(t[-1])
    elif isinstance(grid, str) and grid in GRIDS:
        steps = STEPS[method] if steps is None else int(steps)
        (t, t_min), name = sampling_grid(sde, grid, steps, t_min, onto_zero), grid
    else:
        raise ValueError(f"unknown grid {grid!r}; valid: {', '.join(GRIDS)}, or decreasing times (a 1-D tensor "
                         "or a list)")
    if not isinstance(shape, (tuple, list, torch.Size)) or len(shape) < 1 \
            or not all(isinstance(n, Integral) and n > 0 for n in shape):
        raise ValueError(f"shape must be (batch, *data_shape) of positive integers; got {shape!r}")
    shape = tuple(shape)
    latent = kind == "latent"
    if latent and shape[1:] != tuple(eps_model.shape):
        raise ValueError(f"eps_model is a latent diffusion model: shape must be (batch, "
                         f"{', '.join(map(str, eps_model.shape))}), its latent; got {shape} (its samples are "
                         f"decoded to shape {tuple(eps_model.data_shape)})")
    device, dtype = model_device_dtype(eps_model, device, dtype)
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"generator is on {generator.device} but the model samples on {device}; "
                         f"use torch.Generator({device.type!r})")
    if x1 is not None and not (isinstance(x1, torch.Tensor) and tuple(x1.shape) == shape
                               and x1.device.type == device.type and x1.dtype == dtype):
        got = (f"{x1.dtype} tensor of shape {tuple(x1.shape)} on {x1.device}" if isinstance(x1, torch.Tensor)
               else repr(x1))
        raise ValueError(f"x1 must be a {dtype} tensor of shape {shape} on {device}; got {got}")
    if x1 is not None:
        check_finite(x1, "x1")
    check_memory(shape, dtype, device, eps_model.data_shape if latent else None)
    model = Model(eps_model, sde, device, dtype)
    record = Recorder() if return_trajectory else None
    with torch.no_grad():
        x = sde.prior_sample(shape, generator=generator, device=device, dtype=dtype) if x1 is None else x1
        x = latents = fn(model, x, t, generator=generator, record=record, **options)
        if latent:
            x = eps_model.to_data(latents)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"method {method!r} produced non-finite samples: eps_model returned NaN/inf "
                         "or the step count is too small for its solver")
    resolved = {"method": method, "steps": len(t) - 1, "grid": name, "t_min": t_min,
                **defaults, **options}
    return SampleResult(x, model.nfe, resolved, record.result() if record else None,
                        latents=latents if latent else None, decoder_calls=int(latent))


def pf_ode_solution(eps_model, sde: VPSDE, x1: torch.Tensor, *, t_min: float | None = None, tol: float = TOL,
                    **kwargs) -> SampleResult:
    """The PF-ODE's own map of the prior draws ``x1``: dopri5 at rtol = atol = ``tol`` from t = 1 to t_min,
    then the final denoising step; the reference that deterministic samplers are measured against
    (``metrics.ode_err``) and that grids are tuned to. ``kwargs`` go to ``sample`` (device, dtype)."""
    return sample(eps_model, sde, tuple(x1.shape), "ode", 1, t_min=t_min, x1=x1, solver="dopri5", rtol=tol, atol=tol,
                  **kwargs)


__all__ = ["sample", "pf_ode_solution", "is_deterministic", "steps_onto_zero", "SampleResult", "Trajectory",
           "METHODS", "STEPS", "GRIDS", "T_MIN", "describe", "method_options", "choices"]
