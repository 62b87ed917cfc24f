"""The Gaussian-mixture oracle: exact samples, marginals, log-densities, scores and eps under a VP-SDE.

If ``p_0 = sum_k w_k N(mu_k, Sigma_k)`` then under the VP-SDE the marginal at time t is again a mixture,

    p_t(x) = sum_k w_k N(x; alpha(t) mu_k, alpha(t)^2 Sigma_k + sigma(t)^2 I),

so ``log p_t``, the score ``grad log p_t`` and the ideal noise prediction ``eps = -sigma score`` are
known in closed form. With ``Sigma_k = U_k diag(lam_k) U_k^T`` every marginal covariance is
``U_k diag(alpha^2 lam_k + sigma^2) U_k^T``: one eigendecomposition serves every t, per sample.

Every sampler, likelihood and metric of the package is tested against this oracle; a single
Gaussian is the one-component case. All methods are differentiable (autograd), batched over
t of shape [batch], and follow the dtype and device of their input.
"""
from __future__ import annotations

import math

import torch

from ..core.sde import VPSDE, _as_tensor


class GaussianMixture:
    """``sum_k w_k N(mu_k, Sigma_k)`` in R^d.

    Args:
        weights: [K] positive (normalised here).
        means: [K, d].
        covs: [K, d, d] symmetric positive semi-definite, or [K, d] diagonals, or [K] isotropic
            variances, or None for identity covariances. Positive definite is needed for
            densities at t = 0.
    """

    def __init__(self, weights, means, covs=None, dtype: torch.dtype = torch.float64):
        means = torch.as_tensor(means, dtype=dtype)
        if means.dim() != 2:
            raise ValueError(f"means must have shape [K, d]; got {tuple(means.shape)}")
        k, d = means.shape
        weights = torch.as_tensor(weights, dtype=dtype)
        if weights.shape != (k,) or not bool((weights > 0).all()):
            raise ValueError(f"weights must be {k} positive numbers; got {weights.tolist()}")
        if covs is None:
            covs = torch.eye(d, dtype=dtype).expand(k, d, d)
        covs = torch.as_tensor(covs, dtype=dtype)
        if covs.shape == (k,):
            covs = covs[:, None, None] * torch.eye(d, dtype=dtype)
        elif covs.shape == (k, d):
            covs = torch.diag_embed(covs)
        if covs.shape != (k, d, d):
            raise ValueError(f"covs must have shape [K], [K, d] or [K, d, d] with K={k}, d={d}; "
                             f"got {tuple(covs.shape)}")
        covs = 0.5 * (covs + covs.transpose(-1, -2))
        lam, u = torch.linalg.eigh(covs)
        if bool((lam < -1e-9 * lam.abs().max().clamp(min=1)).any()):
            raise ValueError("covs must be positive semi-definite")
        self.weights = weights / weights.sum()
        self.means, self.covs = means, covs
        self._lam, self._u = lam.clamp(min=0), u

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    def to(self, device=None, dtype=None) -> "GaussianMixture":
        """A copy on another device or dtype."""
        out = GaussianMixture.__new__(GaussianMixture)
        for name in ("weights", "means", "covs", "_lam", "_u"):
            setattr(out, name, getattr(self, name).to(device=device, dtype=dtype))
        return out

    def mean(self) -> torch.Tensor:
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """Total covariance: sum_k w_k (Sigma_k + mu_k mu_k^T) - m m^T."""
        m = self.mean()
        second = torch.einsum("k,kij->ij", self.weights, self.covs + self.means[:, :, None] * self.means[:, None, :])
        return second - m[:, None] * m[None, :]

    def sample(self, n: int, *, generator: torch.Generator | None = None, t=None,
               sde: VPSDE | None = None, return_labels: bool = False):
        """n exact draws from p_0, or from p_t when ``t`` and ``sde`` are given (on the generator's device)."""
        device = generator.device if generator is not None else self.means.device
        p = self.to(device=device)
        labels = torch.multinomial(p.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, device=device, dtype=p.means.dtype)
        x = p.means[labels] + torch.einsum("nij,nj->ni", p._u[labels], p._lam[labels].sqrt() * z)
        if t is not None:
            if sde is None:
                raise ValueError("sample(t=...) needs the sde whose marginal to draw from")
            noise = torch.randn(n, self.dim, generator=generator, device=device, dtype=x.dtype)
            x = sde.perturb(x, t, noise)
        return (x, labels) if return_labels else x

    # --- the marginal p_t ---------------------------------------------------------------------
    def _coeffs(self, x: torch.Tensor, t, sde: VPSDE | None):
        """alpha, sigma of shape [n, 1] and the mixture moved to x's dtype and device."""
        p = self.to(device=x.device, dtype=x.dtype)
        if t is None:
            one = x.new_ones(x.shape[0], 1)
            return p, one, 0 * one
        if sde is None:
            raise ValueError("a marginal at time t needs the sde")
        t = _as_tensor(t, x).expand(x.shape[0]).reshape(-1, 1)
        return p, sde.alpha(t), sde.sigma(t)

    def _component_terms(self, x: torch.Tensor, t, sde):
        """Per-component log w_k N(x; alpha mu_k, C_k(t)) [n, K] and C_k^{-1}(x - alpha mu_k) [n, K, d]."""
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [n, {self.dim}]; got {tuple(x.shape)}")
        p, alpha, sigma = self._coeffs(x, t, sde)
        var = alpha[:, :, None] ** 2 * p._lam[None] + sigma[:, :, None] ** 2          # [n, K, d]
        diff = x[:, None, :] - alpha[:, :, None] * p.means[None]                      # [n, K, d]
        y = torch.einsum("kji,nkj->nki", p._u, diff)                                  # U^T diff
        quad = (y ** 2 / var).sum(-1)
        logn = -0.5 * (quad + var.log().sum(-1) + self.dim * math.log(2 * math.pi))
        prec_diff = torch.einsum("kij,nkj->nki", p._u, y / var)                       # C^{-1} diff
        return p.weights.log()[None] + logn, prec_diff

    def log_prob(self, x: torch.Tensor, t=None, sde: VPSDE | None = None) -> torch.Tensor:
        """log p_t(x) of shape [n]; p_0 when t is None."""
        logw, _ = self._component_terms(x, t, sde)
        return torch.logsumexp(logw, dim=1)

    def responsibilities(self, x: torch.Tensor, t=None, sde: VPSDE | None = None) -> torch.Tensor:
        """Posterior component probabilities p(k | x_t) of shape [n, K]."""
        logw, _ = self._component_terms(x, t, sde)
        return torch.softmax(logw, dim=1)

    def score(self, x: torch.Tensor, t=None, sde: VPSDE | None = None) -> torch.Tensor:
        """grad_x log p_t(x) = -sum_k r_k(x) C_k^{-1} (x - alpha mu_k)."""
        logw, prec_diff = self._component_terms(x, t, sde)
        return -(torch.softmax(logw, dim=1)[:, :, None] * prec_diff).sum(1)

    def eps(self, x: torch.Tensor, t, sde: VPSDE) -> torch.Tensor:
        """The ideal noise prediction E[eps | x_t] = -sigma(t) score."""
        _, _, sigma = self._coeffs(x, t, sde)
        return -sigma * self.score(x, t, sde)

    def pf_ode_map(self, x1: torch.Tensor, t: float, sde: VPSDE) -> torch.Tensor:
        """The exact probability-flow ODE map of a single Gaussian N(mu, Sigma) from t = 1 to ``t``:
        x_t = alpha_t mu + C_t^{1/2} C_1^{-1/2} (x_1 - alpha_1 mu), C_t = alpha_t^2 Sigma + sigma_t^2 I (every C_t
        shares Sigma's eigenvectors, so the map is linear); what deterministic samplers converge to."""
        if self.num_components != 1:
            raise ValueError(f"pf_ode_map needs a single Gaussian (no closed form for a mixture); this one has "
                             f"{self.num_components} components")
        mu, (lam, u) = self.means[0].to(x1), torch.linalg.eigh(self.covs[0].to(x1))
        a1, s1, a, s = (f(torch.tensor(v, dtype=torch.float64)).to(x1)
                        for v in (1.0, t) for f in (sde.alpha, sde.sigma))
        scale = torch.sqrt((a ** 2 * lam + s ** 2) / (a1 ** 2 * lam + s1 ** 2))
        return a * mu + ((x1 - a1 * mu) @ u * scale) @ u.T

    def eps_model(self, sde: VPSDE):
        """The exact eps-network of this mixture under ``sde``: a callable ``(x, t) -> eps``."""
        def eps_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return self.eps(x, t, sde)
        return eps_model


