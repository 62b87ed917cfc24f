"""Networks of other parameterisations as eps-models: ``wrap(fn, sde, prediction=, time=)``, and ``Autocast``.

The samplers know one network, ``eps_model(x, t)`` with t in (0, 1] (docs/design.md). A network that predicts
something else, or takes another time, becomes one by ``wrap``. In the network's own coordinates
``x_in = a x0 + s eps`` (a = alpha_t, s = sigma_t for a VP network; a = 1, s = sigma_t / alpha_t and
``x_in = x / alpha_t`` for a VE / EDM network, ``time="sigma"``), each prediction gives eps by:

    eps    eps
    x0     (x_in - a x0) / s
    v      (s x_in + a v) / (a^2 + s^2)      v = a eps - s x0 (Salimans & Ho 2022); a^2 + s^2 = 1 for VP
    score  -s score                          score = grad log p(x_in) = -eps / s

and the time it is given is, for our t:

    t        t itself (score_sde-style continuous models)
    index    k = N t - 1, the DDPM timestep (diffusers: timestep k is alpha_bar_k = alpha_bar((k + 1) / N));
             a fraction between the knots. A t within float rounding of a knot gives the integer k exactly.
    log_snr  log(alpha_t / sigma_t) (VDM-style models take it, or its negative gamma = -2 log_snr)
    sigma    the VE noise level sigma_t / alpha_t, with the input x / alpha_t: EDM's and k-diffusion's
             denoisers ``D(x, sigma)`` are ``prediction="x0", time="sigma"``

``Autocast`` runs a network under ``torch.autocast`` (bf16 or fp16) and returns its output in the sampler's
dtype: the samplers' own arithmetic stays in float32.
"""
from __future__ import annotations

from typing import Literal

import torch

from ..core.sde import VPSDE, _batch_view

Prediction = Literal["eps", "v", "x0", "score"]
Time = Literal["t", "index", "log_snr", "sigma"]
PREDICTIONS, TIMES = Prediction.__args__, Time.__args__


class Wrapped(torch.nn.Module):
    """``fn`` as an eps-model in scoregen's conventions (see the module docstring); made by ``wrap``.
    An ``nn.Module`` ``fn`` is a submodule (its parameters fix the device and dtype); ``sde`` is the
    schedule the network was trained on."""

    def __init__(self, fn, sde: VPSDE, prediction: str, time: str, num_steps: int | None):
        super().__init__()
        self.fn, self.sde, self.prediction, self.time, self.num_steps = fn, sde, prediction, time, num_steps

    def extra_repr(self) -> str:
        n = f", num_steps={self.num_steps}" if self.time == "index" else ""
        return f"prediction={self.prediction!r}, time={self.time!r}{n}"

    def _index(self, t: torch.Tensor) -> torch.Tensor:
        """k = N t - 1; t carries the rounding of (k + 1) / N in its dtype, undone at the knots."""
        k = self.num_steps * t - 1
        nearest = k.round()
        return torch.where((k - nearest).abs() <= self.num_steps * torch.finfo(t.dtype).eps, nearest, k)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = s = None  # the network's coordinates x_in = a x0 + s eps, computed only where they are needed
        if self.time == "sigma" or self.prediction != "eps":
            alpha, sigma = self.sde.alpha(t), self.sde.sigma(t)
            a, s = (torch.ones_like(alpha), sigma / alpha) if self.time == "sigma" else (alpha, sigma)
        if self.time == "sigma":
            x, tau = x / _batch_view(alpha, x), s
        elif self.time == "index":
            tau = self._index(t)
        elif self.time == "log_snr":
            tau = self.sde.log_snr(t)
        else:
            tau = t
        out = self.fn(x, tau)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"the wrapped network must return a tensor of the input's shape {tuple(x.shape)}; "
                             f"got {got}")
        if self.prediction == "eps":
            return out
        a, s = _batch_view(a, x), _batch_view(s, x)
        if self.prediction == "x0":
            return (x - a * out) / s
        if self.prediction == "v":
            return (s * x + a * out) / (a ** 2 + s ** 2)
        return -s * out


def wrap(fn, sde: VPSDE, *, prediction: str = "eps", time: str = "t", num_steps: int | None = None) -> Wrapped:
    """``fn(x_in, time) -> prediction`` as an eps-model ``(x, t) -> eps`` for every sampler and the likelihood.

    Args:
        fn: the network, a callable (an ``nn.Module`` fixes device and dtype; a function samples on
            ``sample(..., device=)``).
        sde: the schedule it was trained on (``VPSDE.from_ddpm_betas(betas)`` for a discrete DDPM).
        prediction: what it returns: "eps", "v", "x0" or "score" (module docstring).
        time: what it takes: "t", "index" (k = N t - 1), "log_snr" or "sigma" (with the input x / alpha_t).
        num_steps: N of ``time="index"`` (default: the discrete sde's own N).
    """
    if not callable(fn):
        raise ValueError(f"fn must be a callable (x, time) -> prediction; got {type(fn).__name__}")
    if not isinstance(sde, VPSDE):
        raise ValueError(f"sde must be the VPSDE the network was trained with; got {type(sde).__name__}")
    for name, value, allowed in (("prediction", prediction, PREDICTIONS), ("time", time, TIMES)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    if time == "index":
        num_steps = sde.num_steps if num_steps is None else num_steps
        if num_steps is None:
            raise ValueError("time='index' needs num_steps, the N of timestep k = N t - 1 (the sde is continuous)")
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be a positive integer; got {num_steps!r}")
    elif num_steps is not None:
        raise ValueError(f"num_steps belongs to time='index'; got time={time!r}")
    return Wrapped(fn, sde, prediction, time, num_steps)


class Autocast(torch.nn.Module):
    """``net`` run under ``torch.autocast`` in ``dtype`` (bf16 or fp16) on the input's device, its output
    returned in the input's dtype: the network computes in half precision, the sampler in float32."""

    def __init__(self, net: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        if dtype not in (torch.bfloat16, torch.float16):
            raise ValueError(f"dtype must be torch.bfloat16 or torch.float16; got {dtype!r}")
        self.net, self.dtype = net, dtype

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}"

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype):
            out = self.net(x, t)
        return out.to(x.dtype)


__all__ = ["wrap", "Wrapped", "Autocast", "PREDICTIONS", "TIMES"]
