"""Likelihood in bits per dimension: the PF-ODE log-likelihood, the DDPM variational bound, and the
one bits/dim convention that every model of the package (diffusion, VAE) is reported in.

The bits/dim convention
-----------------------
Data in [-1, 1] are the level k of L levels mapped to ``x = 2 k / (L - 1) - 1`` (17 levels for the
digits, 256 for 8-bit images), so each point is the centre of a bin of width ``Delta = 2 / (L - 1)``.

- A *density* model p (PF-ODE, a VAE with a continuous decoder) is evaluated on uniformly dequantised
  data ``x + Delta (u - 1/2)``, ``u ~ U[0, 1)^D`` (``dequantize``). Since ``P(k) = int_bin p`` and
  Jensen's inequality, ``log P(k) >= E_u[log p(x + Delta (u - 1/2))] + D log Delta`` (Theis et al. 2016).
- A *discrete* model (the DDPM bound and the VAE with their discretised-Gaussian decoders) gives
  ``log P(k)`` (or a bound on it) directly: no Delta term.
- ``bits/dim = -log P / (D ln 2)``: ``bits_per_dim(logp, D, levels=L)`` for a density on dequantised
  data, ``bits_per_dim(logp, D)`` for a discrete log-probability. For continuous data (levels None) the
  same call without levels reports the density itself (it may be negative).

A model that is uniform on the L^D bins has exactly log2(L) bits/dim under both readings.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torchdiffeq import odeint

from ..core.checks import check_sizes
from ..models.nets.vae import discretized_gaussian_log_prob
from ..core.quantization import check_levels, check_on_grid, warn_if_quantized
from ..samplers.common import Model, check_choice, model_device_dtype
from ..samplers.ddpm import Variance
from ..samplers.ode import ADAPTIVE, ProbabilityFlow, check_state
from ..core.sde import T_MIN, VPSDE

DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


# --- the convention ------------------------------------------------------------------------------
def bits_per_dim(logp: torch.Tensor, dim: int, levels: int | None = None) -> torch.Tensor:
    """``-(logp + D log Delta) / (D ln 2)`` with ``Delta = 2 / (L - 1)``; ``-logp / (D ln 2)`` for levels None.

    Args:
        logp: log-likelihood in nats (per sample, any shape): a log-density of dequantised data when
            ``levels`` is given, else a discrete log-probability (or a density of continuous data).
        dim: D, the number of dimensions of one sample.
        levels: L, the data's quantisation levels, or None (see the module docstring).
    """
    if int(dim) != dim or dim < 1:
        raise ValueError(f"dim must be a positive integer; got {dim!r}")
    check_levels(levels)
    log_delta = 0.0 if levels is None else math.log(2 / (levels - 1))
    return -(logp + dim * log_delta) / (dim * math.log(2))


def dequantize(x: torch.Tensor, levels: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantisation ``x + Delta (u - 1/2)``, ``u ~ U[0, 1)``, ``Delta = 2 / (L - 1)``."""
    if levels is None:
        raise ValueError("levels must be an integer >= 2 to dequantise; continuous data need none")
    check_levels(levels)
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x + 2 / (levels - 1) * (u - 0.5)


# --- the PF-ODE log-likelihood -------------------------------------------------------------------
def _counted_model(eps_model, sde: VPSDE, x: torch.Tensor, device) -> tuple[Model, torch.Tensor]:
    """The counted network and x on its device and dtype: an nn.Module fixes them, a plain function
    runs on ``device`` (default x's) in x's dtype. x must be a non-empty, finite float tensor [n, ...]."""
    check_state(x)
    module = isinstance(eps_model, torch.nn.Module)
    device, dtype = model_device_dtype(eps_model, device if device is not None or module else x.device,
                                       None if module else x.dtype)
    return Model(eps_model, sde, device, dtype), x.to(device=device, dtype=dtype)


def _check_result(what: str, value: torch.Tensor, cause: str = "eps_model returned NaN/inf") -> None:
    """Raise if a per-point result [n] is non-finite (one host sync, after the computation)."""
    bad = ~torch.isfinite(value)
    if bool(bad.any()):
        raise ValueError(f"{what} is non-finite for {int(bad.sum())} of {bad.numel()} points (the first: "
                         f"point {int(bad.nonzero()[0, -1])}): {cause}")


