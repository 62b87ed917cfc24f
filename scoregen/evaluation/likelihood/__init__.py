"""Likelihoods in bits per dimension, one convention for every model (``bpd``: ``bits_per_dim``, ``dequantize``):

    pf_ode   the PF-ODE log-likelihood (``log_likelihood``), exact divergence or Hutchinson's estimator
    bound    the DDPM variational bound (``ddpm_bound``), with a discretised decoder for quantised data
    latent   the VAE with a diffusion prior (``latent_elbo``; the VAE's own ELBO and IWAE live on the VAE)
    report   the table that reports them side by side: ``table(LikelihoodSettings(...))``, the ``scoregen
             likelihood`` command, and ``likelihood_table`` of models in memory; one estimator per model kind

Nothing here imports the samplers: the PF-ODE's right-hand side and the eps/x0 view of a network are
``core.flow``'s, shared with them.
"""
from .bound import VariationalBound, ddpm_bound
from .bpd import bits_per_dim, dequantize
from .latent import LatentBound, latent_elbo
from .pf_ode import DIVERGENCES, PROBES, LikelihoodResult, log_likelihood
from .report import (ESTIMATION, Diffusion, LikelihoodSettings, diffusion_points, latent_points, likelihood_rows,
                     likelihood_table, markdown_table, table, vae_points)

__all__ = ["bits_per_dim", "dequantize", "DIVERGENCES", "PROBES", "LikelihoodResult", "log_likelihood",
           "VariationalBound", "ddpm_bound", "LatentBound", "latent_elbo", "LikelihoodSettings", "table",
           "likelihood_table", "likelihood_rows", "markdown_table", "Diffusion", "diffusion_points", "vae_points",
           "latent_points", "ESTIMATION"]