def gaussian(mean, cov) -> GaussianMixture:
    """A single Gaussian N(mean, cov) as a one-component mixture."""
    mean = torch.as_tensor(mean, dtype=torch.float64)
    return GaussianMixture([1.0], mean[None], torch.as_tensor(cov, dtype=torch.float64)[None])


def preset(name: str = "gmm2d") -> GaussianMixture:
    """Named mixtures used by tests, examples and ``scoregen compare --dataset gmm``.

    ``gmm2d``: three unequal, anisotropic components in 2-D (the default oracle);
    ``ring8``: eight equal isotropic Gaussians on a circle of radius 2 (std 0.15);
    ``gauss2d``: one correlated Gaussian.
    """
    if name == "gmm2d":
        return GaussianMixture([0.5, 0.3, 0.2], [[-1.0, -0.5], [1.0, 0.8], [0.2, 1.5]],
                               [[[0.10, 0.04], [0.04, 0.05]], [[0.05, -0.02], [-0.02, 0.08]],
                                [[0.02, 0.0], [0.0, 0.02]]])
    if name == "ring8":
        angle = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
        return GaussianMixture(torch.ones(8), 2 * torch.stack([angle.cos(), angle.sin()], 1),
                               torch.full((8,), 0.15 ** 2))
    if name == "gauss2d":
        return gaussian([0.5, -0.3], [[0.5, 0.2], [0.2, 0.3]])
    raise ValueError(f"unknown mixture preset {name!r}; valid: 'gmm2d', 'ring8', 'gauss2d'")
