"""The flow of a network: what kind of model it is, the eps/x0 view of an eps-network (``Model``), the
probability-flow ODE's right-hand side and the final denoising step, used by the samplers and the likelihoods
alike.

Model kinds. A network declares its kind by a class attribute ``kind`` (``kind_of``):

    "eps"     an eps-network ``(x, t) -> eps`` (the default: any callable without ``kind``), run by every sampler
    "latent"  an eps-network on a latent ``shape`` with ``to_data(u)``, its decoder (``nets.latent``): every
              sampler runs on the latents, and the samples are decoded once
    "vae"     a VAE (``nets.vae``): sampled by its own ``sample(n, generator=)`` in one decoder call, no sampler
"""
from __future__ import annotations

from typing import Callable, Literal

import torch

from .devices import resolve_device
from .sde import VPSDE

KINDS = {"eps": "an eps-network", "latent": "a latent diffusion model", "vae": "a VAE"}  # kind -> what errors say


def kind_of(model) -> str:
    """The kind of ``model`` (module docstring): its ``kind`` attribute, else "eps"."""
    kind = getattr(model, "kind", "eps")
    if kind not in KINDS:
        raise ValueError(f"model kind must be one of {', '.join(KINDS)}; {type(model).__name__} declares {kind!r}")
    return kind


def check_model(name: str, model) -> None:
    """Raise unless ``model`` can be called as an eps-network: a torch module or a callable ``eps(x, t)``."""
    if not callable(model):
        raise ValueError(f"{name} must be a torch module or a callable eps(x, t); got {type(model).__name__}")


# --- the eps/x0 view of an eps-network -----------------------------------------------------------
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


Variance = Literal["posterior", "beta"]  # DDPM's reverse variance (samplers.ddpm and the DDPM bound)


# --- the probability-flow ODE --------------------------------------------------------------------
FIXED = ("euler", "midpoint", "heun2", "heun3", "rk4")          # torchdiffeq's fixed-grid solvers
ADAPTIVE = ("dopri5", "bosh3", "adaptive_heun", "dopri8")       # its adaptive ones (rtol, atol; host syncs)

Record = Callable[[object, torch.Tensor], None]  # a sampler's trajectory recorder (samplers.common.Recorder)


def _first_bad(x: torch.Tensor) -> str:
    """"k of n values, the first at index (i, ...)": where a tensor is NaN or inf."""
    bad = ~torch.isfinite(x)
    return f"{int(bad.sum())} of {bad.numel()} values, the first at index {tuple(bad.nonzero()[0].tolist())}"


def check_state(x: torch.Tensor, name: str = "x") -> None:
    """Raise unless ``x`` is a floating tensor [n, ...] with n >= 1, all finite (one host sync)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor; got dtype {x.dtype} (integer levels k of L: "
                         f"scale them to [-1, 1] as 2k/(L-1) - 1 first)")
    if x.dim() < 2:
        raise ValueError(f"{name} must have shape [n, ...] with a batch dimension; got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)}): give at least one point")
    check_finite(x, name)


def check_finite(x: torch.Tensor, name: str = "x") -> None:
    """Raise if the tensor ``x`` has a NaN or inf, saying where (one host sync)."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} has NaN/inf values ({_first_bad(x)})")


class ProbabilityFlow:
    """The PF-ODE right-hand side in ``variable``; the state is x, or y = x / alpha for "edm".
    ``check_finite``: raise on a non-finite network output (a host sync per call: adaptive solvers only)."""

    def __init__(self, model: Model, variable: str, record: Record | None = None, check_finite: bool = False):
        self.model, self.sde, self.variable, self.record = model, model.sde, variable, record
        self.check_finite = check_finite

    def v_of_t(self, t: torch.Tensor) -> torch.Tensor:
        if self.variable == "t":
            return t
        log_snr = self.sde.log_snr(t)
        return log_snr if self.variable == "log_snr" else torch.exp(-log_snr)

    def t_of_v(self, v: torch.Tensor) -> torch.Tensor:
        if self.variable == "t":
            return v
        log_snr = v if self.variable == "log_snr" else -torch.log(v)
        return self.sde.t_from_log_snr(log_snr).clamp(max=1.0)

    def scale(self, t: torch.Tensor) -> torch.Tensor:
        """x = scale(t) * state."""
        return self.sde.alpha(t) if self.variable == "edm" else torch.ones_like(t)

    def __call__(self, v: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        t = self.t_of_v(v)
        x = self.scale(t) * y
        eps = self.model.eps(x, t)
        if self.check_finite and not bool(torch.isfinite(eps).all()):
            where = "" if bool(torch.isfinite(x).all()) else (f"; its input x_t had NaN/inf ({_first_bad(x)}): "
                                                          "the solve diverged where the network extrapolates")
            raise ValueError(f"eps_model returned NaN/inf at t={float(t):.4g} during the adaptive ODE solve "
                             f"({_first_bad(eps)}){where}")
        if self.variable == "edm":
            return eps
        sigma = self.sde.sigma(t)
        if self.variable == "log_snr":
            return sigma ** 2 * x - sigma * eps
        return self.sde.drift(x, t) + 0.5 * self.sde.diffusion(t) ** 2 * eps / sigma

    def record_step(self, v0: torch.Tensor, y0: torch.Tensor, dv) -> None:
        """Records the start of each accepted adaptive step (torchdiffeq's ``callback_accept_step``)."""
        t = self.t_of_v(v0)
        self.record(t, self.scale(t) * y0)


def final_step(model: Model, x: torch.Tensor, t, final_denoise: bool, record: Record | None) -> torch.Tensor:
    """The optional last step of the samplers that stop at t_min > 0: x0_hat at t (one NFE), the data at 0."""
    if not final_denoise:
        return x
    x = model.x0(x, t)
    if record is not None:
        record(0.0, x)
    return x
