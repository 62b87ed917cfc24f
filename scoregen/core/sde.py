"""The variance-preserving SDE (Song et al. 2021) and its noise schedules.

This is the only module that knows alpha, sigma, beta and the log-SNR. A schedule
is one function, ``log_alpha_bar(t)`` on t in [0, 1] (data at 0, noise at 1), with
its time derivative and its inverse; everything else is derived from it:

    alpha(t)   = exp(log_alpha_bar / 2)           signal coefficient
    sigma(t)   = sqrt(1 - alpha_bar)              noise std
    log_snr(t) = log(alpha / sigma)
    beta(t)    = -d/dt log_alpha_bar(t)

    forward SDE   dx = -beta(t) x / 2 dt + sqrt(beta(t)) dW
    marginal      x_t = alpha(t) x_0 + sigma(t) eps

DDPM is the N-step discretisation: ``ddpm_betas(N)[i] = 1 - alpha_bar(i/N) / alpha_bar((i-1)/N)``,
so ``cumprod(1 - beta)`` equals ``alpha_bar`` at the grid points exactly, and for the linear
schedule (0.1, 20) the betas are DDPM's ``linspace(1e-4, 0.02, 1000)`` to O(1/N).
"""
from __future__ import annotations

import math

import torch

SCHEDULES = ("linear", "cosine", "discrete")
# The smallest time the package trains at, samples at and starts likelihoods from: DDPM's t_1 = 1 / 1000
# (sigma = 0.01). eps / sigma is singular at t = 0, so continuous solvers stop here and denoise once.
T_MIN = 1e-3


def _as_tensor(t, like: torch.Tensor | None = None) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t if t.is_floating_point() else t.to(torch.get_default_dtype())
    if like is not None:
        return torch.as_tensor(t, dtype=like.dtype, device=like.device)
    return torch.as_tensor(t, dtype=torch.get_default_dtype())


