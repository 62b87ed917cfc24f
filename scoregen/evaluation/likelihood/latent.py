"""The bound of a VAE with a diffusion prior (``latent_elbo``, LSGM's): the VAE's IWAE bound with the PF-ODE
log-density of the prior in place of N(0, I)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.flow import check_model, check_state, kind_of
from ...core.sde import T_MIN, VPSDE
from .bpd import bits_per_dim
from .pf_ode import check_solve_options, log_likelihood


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
                generator: torch.Generator | None = None, progress: bool = False) -> LatentBound:
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
        x: data [n, *vae.shape], finite floats.
        k: draws of z per point.
        shift, scale: the standardisation ``z = shift + scale u`` (tensors [z_dim] or floats); by default
            ``prior_eps_model``'s ``shift`` and ``scale`` buffers (a ``LatentDiffusion``), else 0 and 1.
        divergence, probes, probe, solver, rtol, atol, t_min: of ``log_likelihood``. Exact divergence (z_dim
            backward passes per call) gives a bound; Hutchinson an unbiased estimate of the ELBO (k = 1) but,
            for k > 1, the noise inside the log-mean-exp biases the estimate upward: no longer a bound.
        chunk: draws per point decoded and solved together.
        progress: a tqdm bar of each PF-ODE solve (``log_likelihood``'s).
    """
    if kind_of(vae) != "vae":
        raise ValueError(f"vae must be a VAE (nets.vae.VAE); got {type(vae).__name__}")
    check_model("prior_eps_model", prior_eps_model)
    check_solve_options(divergence, probes, probe, solver, rtol, atol, t_min)
    check_state(x)
    if tuple(x.shape[1:]) != vae.shape:
        raise ValueError(f"x has shape {tuple(x.shape)} but the VAE takes shape [n, {', '.join(map(str, vae.shape))}]")
    shift = getattr(prior_eps_model, "shift", 0.0) if shift is None else shift
    scale = getattr(prior_eps_model, "scale", 1.0) if scale is None else scale
    shift, scale = (torch.as_tensor(v, dtype=x.dtype, device=x.device).expand(vae.z_dim) for v in (shift, scale))
    if not bool((scale > 0).all()):
        raise ValueError("scale must be positive in every dimension")
    log_det, nfe = scale.log().sum(), []

    def log_prior(z: torch.Tensor) -> torch.Tensor:
        res = log_likelihood(prior_eps_model, sde, (z - shift) / scale, divergence=divergence, probes=probes,
                             probe=probe, solver=solver, rtol=rtol, atol=atol, t_min=t_min, generator=generator,
                             progress=progress)
        nfe.append(res.nfe * z.shape[0] / x.shape[0])                  # calls x draws per point of this chunk
        return res.logp.to(z) - log_det

    with torch.no_grad():
        logp = vae.iwae(x, k, generator, chunk=chunk, log_prior=log_prior)
    return LatentBound(logp=logp, k=int(k), nfe=sum(nfe), dim=vae.dim)
