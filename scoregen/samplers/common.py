"""What every sampler shares: the counted, shape-checked network with its eps and x0 predictions, the
trajectory recorder, the checks of a grid and of option values, the one-step Gaussian transition
q(x_t | x_s) and the final denoising step."""
from __future__ import annotations

import typing
from numbers import Real
from typing import NamedTuple

import torch

from ..core.devices import resolve_device
from ..core.sde import VPSDE


class Trajectory(NamedTuple):
    """Times ``t`` [T] (decreasing, data at 0) and states ``x`` [T, *shape]."""
    t: torch.Tensor
    x: torch.Tensor


class Recorder:
    """Collects (t, x) pairs during sampling; ``None`` in its place records nothing."""

    def __init__(self):
        self.t, self.x = [], []

    def __call__(self, t, x: torch.Tensor) -> None:
        self.t.append(torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(()))
        self.x.append(x)

    def result(self) -> Trajectory:
        return Trajectory(torch.stack(self.t), torch.stack(self.x))


def model_device_dtype(eps_model, device=None, dtype=None) -> tuple[torch.device, torch.dtype]:
    """An nn.Module fixes device and dtype (its first parameter or buffer); a function takes them
    (default cpu, float32). A ``device``/``dtype`` that contradicts the module is an error."""
    fixed = None
    if isinstance(eps_model, torch.nn.Module):
        fixed = next(iter(eps_model.parameters()), None)
        fixed = next(iter(eps_model.buffers()), None) if fixed is None else fixed
    if fixed is not None:
        if device is not None and torch.empty(0, device=device).device != fixed.device:
            raise ValueError(f"device={device!r} contradicts eps_model, which is on {fixed.device}; "
                             "leave device out (an nn.Module fixes it)")
        if dtype is not None and dtype != fixed.dtype:
            raise ValueError(f"dtype={dtype} contradicts eps_model, whose parameters are {fixed.dtype}; "
                             "leave dtype out (an nn.Module fixes it)")
        return fixed.device, fixed.dtype
    dtype = torch.float32 if dtype is None else dtype
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype (torch.float32, torch.float64, ...); got {dtype!r}")
    return resolve_device("cpu" if device is None else device), dtype


class Model:
    """The network as samplers and likelihoods call it: ``eps(x, t)`` with t broadcast to [batch], its output
    shape checked on every call (shapes are free), calls counted in ``nfe``; ``x0(x, t)`` the denoised
    prediction. The one place a network becomes eps and x0: other parameterisations plug in here.

    Times are Python floats, CPU scalars (a grid's float64 entries: no host-device copy) or tensors
    on the model's device, [] (torchdiffeq's) or [batch].
    """

    def __init__(self, eps_model, sde: VPSDE, device: torch.device, dtype: torch.dtype):
        self.eps_model, self.sde, self.device, self.dtype = eps_model, sde, device, dtype
        self.nfe = 0

    def eps(self, x: torch.Tensor, t) -> torch.Tensor:
        """eps(x, t): one network call."""
        if isinstance(t, torch.Tensor) and t.device == x.device:
            t = t.to(x.dtype).expand(x.shape[0])
        else:
            t = torch.full((x.shape[0],), float(t), dtype=x.dtype, device=x.device)
        eps = self.eps_model(x, t)
        self.nfe += 1
        if not isinstance(eps, torch.Tensor) or eps.shape != x.shape:
            got = tuple(eps.shape) if isinstance(eps, torch.Tensor) else type(eps).__name__
            raise ValueError(f"eps_model must return a tensor of the input's shape {tuple(x.shape)}; got {got}")
        return eps

    def x0(self, x: torch.Tensor, t, eps: torch.Tensor | None = None) -> torch.Tensor:
        """Tweedie's denoised prediction x0_hat = (x - sigma_t eps) / alpha_t at time t (a float or a CPU
        scalar); ``eps``: the network's output at (x, t) when the caller has it (no second call)."""
        eps = self.eps(x, t) if eps is None else eps
        t = torch.as_tensor(t, dtype=torch.float64)
        return (x - self.sde.sigma(t) * eps) / self.sde.alpha(t)


def check_choice(name: str, value, allowed) -> None:
    """Raise unless ``value`` is one of ``allowed`` (a tuple or a ``Literal``)."""
    allowed = typing.get_args(allowed) or tuple(allowed)
    if isinstance(value, bool) != isinstance(allowed[0], bool) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def check_range(name: str, value, lo: float, hi: float, lo_open=True, hi_open=True) -> None:
    """Raise unless ``value`` is a number in the interval (open or closed at each end)."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and (lo < value if lo_open else lo <= value) \
        and (value < hi if hi_open else value <= hi)
    if not ok:
        span = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise ValueError(f"{name} must be a number in {span}; got {value!r}")


def check_grid(t, *, end_above_zero: bool = False) -> None:
    """Raise unless ``t`` is a grid: a 1-D float64 CPU tensor of at least two strictly decreasing times in
    [0, 1]; ``end_above_zero`` for samplers that cannot step onto t = 0 (eps / sigma_t is singular there)."""
    if not (isinstance(t, torch.Tensor) and t.dim() == 1 and t.dtype == torch.float64 and t.device.type == "cpu"):
        got = f"{t.dtype} tensor of shape {tuple(t.shape)} on {t.device}" if isinstance(t, torch.Tensor) else repr(t)
        raise ValueError(f"the grid must be a 1-D float64 CPU tensor of decreasing times; got {got}")
    if len(t) < 2 or not bool((t[1:] < t[:-1]).all()) or not (t[0] <= 1 and t[-1] >= 0):
        raise ValueError(f"the grid must hold at least two strictly decreasing times in [0, 1]; got {t.tolist()}")
    if end_above_zero and not t[-1] > 0:
        raise ValueError("this sampler's grid must end above t = 0 (eps / sigma is singular there); it ends at "
                         "t_min > 0 and final_denoise jumps to the data")


def transition(sde: VPSDE, t: torch.Tensor, s: torch.Tensor):
    """alpha_t, sigma_t, alpha_s, sigma_s and the kernel q(x_t | x_s): alpha_{t|s}, sigma_{t|s}^2
    (``VPSDE.transition``), float64 on the CPU."""
    return (sde.alpha(t), sde.sigma(t), sde.alpha(s), sde.sigma(s), *sde.transition(t, s))


def final_step(model: Model, x: torch.Tensor, t, final_denoise: bool, record: Recorder | None) -> torch.Tensor:
    """The optional last step of the samplers that stop at t_min > 0: x0_hat at t (one NFE), the data at 0."""
    if not final_denoise:
        return x
    x = model.x0(x, t)
    if record is not None:
        record(0.0, x)
    return x


def on(model: Model, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Move precomputed coefficients to the model's device and dtype (once, before the loop)."""
    return [c.to(device=model.device, dtype=model.dtype) for c in tensors]
