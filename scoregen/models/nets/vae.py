"""The VAE (Kingma & Welling 2014), the one-step baseline: a sample is one decoder call.

Decoder likelihood ``p(x | z)``, chosen so that the ELBO is a real bound on the data's log-likelihood:

- quantised data (``levels=L``): a *discretised Gaussian* on the data's own grid. Level k of L sits at
  ``x_k = 2 k / (L - 1) - 1`` with bin ``[x_k - 1/(L-1), x_k + 1/(L-1)]``, the two edge bins open to
  -inf / +inf (DDPM's decoder, Ho et al. 2020 eq. 13; PixelCNN++). ``P(x | z)`` is a probability, so
  ``ELBO <= log P(x)``, the *discrete* log-likelihood: no dequantisation term enters its bits/dim.
  Gaussian rather than logistic, so that a fixed scale is exactly the seed's MSE loss.
- continuous data (``levels=None``): a Gaussian density, ``ELBO <= log p(x)``.

The decoder std is a learned per-dimension parameter (``scale=None``) or fixed (``scale=s``). A fixed
scale *is* the MSE loss: ``-log p(x | z) = ||x - mean||^2 / (2 s^2) + const``, so ``s^2 = 1/2`` gives
the seed's sum-reduced ``MSE + KL``. ``kl_weight`` (beta-VAE, Higgins et al. 2017) weights the KL in
the *training loss only*; with a weight other than 1 that loss is not a bound. ``elbo`` and ``iwae``
always report the weight-1 bound.

The posterior is ``q(z | x) = N(mu(x), diag exp(log_var(x)))`` and the prior ``N(0, I)``. ``elbo`` and
``iwae`` are in nats per sample; bits/dim follow the package convention of ``scoregen.likelihood``
(nothing here imports it): ``bits_per_dim(vae.iwae(x, k), vae.dim)`` for a discretised decoder (already a
bound on the discrete log P(x): no dequantisation, no bin-width term), and
``bits_per_dim(vae.elbo(dequantize(x, L)), vae.dim, levels=L)`` for a continuous decoder on quantised data.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ...core.checks import check_sizes
from ...core.quantization import check_levels, check_on_grid, level_index, quantize, warn_if_quantized

MIN_LOG_SCALE = -7.0  # decoder log-std floor (PixelCNN++'s), keeps a learned scale from collapsing

PRESETS = {
    # the seed: four stride-2 convs 3->32->64->128->256 on 64x64 RGB, z_dim 512, MSE + KL (s^2 = 1/2)
    "seed64": dict(shape=(3, 64, 64), channels=(32, 64, 128, 256), z_dim=512, levels=256, scale=0.5 ** 0.5),
    "small32": dict(shape=(3, 32, 32), channels=(32, 64, 128), z_dim=128, levels=256, scale=None),
    "digits": dict(shape=(1, 8, 8), channels=(32, 64), z_dim=16, levels=17, scale=None),
}


def discretized_gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                                  levels: int) -> torch.Tensor:
    """Elementwise ``log P(x)`` of ``N(mean, exp(log_scale)^2)`` integrated over x's bin on the L-level grid.

    ``log(Phi(b) - Phi(a))`` with ``a, b = (x -+ 1/(L-1) - mean) / scale``, edge bins open; computed in
    the lower tail (by the symmetry ``Phi(b) - Phi(a) = Phi(-a) - Phi(-b)``) with ``log_ndtr`` so it
    stays accurate far from the mean.
    """
    half_bin = 1.0 / (levels - 1)
    inv_scale = torch.exp(-log_scale)
    k = level_index(x, levels)
    a = torch.where(k == 0, -math.inf, (x - half_bin - mean) * inv_scale)
    b = torch.where(k == levels - 1, math.inf, (x + half_bin - mean) * inv_scale)
    upper = a + b > 0
    a, b = torch.where(upper, -b, a), torch.where(upper, -a, b)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return log_b + _log1mexp(log_a - log_b)


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(d))`` for d <= 0 (Maechler 2012)."""
    d, ln2 = d.clamp(max=-1e-30), math.log(2)  # each branch clamped to its half, so no gradient is 0 * inf
    return torch.where(d > -ln2, torch.log(-torch.expm1(d.clamp(min=-ln2))), torch.log1p(-torch.exp(d.clamp(max=-ln2))))


