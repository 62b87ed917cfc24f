"""What every sampler shares: the trajectory recorder, the check of a grid, the one-step Gaussian transition
q(x_t | x_s) and the coefficients moved to the model's device. The network's eps/x0 view (``Model``) and the
final denoising step live in ``core.flow``, the checks of option values in ``core.checks``."""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..core.flow import Model
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


def on(model: Model, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Move precomputed coefficients to the model's device and dtype (once, before the loop)."""
    return [c.to(device=model.device, dtype=model.dtype) for c in tensors]
