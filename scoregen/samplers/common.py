"""What every sampler shares: the counted, shape-checked network, the trajectory recorder,
the one-step Gaussian transition q(x_t | x_s) and the x0 prediction."""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..devices import resolve_device
from ..sde import VPSDE
from .grids import time_grid


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
    """``eps_model`` as samplers call it: t broadcast to [batch], output shape checked on every
    call (shapes are free), calls counted in ``nfe``."""

    def __init__(self, eps_model, device: torch.device, dtype: torch.dtype):
        self.eps_model, self.device, self.dtype = eps_model, device, dtype
        self.nfe = 0

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        """eps(x, t); t a Python float or a 0-dim tensor on the model's device."""
        if isinstance(t, torch.Tensor):
            t = t.to(x.dtype).expand(x.shape[0])
        else:
            t = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        eps = self.eps_model(x, t)
        self.nfe += 1
        if not isinstance(eps, torch.Tensor) or eps.shape != x.shape:
            got = tuple(eps.shape) if isinstance(eps, torch.Tensor) else type(eps).__name__
            raise ValueError(f"eps_model must return a tensor of the input's shape {tuple(x.shape)}; got {got}")
        return eps

    def x0_hat(self, sde: VPSDE, x: torch.Tensor, t: float) -> torch.Tensor:
        """The denoised prediction x0_hat = (x - sigma_t eps) / alpha_t (Tweedie) at one time t."""
        eps = self(x, t)
        t = torch.tensor(t, dtype=torch.float64)  # a CPU scalar: no host-device copy
        return (x - sde.sigma(t) * eps) / sde.alpha(t)


def transition(sde: VPSDE, t: torch.Tensor, s: torch.Tensor):
    """alpha_t, sigma_t, alpha_s, sigma_s and the kernel q(x_t | x_s): alpha_{t|s}, sigma_{t|s}^2
    (``VPSDE.transition``), float64 on the CPU."""
    return (sde.alpha(t), sde.sigma(t), sde.alpha(s), sde.sigma(s), *sde.transition(t, s))


def discrete_grid(sde: VPSDE, grid: str, steps: int, t_min: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs (t_i, t_{i-1}), i = K..1, of the DDPM/DDIM grid ``time_grid`` with t_0 set to 0 (float64, CPU)."""
    t = time_grid(sde, grid, steps, t_min)
    t[-1] = 0.0
    return t[:-1], t[1:]


def final_step(model: Model, sde: VPSDE, x: torch.Tensor, t_min: float, final_denoise: bool,
               record: Recorder | None) -> torch.Tensor:
    """The optional last denoising step of the continuous samplers: x0_hat at t_min (one NFE)."""
    if not final_denoise:
        return x
    x = model.x0_hat(sde, x, t_min)
    if record is not None:
        record(0.0, x)
    return x


def on(model: Model, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Move precomputed coefficients to the model's device and dtype (once, before the loop)."""
    return [c.to(device=model.device, dtype=model.dtype) for c in tensors]
