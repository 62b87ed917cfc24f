"""What every sampler shares: the trajectory recorder, the checks of a grid and of the memory a request needs,
the one-step Gaussian transition q(x_t | x_s), the coefficients moved to the model's device and the reading of
the JSON files samplers take (grid files, learned solvers). The network's
eps/x0 view (``Model``) and the final denoising step live in ``core.flow``, the checks of option values in
``core.checks``."""
from __future__ import annotations

import errno
import json
import math
import os
from pathlib import Path
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


WORKING_COPIES = 4  # tensors of the samples' size a sampler holds at once (x, eps, noise or history, the next x)


def check_memory(shape, dtype: torch.dtype, device: torch.device, data_shape=None) -> None:
    """Raise unless a sampler's state for ``shape`` fits in ``device``'s memory: ``WORKING_COPIES`` tensors of
    ``shape`` and ``dtype``, plus the decoded samples [n, *data_shape] of a latent model, against the free
    memory of a CUDA device (torch's cache included) or the CPU's physical memory; other devices pass. A
    cheap guard against a request that cannot run; the network's activations come on top."""
    numel = WORKING_COPIES * math.prod(shape) + (0 if data_shape is None else shape[0] * math.prod(data_shape))
    need = numel * dtype.itemsize
    if device.type == "cuda":
        have = torch.cuda.mem_get_info(device)[0] + torch.cuda.memory_reserved(device) \
            - torch.cuda.memory_allocated(device)
    elif device.type == "cpu":
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    else:
        return
    if need > have:
        raise ValueError(f"shape {tuple(shape)} of {dtype} needs about {need / 1e9:,.1f} GB of sampler state but "
                         f"{device} has {have / 1e9:,.1f} GB: ask for fewer samples (a smaller n) or shard them "
                         "over several calls, each with its own generator")


def transition(sde: VPSDE, t: torch.Tensor, s: torch.Tensor):
    """alpha_t, sigma_t, alpha_s, sigma_s and the kernel q(x_t | x_s): alpha_{t|s}, sigma_{t|s}^2
    (``VPSDE.transition``), float64 on the CPU."""
    return (sde.alpha(t), sde.sigma(t), sde.alpha(s), sde.sigma(s), *sde.transition(t, s))


def on(model: Model, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Move precomputed coefficients to the model's device and dtype (once, before the loop)."""
    return [c.to(device=model.device, dtype=model.dtype) for c in tensors]


def read_json(path, what: str):
    """The JSON of the file at ``path``; a folder, a missing file or invalid JSON raises an error naming the
    path and ``what`` it should be (e.g. "grid file")."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{path} is a folder, not a {what}")
    if not path.is_file():
        raise FileNotFoundError(errno.ENOENT, f"no {what} at {path}")
    try:
        return json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a {what}: not valid JSON ({e})") from None