def _batch_view(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample coefficient ``c`` of shape [batch] (or []) to broadcast over ``x``."""
    return c.reshape(c.shape + (1,) * (x.dim() - c.dim())) if c.dim() else c


class VPSDE:
    """The VP-SDE ``dx = -beta x / 2 dt + sqrt(beta) dW`` on t in [0, 1].

    ``VPSDE()`` is the linear schedule ``beta(t) = beta_min + t (beta_max - beta_min)``;
    ``VPSDE(schedule="cosine")`` is Nichol & Dhariwal's ``alpha_bar = cos^2(phi(t)) / cos^2(phi(0))``,
    ``phi(t) = (t + s) / (1 + s) pi / 2``, stopped before phi = pi / 2 where beta is infinite:
    time is rescaled so that ``alpha_bar(1)`` equals the linear schedule's, exp(-10.05);
    ``VPSDE.from_ddpm_betas(betas)`` is the discrete schedule of a DDPM.

    Every method takes t as a float or a tensor of any shape, works in float32 and float64
    and on any device, and returns a tensor of t's shape, dtype and device.
    """

    def __init__(self, schedule: str = "linear", beta_min: float = 0.1, beta_max: float = 20.0,
                 s: float = 0.008):
        if schedule not in ("linear", "cosine"):
            hint = " (use VPSDE.from_ddpm_betas(betas) for a discrete one)" if schedule == "discrete" else ""
            raise ValueError(f"schedule must be one of 'linear', 'cosine'{hint}; got {schedule!r}")
        if not 0 <= beta_min < beta_max:
            raise ValueError(f"need 0 <= beta_min < beta_max; got beta_min={beta_min}, beta_max={beta_max}")
        if not s > 0:
            raise ValueError(f"cosine offset s must be > 0; got {s}")
        self.schedule = schedule
        self.beta_min, self.beta_max, self.s = float(beta_min), float(beta_max), float(s)
        if schedule == "cosine":
            lab_end = -(beta_min + beta_max) / 2  # the linear (0.1, 20) schedule's log_alpha_bar(1)
            self._phi0 = s / (1 + s) * math.pi / 2
            self._phi1 = math.acos(math.cos(self._phi0) * math.exp(lab_end / 2))
        self._log_ab = None  # discrete knots, set by from_ddpm_betas

    @classmethod
    def from_ddpm_betas(cls, betas) -> "VPSDE":
        """The discrete schedule of a DDPM with ``betas[0..N-1]`` (beta_1..beta_N).

        ``alpha_bar_i = prod_{j<=i} (1 - beta_j)`` at ``t_i = i / N`` exactly, ``alpha_bar(0) = 1``,
        ``log_alpha_bar`` piecewise linear in between (so beta is piecewise constant,
        ``beta = -N log(1 - beta_i)`` on ``[t_{i-1}, t_i)``).
        """
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() < 1 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must be a non-empty 1-D sequence with every value in (0, 1)")
        sde = cls.__new__(cls)
        sde.schedule = "discrete"
        sde._log_ab = torch.cat([betas.new_zeros(1), torch.cumsum(torch.log1p(-betas), 0)])
        sde._knot_copies = {}
        return sde

    def __repr__(self) -> str:
        if self.schedule == "linear":
            return f"VPSDE(schedule='linear', beta_min={self.beta_min}, beta_max={self.beta_max})"
        if self.schedule == "cosine":
            return f"VPSDE(schedule='cosine', s={self.s})"
        return f"VPSDE.from_ddpm_betas(<{self.num_steps} betas>)"

    @property
    def num_steps(self) -> int | None:
        """N for a discrete schedule, None for a continuous one."""
        return None if self._log_ab is None else self._log_ab.numel() - 1

    def _knots(self, like: torch.Tensor) -> torch.Tensor:
        """The discrete schedule's knots log_alpha_bar(i / N) in ``like``'s dtype and on its device, copied there
        once (a copy per call would synchronise a GPU sampling loop)."""
        key = (like.dtype, like.device)
        if key not in self._knot_copies:
            self._knot_copies[key] = self._log_ab.to(dtype=like.dtype, device=like.device)
        return self._knot_copies[key]

    def _segment(self, t: torch.Tensor):
        """Knots, segment index i and position w in [0, 1) with t in [t_i, t_{i+1}] (discrete schedule)."""
        knots, n = self._knots(t), self.num_steps
        u = t.clamp(0, 1) * n
        i = u.floor().clamp(max=n - 1).long()
        return knots, i, u - i

    # --- the schedule: log_alpha_bar, its derivative and its inverse -------------------------
    def log_alpha_bar(self, t) -> torch.Tensor:
        t = _as_tensor(t)
        if self.schedule == "linear":
            return -(self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t ** 2)
        if self.schedule == "cosine":
            phi = self._phi0 + t * (self._phi1 - self._phi0)
            # clamped: at t = 0 the difference rounds to +3e-20, and sigma(0) = sqrt(-expm1(+3e-20)) is NaN
            return (2 * (torch.log(torch.cos(phi)) - math.log(math.cos(self._phi0)))).clamp(max=0.0)
        knots, i, w = self._segment(t)
        return knots[i] * (1 - w) + knots[i + 1] * w

    def beta(self, t) -> torch.Tensor:
        """beta(t) = -d/dt log_alpha_bar(t)."""
        t = _as_tensor(t)
        if self.schedule == "linear":
            return self.beta_min + t * (self.beta_max - self.beta_min)
        if self.schedule == "cosine":
            phi = self._phi0 + t * (self._phi1 - self._phi0)
            return 2 * (self._phi1 - self._phi0) * torch.tan(phi)
        knots, i, _ = self._segment(t)
        return -(knots[i + 1] - knots[i]) * self.num_steps

    def t_from_log_alpha_bar(self, lab) -> torch.Tensor:
        """Inverse of ``log_alpha_bar`` (monotone decreasing in t)."""
        lab = _as_tensor(lab)
        if self.schedule == "linear":
            b0, db = self.beta_min, self.beta_max - self.beta_min
            # db/2 t^2 + b0 t + lab = 0, the positive root written to avoid cancellation
            return -2 * lab / (b0 + torch.sqrt(b0 ** 2 - 2 * db * lab))
        if self.schedule == "cosine":
            phi = torch.acos(torch.exp(lab / 2) * math.cos(self._phi0))
            return (phi - self._phi0) / (self._phi1 - self._phi0)
        knots, n = self._knots(lab), self.num_steps
        # knots decrease; search in the increasing sequence -knots
        i = torch.searchsorted(-knots, -lab.contiguous(), right=False).clamp(1, n)
        lo, hi = knots[i - 1], knots[i]
        return ((i - 1) + (lo - lab) / (lo - hi)) / n

    # --- derived quantities ------------------------------------------------------------------
    def alpha(self, t) -> torch.Tensor:
        """Signal coefficient alpha(t) = sqrt(alpha_bar(t))."""
        return torch.exp(0.5 * self.log_alpha_bar(t))

    def sigma(self, t) -> torch.Tensor:
        """Noise std sigma(t) = sqrt(1 - alpha_bar(t)), accurate near t = 0."""
        return torch.sqrt(-torch.expm1(self.log_alpha_bar(t)))

    def log_snr(self, t) -> torch.Tensor:
        """log(alpha / sigma), decreasing in t."""
        lab = self.log_alpha_bar(t)
        return 0.5 * (lab - torch.log(-torch.expm1(lab)))

    def t_from_log_snr(self, log_snr) -> torch.Tensor:
        """Inverse of ``log_snr``: alpha_bar = sigmoid(2 log_snr)."""
        log_snr = _as_tensor(log_snr)
        return self.t_from_log_alpha_bar(torch.nn.functional.logsigmoid(2 * log_snr))

    def drift(self, x: torch.Tensor, t) -> torch.Tensor:
        """f(x, t) = -beta(t) x / 2; t a scalar or of shape [batch]."""
        return -0.5 * _batch_view(self.beta(_as_tensor(t, x)), x) * x

    def diffusion(self, t) -> torch.Tensor:
        """g(t) = sqrt(beta(t))."""
        return torch.sqrt(self.beta(t))

    def perturb(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        """A draw of x_t given x_0: ``alpha(t) x0 + sigma(t) noise``; t a scalar or of shape [batch]."""
        t = _as_tensor(t, x0)
        return _batch_view(self.alpha(t), x0) * x0 + _batch_view(self.sigma(t), x0) * noise

    def transition(self, t, s) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward kernel q(x_t | x_s) = N(alpha_{t|s} x_s, sigma_{t|s}^2 I) for s <= t:
        ``alpha_{t|s} = alpha_t / alpha_s`` and ``sigma_{t|s}^2 = 1 - alpha_bar_t / alpha_bar_s``
        (Kingma et al. 2021, App. A), the latter by expm1 so that close t, s lose nothing."""
        lab = self.log_alpha_bar(t) - self.log_alpha_bar(s)
        return torch.exp(0.5 * lab), -torch.expm1(lab)

    def ddpm_betas(self, n: int) -> torch.Tensor:
        """The N-step discretisation ``beta_i = 1 - alpha_bar(i/N) / alpha_bar((i-1)/N)`` (float64)."""
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer; got {n!r}")
        t = torch.linspace(0, 1, int(n) + 1, dtype=torch.float64)
        return self.transition(t[1:], t[:-1])[1]

    # --- the prior N(0, I) at t = 1 ------------------------------------------------------------
    def prior_sample(self, shape, *, generator: torch.Generator | None = None, device=None,
                     dtype: torch.dtype | None = None) -> torch.Tensor:
        if device is None and generator is not None:
            device = generator.device
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)

    @staticmethod
    def prior_logp(x: torch.Tensor) -> torch.Tensor:
        """log N(x; 0, I) summed over all but the first dimension."""
        d = x[0].numel()
        return -0.5 * (x.flatten(1) ** 2).sum(1) - 0.5 * d * math.log(2 * math.pi)