def _exact_divergence(drift: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``sum_i d drift_i / d x_i`` [n], one vector-Jacobian product per dimension (samples independent)."""
    drift = drift.flatten(1)
    div = torch.zeros_like(drift[:, 0])
    for i in range(drift.shape[1]):
        (row,) = torch.autograd.grad(drift[:, i].sum(), x, retain_graph=True)
        div = div + row.flatten(1)[:, i]
    return div


def _hutchinson_divergence(drift: torch.Tensor, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``v^T (d drift / dx) v`` [probes, n] for each probe v (Hutchinson 1989): unbiased when E[v v^T] = I."""
    return torch.stack([(torch.autograd.grad(drift, x, v_k, retain_graph=True)[0] * v_k).flatten(1).sum(1)
                        for v_k in v])


@dataclass
class LikelihoodResult:
    """PF-ODE log-likelihood of a batch; all tensors per sample on the model's device, in nats."""
    logp: torch.Tensor               # [n] log p_{t_min}(x) = prior_logp + delta_logp (mean over probes)
    nfe: int                         # eps_model forward calls, each on the whole batch
    nvjp: int                        # backward passes through eps_model (D or `probes` per forward call)
    prior_logp: torch.Tensor         # [n] log N(x_1; 0, I)
    delta_logp: torch.Tensor         # [n] int_{t_min}^1 div(drift) dt (mean over probes)
    x1: torch.Tensor                 # [n, ...] the ODE's end point at t = 1
    logp_probes: torch.Tensor | None = None  # [probes, n] one estimate per Hutchinson probe


def log_likelihood(eps_model, sde: VPSDE, x: torch.Tensor, *, divergence: str = "exact", probes: int = 1,
                   probe: str = "rademacher", solver: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                   t_min: float = T_MIN, options: dict | None = None, generator: torch.Generator | None = None,
                   device=None) -> LikelihoodResult:
    """``log p(x)`` by the instantaneous change of variables along the PF-ODE (Song et al. 2021, eq. 39;
    Chen et al. 2018): ``log p_{t_min}(x) = log N(x_1; 0, I) + int_{t_min}^1 div(f - g^2 score / 2) dt``.

    The state and the divergence integral are solved together by ``torchdiffeq.odeint`` from ``t_min``
    to 1. Integration starts at ``t_min > 0``, not 0: the drift has ``eps / sigma`` with ``sigma(0) = 0``,
    and the network is trained on (t_min, 1] only. The result is the density of the slightly noised data,
    ``log p_{t_min}(x)``. The default ``T_MIN`` = 1e-3 is the package's training t_min and the samplers' last time
    (sigma = 0.0105 for the linear schedule); Song et al. use 1e-5 for a network trained down to 1e-5.
    Its bias against ``log p_0``: O(D sigma(t_min)^2 / var) for a density smooth on the scale sigma
    (below 1e-4 bits/dim on the 'gmm2d' oracle); for dequantised data, whose density jumps at the bin
    edges, O(sigma / Delta) per dimension. ``N(0, I)`` stands for p_1 (alpha(1)^2 = 4e-5 for the linear
    schedule: up to 0.02 nats on the oracle).

    Args:
        eps_model: ``(x, t) -> eps``, t a float tensor [batch]; samples must not interact (no batch norm).
        sde: the VPSDE the model was trained with.
        x: data [n, ...], finite floats; a density is returned, so dequantise quantised data first
            (``dequantize``): x on a quantisation grid gets a ``QuantizedDataWarning``.
        divergence: ``"exact"`` (D backward passes per call, small D) or ``"hutchinson"`` (``probes``).
        probes, probe: number and kind (``"rademacher"`` or ``"gaussian"``) of Hutchinson probes, drawn
            once from ``generator`` and fixed over the solve; ``logp_probes`` keeps one estimate per probe.
        solver, rtol, atol, options: passed to ``odeint``; adaptive solvers sync with the host every step,
            and check each network output and divergence for NaN/inf as they go.
        device: where a plain-function ``eps_model`` runs (default x's device); an ``nn.Module`` runs on
            its parameters' device and dtype.
    """
    check_choice("divergence", divergence, DIVERGENCES)
    check_choice("probe", probe, PROBES)
    if int(probes) != probes or probes < 1:
        raise ValueError(f"probes must be a positive integer; got {probes!r}")
    if not 0 < t_min < 1:
        raise ValueError(f"t_min must be in (0, 1); got {t_min!r}")
    model, x = _counted_model(eps_model, sde, x, device)
    warn_if_quantized(x, "log_likelihood returns a density, which needs dequantised data; use "
                         "dequantize(x, {levels}) and bits_per_dim(logp, D, levels={levels}), or "
                         "likelihood_table(x, levels={levels}, ...)")
    device, dtype = model.device, model.dtype
    adaptive = solver in ADAPTIVE
    flow = ProbabilityFlow(model, "t", check_finite=adaptive)   # dx/dt = f + beta eps / (2 sigma)
    v = None
    if divergence == "hutchinson":
        shape = (int(probes),) + tuple(x.shape)
        v = (torch.randn(shape, generator=generator, device=device, dtype=dtype) if probe == "gaussian" else
             torch.randint(0, 2, shape, generator=generator, device=device).to(dtype) * 2 - 1)

    def rhs(t, state):
        with torch.enable_grad():
            x_t = state[0].detach().requires_grad_(True)
            drift = flow(t, x_t)
            div = _exact_divergence(drift, x_t)[None] if v is None else _hutchinson_divergence(drift, x_t, v)
        if adaptive and not bool(torch.isfinite(div).all()):     # else torchdiffeq asserts "underflow in dt"
            raise ValueError(f"the divergence of the PF-ODE drift is non-finite at t={float(t):.4g}: "
                             "eps_model's gradient with respect to x is NaN/inf there")
        return drift.detach(), div.detach()

    ts = torch.tensor([t_min, 1.0], device=device, dtype=dtype)
    if adaptive:  # step onto t = 1, not past it: the network has never seen t > 1
        options = {"step_t": ts[1:], **(options or {})}
    delta0 = x.new_zeros(1 if v is None else v.shape[0], x.shape[0])
    with torch.no_grad():
        xs, deltas = odeint(rhs, (x, delta0), ts, rtol=rtol, atol=atol, method=solver, options=options)
    x1, delta = xs[-1], deltas[-1]
    prior = sde.prior_logp(x1)
    _check_result("log_likelihood", prior + delta.sum(0), "eps_model returned NaN/inf" + (
        "" if adaptive else f", or the step is too large for the fixed-step solver {solver!r}"))
    per_call = x[0].numel() if v is None else v.shape[0]
    return LikelihoodResult(logp=prior + delta.mean(0), nfe=model.nfe, nvjp=model.nfe * per_call, prior_logp=prior,
                            delta_logp=delta.mean(0), x1=x1, logp_probes=None if v is None else prior + delta)


# --- the DDPM variational bound ------------------------------------------------------------------
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


def _pair_terms(model: Model, sde: VPSDE, x, j, i, grid, term, batch_size, generator) -> torch.Tensor:
    """``term(x_0, x_t, noise, eps_hat, i)`` for the pairs (sample j, step i), ``x_t = alpha x_0 + sigma noise``
    at ``t = grid[i]``, ``batch_size`` pairs per model call; [pairs]."""
    out = []
    for start in range(0, j.numel(), batch_size):
        jc, ic = j[start:start + batch_size], i[start:start + batch_size]
        x0, t = x[jc], grid[ic]
        noise = torch.randn(x0.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_t = sde.perturb(x0, t, noise)
        out.append(term(x0, x_t, noise, model.eps(x_t, t), ic))
    return torch.cat(out)


@torch.no_grad()
def ddpm_bound(eps_model, sde: VPSDE, x: torch.Tensor, *, levels: int | None = None, steps: int = 1000,
               grid=None, variance: Variance = "posterior", sample_steps: int | None = None, proposal=None,
               batch_size: int = 4096, generator: torch.Generator | None = None, device=None) -> VariationalBound:
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

    arange = torch.arange(n, device=device)
    decoder = _pair_terms(model, sde, x, arange, torch.ones_like(arange), grid_m, decoder_term,
                          batch_size, generator)
    if sample_steps is None:
        s, step, weight = k - 1, torch.arange(2, k + 1, device=device).repeat(n), 1.0
    else:
        s = int(sample_steps)
        pi = coef if proposal is None else torch.as_tensor(proposal, dtype=torch.float64).flatten()
        if pi.numel() != k - 1 or not bool((pi > 0).all()):
            raise ValueError(f"proposal must hold K - 1 = {k - 1} positive weights (steps 2..K); got {pi.numel()}")
        pi = (pi / pi.sum()).to(**as_model)
        step = 2 + torch.multinomial(pi, n * s, replacement=True, generator=generator)
        weight = (1 / pi[step - 2]).view(n, s)
    terms = weight * _pair_terms(model, sde, x, arange.repeat_interleave(s), step, grid_m, kl_term,
                                 batch_size, generator).view(n, s)
    if sample_steps is None:
        diffusion, se = terms.sum(1), torch.zeros(n, **as_model)
    else:
        diffusion = terms.mean(1)
        se = terms.std(1) / math.sqrt(s) if s > 1 else torch.full_like(diffusion, math.nan)
    diffusion = diffusion + float(const.sum())
    _check_result("ddpm_bound", prior + diffusion + decoder)
    return VariationalBound(nll=prior + diffusion + decoder, prior=prior, diffusion=diffusion, decoder=decoder,
                            diffusion_se=se, nfe=s + 1, dim=dim)


# --- the VAE with a diffusion prior --------------------------------------------------------------
@dataclass
class LatentBound:
    """The bound of a VAE with a diffusion prior, per sample, nats (``latent_elbo``)."""
    logp: torch.Tensor   # [n] the k-sample bound on log P(x) (log p(x) for a continuous decoder)
    k: int               # draws of z per point: decoder calls per point
    nfe: float           # prior eps-network calls per point: the ODE solves' calls summed over the k draws
    dim: int             # D, for bits/dim

    @property
    def bpd(self) -> torch.Tensor:
        """[n] bits/dim of the bound (a discrete log-probability for a discretised decoder)."""
        return bits_per_dim(self.logp, self.dim)


def latent_elbo(vae, prior_eps_model, sde: VPSDE, x: torch.Tensor, *, k: int = 1, shift=None, scale=None,
                divergence: str = "exact", probes: int = 1, probe: str = "rademacher", solver: str = "dopri5",
                rtol: float = 1e-5, atol: float = 1e-5, t_min: float = T_MIN, chunk: int = 64,
                generator: torch.Generator | None = None) -> LatentBound:
    """The bound of a VAE whose prior on z is a diffusion model (Vahdat, Kreis & Kautz 2021, LSGM, eq. 2), in
    its importance-weighted form (Burda et al. 2016; k = 1 is the ELBO):

        log p(x) >= E_{z_1..k ~ q(z | x)} log (1/k) sum_i p(x | z_i) p_prior(z_i) / q(z_i | x),
        log p_prior(z) = log p_{t_min}(u) - sum_j log scale_j,   u = (z - shift) / scale,

    ``log p_{t_min}(u)`` the PF-ODE log-density of ``prior_eps_model`` on the standardised codes
    (``log_likelihood``), the second term the Jacobian of the standardisation. The PF-ODE maps N(0, I) at
    t = 1 to a density on u by an invertible flow whatever the network is, so the bound holds for the
    model whose prior that density is, up to the solver's error. ``p(x | z)`` is the VAE's own decoder: a
    discretised one gives a bound on the discrete ``log P(x)`` (no dequantisation term), a continuous one a
    bound on a density (dequantise quantised data first), as for ``vae.elbo`` and ``vae.iwae``.

    Args:
        vae: a ``nets.vae.VAE``; its ``iwae`` draws z and weighs them (``log_prior`` replaces N(0, I)).
        prior_eps_model: the eps-network on u, e.g. a ``nets.LatentDiffusion``, trained with ``sde``.
        x: data [n, *vae.shape].
        k: draws of z per point.
        shift, scale: the standardisation ``z = shift + scale u`` (tensors [z_dim] or floats); by default
            ``prior_eps_model``'s ``shift`` and ``scale`` buffers (a ``LatentDiffusion``), else 0 and 1.
        divergence, probes, probe, solver, rtol, atol, t_min: of ``log_likelihood``. Exact divergence (z_dim
            backward passes per call) gives a bound; Hutchinson an unbiased estimate of the ELBO (k = 1) but,
            for k > 1, the noise inside the log-mean-exp biases the estimate upward: no longer a bound.
        chunk: draws per point decoded and solved together.
    """
    shift = getattr(prior_eps_model, "shift", 0.0) if shift is None else shift
    scale = getattr(prior_eps_model, "scale", 1.0) if scale is None else scale
    shift, scale = (torch.as_tensor(v, dtype=x.dtype, device=x.device).expand(vae.z_dim) for v in (shift, scale))
    if not bool((scale > 0).all()):
        raise ValueError("scale must be positive in every dimension")
    log_det, nfe = scale.log().sum(), []

    def log_prior(z: torch.Tensor) -> torch.Tensor:
        res = log_likelihood(prior_eps_model, sde, (z - shift) / scale, divergence=divergence, probes=probes,
                             probe=probe, solver=solver, rtol=rtol, atol=atol, t_min=t_min, generator=generator)
        nfe.append(res.nfe * z.shape[0] / x.shape[0])                  # calls x draws per point of this chunk
        return res.logp.to(z) - log_det

    with torch.no_grad():
        logp = vae.iwae(x, k, generator, chunk=chunk, log_prior=log_prior)
    return LatentBound(logp=logp, k=int(k), nfe=sum(nfe), dim=vae.dim)


# --- one table for every model -------------------------------------------------------------------
def likelihood_table(x: torch.Tensor, **kwargs) -> list[dict]:
    """Bits/dim of held-out data ``x`` under every model given, one convention (module docstring):

    - ``eps_model`` and ``sde``: the PF-ODE likelihood of dequantised x (a bound on the discrete
      likelihood through dequantisation; exact for continuous data) and the DDPM bound on ``bound_steps``
      uniform steps (all, or ``sample_steps`` importance-sampled ones; discretised decoder);
    - ``vae`` (``scoregen.nets.vae.VAE``): its ELBO and IWAE-``iwae_k`` bounds, of dequantised x when
      its decoder is continuous and the data are quantised;
    - ``latent`` (a ``nets.LatentDiffusion``) and ``latent_sde``: its VAE with the diffusion prior
      (``latent_elbo``), the ELBO and the IWAE-``prior_k`` bound, the prior's divergence ``prior_divergence``.

    Takes ``likelihood_points``' arguments. Returns rows ``{model, quantity, kind ("exact" | "bound"), bpd
    (mean over points), se (its standard error over the points), se_probes (over Hutchinson probes, when
    probes > 1), nfe (network forward calls per datapoint), seconds (wall clock, on a loaded machine a rough
    figure), n}``.
    """
    return likelihood_rows([likelihood_points(x, **kwargs)])


def likelihood_points(x: torch.Tensor, *, levels: int | None = None, eps_model=None, sde: VPSDE | None = None,
                      vae=None, divergence: str = "hutchinson", probes: int = 1, t_min: float = T_MIN,
                      rtol: float = 1e-5, atol: float = 1e-5, bound_steps: int = 1000,
                      sample_steps: int | None = None, iwae_k: int = 100, latent=None,
                      latent_sde: VPSDE | None = None, latent_t_min: float = T_MIN, prior_k: int = 16,
                      prior_divergence: str = "exact", batch_size: int = 512,
                      generator: torch.Generator | None = None, device=None) -> list[dict]:
    """``likelihood_table``'s rows before the mean over the points: each holds its points' ``bpd`` [n] (the
    PF-ODE's row: ``logp`` [probes, n] in nats instead), ``nfe`` per point and ``seconds``, so that the parts
    of several chunks of points (``distributed.map_chunks``) make one table (``likelihood_rows``).
    ``batch_size``: points per ODE solve and VAE call, (point, step) pairs per call of the DDPM bound."""
    check_sizes(batch_size=batch_size, iwae_k=iwae_k, prior_k=prior_k)
    check_choice("prior_divergence", prior_divergence, DIVERGENCES)
    _, x = _counted_model(next(m for m in (eps_model, vae, latent) if m is not None), sde, x, device)
    parts, dim, batches = [], x[0].numel(), x.split(batch_size)
    if eps_model is not None:
        if sde is None:
            raise ValueError("likelihood_table needs the sde of eps_model")
        start, logp, nfe = time.perf_counter(), [], []
        for xb in batches:
            xb = xb if levels is None else dequantize(xb, levels, generator=generator)
            res = log_likelihood(eps_model, sde, xb, divergence=divergence, probes=probes, t_min=t_min, rtol=rtol,
                                 atol=atol, generator=generator, device=device)
            logp.append(res.logp_probes if res.logp_probes is not None else res.logp[None])
            nfe.append(res.nfe)
        how = "exact div." if divergence == "exact" else f"Hutchinson x{probes}"
        parts.append(dict(model="diffusion", quantity=f"PF-ODE ({how}, t_min={t_min:g})",
                          kind="exact" if levels is None else "bound", logp=torch.cat(logp, 1).cpu(), dim=dim,
                          levels=levels, nfe=sum(nfe) / len(nfe), seconds=time.perf_counter() - start))
        start = time.perf_counter()
        res = ddpm_bound(eps_model, sde, x, levels=levels, steps=bound_steps, sample_steps=sample_steps,
                         batch_size=batch_size, generator=generator, device=device)
        steps = f"K={bound_steps}" + ("" if sample_steps is None else f", {sample_steps} sampled")
        parts.append(dict(model="diffusion", quantity=f"DDPM bound ({steps})", kind="bound", bpd=res.bpd.cpu(),
                          nfe=res.nfe, seconds=time.perf_counter() - start))
    if vae is not None:
        deq = levels if vae.levels is None else None                        # a density needs dequantised data
        for quantity, k in (("ELBO", 1), (f"IWAE (k={iwae_k})", iwae_k)):
            start, logp = time.perf_counter(), []
            with torch.no_grad():
                for xb in batches:
                    xb = xb.to(vae.log_scale.device)
                    xb = xb if deq is None else dequantize(xb, deq, generator=generator)
                    logp.append(vae.elbo(xb, generator) if k == 1 else vae.iwae(xb, k, generator))
            parts.append(dict(model="VAE", quantity=quantity, kind="bound",
                              bpd=bits_per_dim(torch.cat(logp), dim, deq).cpu(), nfe=k,
                              seconds=time.perf_counter() - start))
    if latent is not None:
        if latent_sde is None:
            raise ValueError("likelihood_table needs latent_sde, the sde of the latent diffusion model")
        deq = levels if latent.vae.levels is None else None
        how = "exact div." if prior_divergence == "exact" else "Hutchinson"
        for quantity, k in (("ELBO", 1), (f"IWAE (k={prior_k})", prior_k)):
            start, logp, nfe = time.perf_counter(), [], []
            for xb in batches:
                xb = xb.to(latent.shift.device)
                xb = xb if deq is None else dequantize(xb, deq, generator=generator)
                res = latent_elbo(latent.vae, latent, latent_sde, xb, k=k, divergence=prior_divergence, rtol=rtol,
                                  atol=atol, t_min=latent_t_min, generator=generator)
                logp.append(res.logp)
                nfe.append(res.nfe * xb.shape[0])
            parts.append(dict(model="VAE + diffusion prior", quantity=f"{quantity}, PF-ODE prior ({how})",
                              kind="bound", bpd=bits_per_dim(torch.cat(logp), dim, deq).cpu(),
                              nfe=sum(nfe) / x.shape[0], seconds=time.perf_counter() - start))
    return parts


def likelihood_rows(chunks: list[list[dict]]) -> list[dict]:
    """The table rows of the ``likelihood_points`` of one or more chunks of points: means and standard errors
    over all their points, ``nfe`` averaged over the points, ``seconds`` summed over the chunks."""
    rows = []
    for parts in zip(*chunks):
        n = [p["logp"].shape[1] if "logp" in p else p["bpd"].numel() for p in parts]
        nfe, seconds, se_probes, first = sum(p["nfe"] * k for p, k in zip(parts, n)) / sum(n), \
            sum(p["seconds"] for p in parts), None, parts[0]
        if "logp" in first:
            logp, dim, levels = torch.cat([p["logp"] for p in parts], 1), first["dim"], first["levels"]  # [probes, n]
            if logp.shape[0] > 1:
                se_probes = (bits_per_dim(logp.mean(1), dim, levels).std() / math.sqrt(logp.shape[0])).item()
            bpd = bits_per_dim(logp.mean(0), dim, levels)
        else:
            bpd = torch.cat([p["bpd"] for p in parts])
        bpd = bpd.double()
        rows.append({"model": first["model"], "quantity": first["quantity"], "kind": first["kind"],
                     "bpd": bpd.mean().item(),
                     "se": (bpd.std() / math.sqrt(bpd.numel())).item() if bpd.numel() > 1 else math.nan,
                     "se_probes": se_probes, "nfe": nfe, "seconds": seconds, "n": bpd.numel()})
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The rows of ``likelihood_table`` as markdown: bits/dim as mean ± standard error over the points
    (and over the Hutchinson probes, when there are several)."""
    lines = ["| model | quantity | kind | bits/dim | NFE / point | wall s |", "|---|---|---|---|---|---|"]
    for r in rows:
        probes = "" if r["se_probes"] is None else f" (probes ± {r['se_probes']:.3f})"
        lines.append(f"| {r['model']} | {r['quantity']} | {r['kind']} | {r['bpd']:.3f} ± {r['se']:.3f}{probes} "
                     f"| {r['nfe']:.0f} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"