class VAE(nn.Module):
    """``q(z | x) = N(mu, diag sigma^2)`` from ``encoder``, ``p(x | z)`` around ``decoder(z)``, prior N(0, I).

    Args:
        encoder: module ``x -> [n, 2 z_dim]``, read as ``(mu, log_var)``.
        decoder: module ``z -> [n, *shape]``, the mean of ``p(x | z)``.
        z_dim: latent dimension.
        shape: shape of one data sample.
        levels: L for data quantised to L levels in [-1, 1] (discretised decoder), None for continuous.
        scale: decoder std; None learns one per dimension, a float fixes it (the MSE variant).
        kl_weight: weight of the KL in ``loss`` (1 = the negative ELBO; otherwise not a bound).
    """
    kind = "vae"  # the model kind (``core.flow.kind_of``): sampled by its own ``sample``, no sampler

    def __init__(self, encoder: nn.Module, decoder: nn.Module, z_dim: int, shape, *, levels: int | None = None,
                 scale: float | None = None, kl_weight: float = 1.0):
        super().__init__()
        check_levels(levels)
        if scale is not None and not scale > 0:
            raise ValueError(f"scale must be > 0 or None (learned); got {scale!r}")
        if not kl_weight >= 0:
            raise ValueError(f"kl_weight must be >= 0; got {kl_weight!r}")
        self.encoder, self.decoder = encoder, decoder
        self.z_dim, self.shape = int(z_dim), tuple(shape)
        self.levels = None if levels is None else int(levels)
        self.kl_weight = float(kl_weight)
        log_scale = torch.full(self.shape, 0.0 if scale is None else math.log(scale))
        if scale is None:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    @property
    def dim(self) -> int:
        """Number of data dimensions D (for bits/dim)."""
        return math.prod(self.shape)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters ``(mu, log_var)``, each [n, z_dim] in x's dtype (also under autocast)."""
        return self.encoder(x).to(x.dtype).chunk(2, dim=1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Decoder mean [n, *shape]."""
        return self.decoder(z)

    def log_px_given_z(self, x: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
        """``log p(x | z)`` summed over dimensions, [n], for the decoder mean ``mean`` of z."""
        log_scale = self.log_scale.clamp(min=MIN_LOG_SCALE)
        if self.levels is None:
            logp = -0.5 * ((x - mean) * torch.exp(-log_scale)) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)
        else:
            logp = discretized_gaussian_log_prob(x, mean, log_scale, self.levels)
        return logp.flatten(1).sum(1)

    def _noise(self, n: int, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return torch.randn((n, self.z_dim), generator=generator, device=like.device, dtype=like.dtype)

    def _terms(self, x: torch.Tensor, eps: torch.Tensor):
        """The reparameterised draw z = mu + sigma eps of q(z | x): ``log p(x | z)`` and the analytic
        ``KL(q || N(0, I))``, [n] each."""
        mu, log_var = self.encode(x)
        z = mu + torch.exp(0.5 * log_var) * eps
        kl = 0.5 * (mu ** 2 + log_var.exp() - 1 - log_var).sum(1)
        return self.log_px_given_z(x, self.decode(z)), kl

    def loss(self, x: torch.Tensor, generator: torch.Generator | None = None,
             rows: slice = slice(None)) -> torch.Tensor:
        """Training loss, nats per sample averaged over ``x[rows]``: ``-log p(x | z) + kl_weight * KL``. The
        noise is drawn for all of x, so that a batch split over processes (``rows``) draws the same noise."""
        log_px_z, kl = self._terms(x[rows], self._noise(x.shape[0], x, generator)[rows])
        return (self.kl_weight * kl - log_px_z).mean()

    def elbo(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``E_q[log p(x | z)] - KL(q(z | x) || p(z))`` [n] in nats, one draw of z, whatever ``kl_weight``.

        A lower bound on ``log P(x)`` (discrete, for ``levels``) or ``log p(x)`` (continuous) in expectation.
        """
        self._check_data(x)
        log_px_z, kl = self._terms(x, self._noise(x.shape[0], x, generator))
        return log_px_z - kl

    def iwae(self, x: torch.Tensor, k: int, generator: torch.Generator | None = None, chunk: int = 64,
             log_prior=None) -> torch.Tensor:
        """The importance-weighted bound (Burda et al. 2016) ``log (1/k) sum_i p(x, z_i) / q(z_i | x)`` [n], nats.

        ``z_i ~ q(z | x)`` i.i.d.; rises towards ``log p(x)`` as k grows; k = 1 is the ELBO with a Monte
        Carlo KL. Decodes ``chunk`` draws per sample at a time. ``log_prior``: a callable ``z [m, z_dim] ->
        log p(z) [m]`` that replaces the N(0, I) prior (``scoregen.likelihood.latent_elbo``'s diffusion prior).
        """
        if int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer; got {k!r}")
        self._check_data(x)
        mu, log_var = self.encode(x)
        std = torch.exp(0.5 * log_var)
        log_w = []
        for start in range(0, int(k), chunk):
            kc = min(chunk, int(k) - start)
            eps = torch.randn((kc,) + mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
            z = mu + std * eps                                                      # [kc, n, z_dim]
            mean = self.decode(z.flatten(0, 1))
            log_px_z = self.log_px_given_z(x.expand((kc,) + x.shape).flatten(0, 1), mean).view(kc, -1)
            if log_prior is None:  # log N(z; 0, I) - log q(z | x); the 2 pi constants cancel
                log_pz_qz = -0.5 * (z ** 2 - eps ** 2 - log_var).sum(-1)
            else:
                log_q = -0.5 * (eps ** 2 + log_var + math.log(2 * math.pi)).sum(-1)
                log_pz_qz = log_prior(z.flatten(0, 1)).view(kc, -1).to(log_q) - log_q
            log_w.append(log_px_z + log_pz_qz)
        return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)

    def sample(self, n: int, generator: torch.Generator | None = None, mean: bool = True) -> torch.Tensor:
        """n samples [n, *shape] on the model's device: one decoder call on ``z ~ N(0, I)``.

        ``mean=True`` (default) returns the decoder mean, the usual VAE picture: the decoder noise is
        independent per dimension, so a draw only adds pixel noise that carries no structure (and, with a
        fixed scale s = 0.71, would bury the image). ``mean=False`` draws from ``p(x | z)``, quantised to
        the grid for a discretised decoder: a sample of the model whose likelihood is reported.
        """
        check_sizes(n=n)
        z = torch.randn(n, self.z_dim, generator=generator, device=self.log_scale.device,
                        dtype=self.log_scale.dtype)
        x = self.decode(z)
        if mean:
            return x
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = x + self.log_scale.clamp(min=MIN_LOG_SCALE).exp() * noise
        return x if self.levels is None else quantize(x, self.levels)

    def _check_data(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x must have shape [n, {', '.join(map(str, self.shape))}]; got {tuple(x.shape)}")
        if self.levels is not None:
            check_on_grid(x, self.levels)
        else:
            warn_if_quantized(x, "this VAE's decoder is a density (levels=None); dequantize x first "
                                 "(scoregen.likelihood.dequantize(x, {levels})) and report "
                                 "bits_per_dim(elbo, D, levels={levels})", stacklevel=4)


def conv_encoder(shape, channels, z_dim: int) -> nn.Sequential:
    """Stride-2 4x4 convolutions ``shape[0] -> channels[0] -> ...`` (ReLU), then a linear head to ``2 z_dim``."""
    c, h, w = shape
    layers = []
    for c_out in channels:
        layers += [nn.Conv2d(c, c_out, 4, stride=2, padding=1), nn.ReLU()]
        c = c_out
    s = 2 ** len(channels)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * (h // s) * (w // s), 2 * z_dim))


def conv_decoder(shape, channels, z_dim: int) -> nn.Sequential:
    """The mirror of ``conv_encoder``: linear to ``channels[-1]`` maps, stride-2 transposed convs, tanh."""
    s = 2 ** len(channels)
    c, h, w = channels[-1], shape[1] // s, shape[2] // s
    layers = [nn.Linear(z_dim, c * h * w), nn.ReLU(), nn.Unflatten(1, (c, h, w))]
    for c_out in reversed((shape[0],) + tuple(channels[:-1])):
        layers += [nn.ConvTranspose2d(c, c_out, 4, stride=2, padding=1), nn.ReLU()]
        c = c_out
    layers[-1] = nn.Tanh()
    return nn.Sequential(*layers)


def build_vae(preset: str = "digits", **overrides) -> VAE:
    """A convolutional VAE from ``PRESETS`` ('seed64', 'small32', 'digits'), any key overridden.

    Keys: ``shape, channels, z_dim, levels, scale`` and ``kl_weight`` (default 1). ``seed64`` is the seed's
    VAE: 64x64 RGB, convs 3->32->64->128->256, z_dim 512, fixed scale (MSE + KL); ``build_vae("seed64",
    scale=None)`` learns the scale instead.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown VAE preset {preset!r}; valid: {', '.join(PRESETS)}")
    cfg = {**PRESETS[preset], "kl_weight": 1.0}
    unknown = set(overrides) - set(cfg)
    if unknown:
        raise ValueError(f"unknown VAE option(s) {sorted(unknown)}; valid: {', '.join(cfg)}")
    cfg.update(overrides)
    shape, channels = tuple(cfg["shape"]), tuple(cfg["channels"])
    s = 2 ** len(channels)
    if len(shape) != 3 or shape[1] % s or shape[2] % s:
        raise ValueError(f"shape must be (C, H, W) with H and W divisible by 2^len(channels) = {s}; got {shape}")
    return VAE(conv_encoder(shape, channels, cfg["z_dim"]), conv_decoder(shape, channels, cfg["z_dim"]),
               cfg["z_dim"], shape, levels=cfg["levels"], scale=cfg["scale"], kl_weight=cfg["kl_weight"])


def linear_vae(dim: int, z_dim: int, **options) -> VAE:
    """A linear VAE on vectors: ``q(z | x) = N(A x + a, diag exp(B x + b))``, ``p(x | z)`` around ``W z + mu``.

    With a continuous Gaussian decoder it is probabilistic PCA / factor analysis (Tipping & Bishop 1999)
    fitted variationally; its marginal ``N(mu, W W^T + diag s^2)`` is known in closed form and the
    ELBO is tight at the optimum (Lucas et al. 2019). ``options`` as for ``VAE`` (levels, scale, kl_weight).
    """
    return VAE(nn.Linear(dim, 2 * z_dim), nn.Linear(z_dim, dim), z_dim, (dim,), **options)
