"""The DDPM variational bound (``ddpm_bound``) on any grid, with the discretised decoder of ``nets.vae`` for
quantised data: a bound on the discrete ``-log P(x)``."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from ...core.checks import check_choice, check_sizes
from ...core.flow import Model, Variance
from ...core.quantization import check_levels, check_on_grid, warn_if_quantized
from ...core.sde import VPSDE
from ...models.nets.vae import discretized_gaussian_log_prob
from .bpd import bits_per_dim
from .pf_ode import _check_result, _counted_model


@dataclass
class VariationalBound:
    """The DDPM bound per sample, nats: ``nll = prior + diffusion + decoder >= -log P(x)`` (or ``-log p(x)``)."""
    nll: torch.Tensor           # [n] the bound on the negative log-likelihood
    prior: torch.Tensor         # [n] KL(q(x_1 | x_0) || N(0, I))
    diffusion: torch.Tensor     # [n] sum over steps 2..K of KL(q(x_s | x_t, x_0) || p(x_s | x_t))
    decoder: torch.Tensor       # [n] -log p(x_0 | x_{t_1})
    diffusion_se: torch.Tensor  # [n] standard error of `diffusion` from sampling steps (0 for all steps)
    nfe: int                    # eps_model evaluations per datapoint
    dim: int                    # D

    @property
    def bpd(self) -> torch.Tensor:
        """[n] bits/dim of the bound (a discrete log-probability, or a density for continuous data)."""
        return bits_per_dim(-self.nll, self.dim)


def _bound_grid(steps: int, grid) -> torch.Tensor:
    """The grid ``0 = t_0 < t_1 < ... < t_K = 1`` (float64), given in any order, or uniform with K = steps."""
    if grid is None:
        if int(steps) != steps or steps < 2:
            raise ValueError(f"steps must be an integer >= 2; got {steps!r}")
        return torch.linspace(0, 1, int(steps) + 1, dtype=torch.float64)
    grid = torch.as_tensor(grid, dtype=torch.float64).flatten().sort().values
    if grid.numel() < 3 or grid[0] != 0 or grid[-1] != 1 or not bool((grid.diff() > 0).all()):
        raise ValueError("grid must hold 0 and 1 and at least one more time, all distinct, in [0, 1]")
    return grid


def _pair_terms(model: Model, sde: VPSDE, x, j, i, grid, term, batch_size, generator, bar) -> torch.Tensor:
    """``term(x_0, x_t, noise, eps_hat, i)`` for the pairs (sample j, step i), ``x_t = alpha x_0 + sigma noise``
    at ``t = grid[i]``, ``batch_size`` pairs per model call, counted on the tqdm ``bar``; [pairs]."""
    out = []
    for start in range(0, j.numel(), batch_size):
        jc, ic = j[start:start + batch_size], i[start:start + batch_size]
        x0, t = x[jc], grid[ic]
        noise = torch.randn(x0.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_t = sde.perturb(x0, t, noise)
        out.append(term(x0, x_t, noise, model.eps(x_t, t), ic))
        bar.update(jc.numel())
    return torch.cat(out)


@torch.no_grad()
def ddpm_bound(eps_model, sde: VPSDE, x: torch.Tensor, *, levels: int | None = None, steps: int = 1000,
               grid=None, variance: Variance = "posterior", sample_steps: int | None = None, proposal=None,
               batch_size: int = 4096, generator: torch.Generator | None = None, device=None,
               progress: bool = False) -> VariationalBound:
    """The DDPM variational bound (Ho et al. 2020, eq. 5) on a grid ``0 = t_0 < ... < t_K = 1``:

        -log P(x_0) <= KL(q(x_{t_K} | x_0) || N(0, I))
                       + sum_{i=2}^K E_q KL(q(x_{t_{i-1}} | x_{t_i}, x_0) || p(x_{t_{i-1}} | x_{t_i}))
                       - E_q log p(x_0 | x_{t_1}).

    ``p(x_s | x_t)`` has the posterior mean at ``x0_hat = (x_t - sigma_t eps) / alpha_t`` and variance
    ``r`` times the posterior's, ``r = 1`` (``variance="posterior"``, DDPM's beta-tilde) or
    ``r = sigma_t^2 / sigma_s^2`` (``"beta"``, DDPM's beta_i). Each step's KL is then
    ``D (log r + 1/r - 1) / 2 + (SNR_s / SNR_t - 1) ||eps_hat - eps||^2 / (2 r)`` (Kingma et al. 2021, eq. 13).
    The decoder is ``N(x0_hat, sigma_{t_1}^2)``: a density for continuous data (``levels=None``),
    integrated over the bins of the ``levels`` grid otherwise (Ho et al. 2020, eq. 13), so that the
    bound is on the discrete ``-log P(x)`` and needs no dequantisation.

    Every expectation over x_t is one Monte Carlo draw. ``sample_steps=None`` sums all K - 1 steps (K model
    calls per datapoint); ``sample_steps=M`` draws M steps per datapoint from ``proposal`` (weights for
    steps 2..K; default proportional to each step's weight on ``||eps_hat - eps||^2``) and importance-weights
    them, an unbiased estimate with its standard error in ``diffusion_se``.

    Args:
        eps_model: ``(x, t) -> eps``; an ``nn.Module`` fixes device and dtype, a function takes ``device``.
        x: data [n, ...], finite floats, on the ``levels`` grid when ``levels`` is given; x on a grid with
            ``levels=None`` gets a ``QuantizedDataWarning`` (the bound would use a density decoder).
        steps, grid: K of the uniform grid, or the grid itself (any order, holding 0 and 1).
        batch_size: (sample, step) pairs per model call.
        progress: a tqdm bar of the (sample, step) pairs.
    """
    check_levels(levels)
    check_sizes(batch_size=batch_size)
    check_choice("variance", variance, Variance)
    if sample_steps is not None and (int(sample_steps) != sample_steps or sample_steps < 1):
        raise ValueError(f"sample_steps must be a positive integer or None (all steps); got {sample_steps!r}")
    model, x = _counted_model(eps_model, sde, x, device)
    device, dtype = model.device, model.dtype
    if levels is not None:
        check_on_grid(x, levels)
    else:
        warn_if_quantized(x, "levels=None makes the decoder a density, wrong for quantised data; "
                             "pass levels={levels} for the discrete bound")
    grid = _bound_grid(steps, grid)
    n, dim, k = x.shape[0], x[0].numel(), grid.numel() - 1
    alpha, sigma, log_snr = sde.alpha(grid), sde.sigma(grid), sde.log_snr(grid)
    # steps i = 2..K (index i - 2): s = t_{i-1}, t = t_i; KL = const + coef ||eps_hat - eps||^2
    w = torch.expm1(2 * (log_snr[1:-1] - log_snr[2:]))              # SNR_s / SNR_t - 1
    r = torch.ones_like(w) if variance == "posterior" else (sigma[2:] / sigma[1:-1]) ** 2
    coef, const = 0.5 * w / r, 0.5 * dim * (r.log() + 1 / r - 1)
    as_model = {"device": device, "dtype": dtype}
    grid_m, coef_m = grid.to(**as_model), coef.to(**as_model)
    sigma_1, alpha_k, sigma_k = (float(c) for c in (sigma[1], alpha[-1], sigma[-1]))

    prior = 0.5 * ((alpha_k * x) ** 2 + sigma_k ** 2 - 1 - 2 * math.log(sigma_k)).flatten(1).sum(1)

    def decoder_term(x0, x_t, noise, eps_hat, i):
        x0_hat = model.x0(x_t, grid[1], eps_hat)
        if levels is None:
            nll = 0.5 * ((x0 - x0_hat) / sigma_1) ** 2 + math.log(sigma_1) + 0.5 * math.log(2 * math.pi)
        else:
            nll = -discretized_gaussian_log_prob(x0, x0_hat, torch.full_like(x0, math.log(sigma_1)), levels)
        return nll.flatten(1).sum(1)

    def kl_term(x0, x_t, noise, eps_hat, i):
        return coef_m[i - 2] * ((eps_hat - noise) ** 2).flatten(1).sum(1)

    arange, s = torch.arange(n, device=device), k - 1 if sample_steps is None else int(sample_steps)
    if sample_steps is not None:
        pi = coef if proposal is None else torch.as_tensor(proposal, dtype=torch.float64).flatten()
        if pi.numel() != k - 1 or not bool((pi > 0).all()):
            raise ValueError(f"proposal must hold K - 1 = {k - 1} positive weights (steps 2..K); got {pi.numel()}")
        pi = (pi / pi.sum()).to(**as_model)
    with tqdm(total=n * (s + 1), desc="DDPM bound", unit="pair", leave=False, disable=not progress) as bar:
        decoder = _pair_terms(model, sde, x, arange, torch.ones_like(arange), grid_m, decoder_term,
                              batch_size, generator, bar)
        if sample_steps is None:
            step, weight = torch.arange(2, k + 1, device=device).repeat(n), 1.0
        else:
            step = 2 + torch.multinomial(pi, n * s, replacement=True, generator=generator)
            weight = (1 / pi[step - 2]).view(n, s)
        terms = weight * _pair_terms(model, sde, x, arange.repeat_interleave(s), step, grid_m, kl_term,
                                     batch_size, generator, bar).view(n, s)
    if sample_steps is None:
        diffusion, se = terms.sum(1), torch.zeros(n, **as_model)
    else:
        diffusion = terms.mean(1)
        se = terms.std(1) / math.sqrt(s) if s > 1 else torch.full_like(diffusion, math.nan)
    diffusion = diffusion + float(const.sum())
    _check_result("ddpm_bound", prior + diffusion + decoder)
    return VariationalBound(nll=prior + diffusion + decoder, prior=prior, diffusion=diffusion, decoder=decoder,
                            diffusion_se=se, nfe=s + 1, dim=dim)
