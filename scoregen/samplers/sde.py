"""The reverse-time VP-SDE (Song et al. 2021, eq. 6) integrated by ``torchsde.sdeint``.

    dx = [f(x, t) - g(t)^2 score(x, t)] dt + g(t) dW_bar,   score = -eps / sigma_t,   t: 1 -> t_min

torchsde integrates forward in time, so the SDE is written in r = step index in [0, K] with
t = tau(1 - r / K), ``tau`` the chosen grid (``grids.py``). A deterministic time change maps drift
and diffusion by the chain rule, ``F = (f - g^2 score) dt/dr`` and ``G = g sqrt(|dt/dr|)``, and
torchsde's fixed step dr = 1 lands exactly on the grid points t_i. g depends on t only, so the
noise is additive and Ito and Stratonovich solutions coincide: each solver gets the SDE type it
needs. Times are CPU scalars: torchsde's step loop compares and queries its Brownian motion
without touching the device.
"""
from __future__ import annotations

import functools
import math

import torch
import torchsde

from ..sde import VPSDE
from .common import Model, Recorder, final_step
from .grids import tau_and_rate

# solver -> (sde_type, noise_type) that torchsde 0.2.6 accepts; "additive" lets g act as g(t) v.
SOLVERS = {
    "euler": ("ito", "additive"),                    # Euler-Maruyama, strong order 1 for additive noise
    "milstein": ("ito", "additive"),                 # equals Euler-Maruyama for additive noise
    "srk": ("ito", "additive"),                      # SRA1 (Roessler 2010), strong order 1.5
    "heun": ("stratonovich", "additive"),
    "midpoint": ("stratonovich", "additive"),
    # Kidger et al. 2021: reversible, hence its parasitic mode is not damped by a contracting drift
    # like this one; on 'gmm2d' its E[log p] is still 3.6 nats off at 1000 steps (README)
    "reversible_heun": ("stratonovich", "diagonal"),  # torchsde needs g itself here
}


class ReverseSDE(torch.nn.Module):
    """The reverse VP-SDE in torchsde's form (state [batch, D], time r increasing)."""

    def __init__(self, model: Model, sde: VPSDE, shape, grid: str, steps: int, t_min: float, solver: str):
        super().__init__()
        self.sde_type, self.noise_type = SOLVERS[solver]
        self.model, self.vp, self.shape = model, sde, tuple(shape)
        self.grid, self.steps, self.t_min = grid, steps, t_min
        self._cache = (None, None, None)  # torchsde calls f once at (r_0, y_0) to check shapes
        self._time = functools.lru_cache(maxsize=4)(self._time_uncached)
        if self.noise_type == "diagonal":
            self.g = lambda r, y: self._g(r) * torch.ones_like(y)

    def time(self, r) -> tuple[torch.Tensor, float]:
        """t = tau(1 - r / K) as a CPU float64 scalar, and dt/dr; drift and diffusion of one stage
        ask for the same r, so the last few answers are kept."""
        return self._time(float(r))

    def _time_uncached(self, r: float) -> tuple[torch.Tensor, float]:
        t, rate = tau_and_rate(self.vp, self.grid, 1 - r / self.steps, self.t_min)
        return torch.tensor(t, dtype=torch.float64), -rate / self.steps

    def f(self, r, y: torch.Tensor) -> torch.Tensor:
        r = float(r)
        if self._cache[0] == r and self._cache[1] is y:
            return self._cache[2]
        t, dt_dr = self.time(r)
        eps = self.model(y.view(self.shape), float(t)).view_as(y)
        score = -eps / self.vp.sigma(t)
        out = (self.vp.drift(y, t) - self.vp.diffusion(t) ** 2 * score) * dt_dr
        self._cache = (r, y, out)
        return out

    def _g(self, r) -> torch.Tensor:
        t, dt_dr = self.time(r)
        return self.vp.diffusion(t) * math.sqrt(abs(dt_dr))

    def g_prod(self, r, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self._g(r) * v


def sample_sde(model: Model, sde: VPSDE, x: torch.Tensor, *, steps: int, grid: str, t_min: float,
               solver: str = "euler", final_denoise: bool = True, dt=None, generator=None,
               record: Recorder | None = None) -> torch.Tensor:
    """Reverse SDE from t = 1 to t_min in ``steps`` steps of ``grid``, then (``final_denoise``)
    x0_hat = (x - sigma eps) / alpha at t_min. The Brownian motion is a ``torchsde.BrownianInterval``
    on the model's device seeded by one draw from ``generator`` (one host sync, before the loop).
    ``dt`` is resolved into ``steps`` by ``sample``.
    """
    n = x.shape[0]
    rsde = ReverseSDE(model, sde, x.shape, grid, steps, t_min, solver)
    seed = int(torch.randint(0, 2 ** 62, (), generator=generator, device=x.device))
    bm = torchsde.BrownianInterval(t0=0.0, t1=float(steps), size=(n, x[0].numel()), dtype=x.dtype,
                                   device=x.device, entropy=seed, dt=1.0,
                                   levy_area_approximation="space-time" if solver == "srk" else "none")
    r = torch.arange(steps + 1, dtype=torch.float64) if record is not None else \
        torch.tensor([0.0, float(steps)], dtype=torch.float64)
    ys = torchsde.sdeint(rsde, x.reshape(n, -1), r, bm=bm, method=solver, dt=1.0)
    x = ys[-1].view(x.shape)
    if record is not None:
        for r_i, y_i in zip(r, ys):
            record(rsde.time(r_i)[0], y_i.view(x.shape))
    return final_step(model, sde, x, t_min, final_denoise, record)
