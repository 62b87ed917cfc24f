"""The reverse-time VP-SDE (Song et al. 2021, eq. 6) integrated by ``torchsde.sdeint``.

    dx = [f(x, t) - g(t)^2 score(x, t)] dt + g(t) dW_bar,   score = -eps / sigma_t,   t: 1 -> t_min

torchsde integrates forward in time, so the SDE is written in r = step index in [0, K]: t(r) is the
monotone cubic (PCHIP, Fritsch & Carlson 1980) through the grid's times, t(i) = t_i, smooth so that a
solver's stages inside a step and at its end see one time change. A deterministic time change maps drift
and diffusion by the chain rule, ``F = (f - g^2 score) dt/dr`` and ``G = g sqrt(|dt/dr|)``, and
torchsde's fixed step dr = 1 lands exactly on the grid points t_i (on a uniform grid t(r) is linear).
g depends on t only, so the noise is additive and Ito and Stratonovich solutions coincide: each solver
gets the SDE type it needs. t, dt/dr, sigma_t and g(t) are tabulated before the loop, in one vectorised call, at every
r a solver's stages visit; torchsde's times are CPU scalars, so its step loop never touches the
device. The Brownian motion in r (``GridBrownian``) draws each step's increment from the sampler's
generator on the model's device.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torchsde
from scipy.interpolate import PchipInterpolator

from ..core.checks import check_choice
from ..core.flow import Model, final_step
from .common import Recorder, check_grid

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
Solver = Literal[tuple(SOLVERS)]
LEVY_AREA = {"srk": "space-time"}  # what a solver asks of the Brownian motion beyond increments
SUBSTEPS = 4  # the solvers' stages sit at r + {0, 1/2 (midpoint), 3/4 (srk), 1}: a table in quarter steps


class GridBrownian(torchsde.BaseBrownian):
    """Brownian motion W(r) on the unit steps [r, r + 1], r = 0, ..., K - 1, of a fixed-step solver.

    Step r draws W(r + 1) - W(r) ~ N(0, 1) from ``generator`` on ``device`` when the solver asks
    for it; with ``levy_area="space-time"`` also H ~ N(0, 1/12), the space-time Levy area,
    independent of the increment, returned as torchsde's U = int_r^{r+1} (W(s) - W(r)) ds = W / 2 + H.
    Same generator state, same path. The steps must be asked for in order, each once, which is how
    torchsde's fixed-step solvers query it.
    """

    def __init__(self, steps: int, size, *, generator, device, dtype, levy_area: str = "none"):
        self.steps, self._size, self._generator = steps, torch.Size(size), generator
        self._device, self._dtype, self._levy_area = device, dtype, levy_area
        self._r = -1  # the last step drawn

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        r = float(ta)
        if tb is None or (r, float(tb)) != (self._r + 1, r + 1) or r >= self.steps or return_A \
                or (return_U and self._levy_area != "space-time"):
            raise ValueError(f"GridBrownian draws the steps [r, r + 1], r = 0..{self.steps - 1}, in order "
                             f"(increment, and U for levy_area='space-time'); got ta={ta}, tb={tb}, "
                             f"return_U={return_U}, return_A={return_A} after step {self._r}")
        self._r = r
        z = torch.randn((1 + return_U, *self._size), generator=self._generator, device=self._device,
                        dtype=self._dtype)
        return (z[0], z[0] / 2 + z[1] * math.sqrt(1 / 12)) if return_U else z[0]

    def __repr__(self):
        return f"GridBrownian(steps={self.steps}, size={tuple(self._size)}, levy_area={self._levy_area!r})"

    @property
    def dtype(self):
        return self._dtype

    @property
    def device(self):
        return self._device

    @property
    def shape(self):
        return self._size

    @property
    def levy_area_approximation(self):
        return self._levy_area


class ReverseSDE:
    """The reverse VP-SDE in torchsde's form (state [batch, D], time r increasing) on the grid ``t``."""

    def __init__(self, model: Model, shape, t: torch.Tensor, solver: str):
        self.sde_type, self.noise_type = SOLVERS[solver]
        self.model, self.vp, self.shape = model, model.sde, tuple(shape)
        steps = len(t) - 1
        r = torch.arange(SUBSTEPS * steps + 1, dtype=torch.float64) / SUBSTEPS
        t_of_r = PchipInterpolator(torch.arange(steps + 1.0).numpy(), t.numpy())
        t_r = torch.from_numpy(t_of_r(r.numpy()))
        t_r[::SUBSTEPS] = t  # the grid's times exactly
        dt_dr = t_of_r.derivative()(r.numpy()).tolist()
        # r -> (t as a CPU scalar, dt/dr, sigma_t, g(t)); an r off the table is a KeyError, not a wrong time
        self.at = dict(zip(r.tolist(), zip(t_r.unbind(), dt_dr, self.vp.sigma(t_r).tolist(),
                                           self.vp.diffusion(t_r).tolist())))
        self._cache = (None, None, None)  # torchsde calls f once at (r_0, y_0) to check shapes
        if self.noise_type == "diagonal":
            self.g = lambda r, y: self._g(r) * torch.ones_like(y)

    def f(self, r, y: torch.Tensor) -> torch.Tensor:
        r = float(r)
        if self._cache[0] == r and self._cache[1] is y:
            return self._cache[2]
        t, dt_dr, sigma_t, g_t = self.at[r]
        eps = self.model.eps(y.view(self.shape), float(t)).view_as(y)
        score = -eps / sigma_t
        out = (self.vp.drift(y, t) - g_t ** 2 * score) * dt_dr
        self._cache = (r, y, out)
        return out

    def _g(self, r) -> float:
        _, dt_dr, _, g_t = self.at[float(r)]
        return g_t * math.sqrt(abs(dt_dr))

    def g_prod(self, r, y: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return self._g(r) * v


def sample_sde(model: Model, x: torch.Tensor, t: torch.Tensor, *, solver: Solver = "euler",
               final_denoise: bool = True, generator=None, record: Recorder | None = None) -> torch.Tensor:
    """The reverse-time SDE (Song et al. 2021, eq. 6) by torchsde.sdeint.

    From t[0] to t[-1] > 0 in one solver step per grid step, then (``final_denoise``) x0_hat at t[-1].
    The Brownian motion is a ``GridBrownian`` drawing from ``generator`` on the model's device, step by
    step (no host sync)."""
    check_grid(t, end_above_zero=True)
    check_choice("solver", solver, Solver)
    check_choice("final_denoise", final_denoise, (True, False))
    n, steps = x.shape[0], len(t) - 1
    rsde = ReverseSDE(model, x.shape, t, solver)
    bm = GridBrownian(steps, (n, x[0].numel()), generator=generator, device=x.device, dtype=x.dtype,
                      levy_area=LEVY_AREA.get(solver, "none"))
    r = torch.arange(steps + 1, dtype=torch.float64) if record is not None else \
        torch.tensor([0.0, float(steps)], dtype=torch.float64)
    ys = torchsde.sdeint(rsde, x.reshape(n, -1), r, bm=bm, method=solver, dt=1.0)
    x = ys[-1].view(x.shape)
    if record is not None:
        for r_i, y_i in zip(r.tolist(), ys):
            record(rsde.at[r_i][0], y_i.view(x.shape))
    return final_step(model, x, t[-1], final_denoise, record)
