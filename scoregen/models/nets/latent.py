"""Latent diffusion (Rombach et al. 2022; Vahdat et al. 2021): an eps-network on a frozen VAE's latent codes.

The diffusion runs on standardised codes ``u = (z - shift) / scale``, z a code of the VAE's encoder for a
training item: its posterior mean (``codes="mean"``) or a draw ``z ~ q(z | x)`` (``codes="draw"``, the
default, which makes the model a prior for the VAE: LSGM's). ``shift`` and ``scale`` are the per-dimension
mean and std of the training set's codes (``fit_standardisation``). A sample is ``u`` drawn by any sampler
from N(0, I) at t = 1, then one decoder call: ``x = decode(u * scale + shift)`` (``to_data``).

The module holds the VAE itself (frozen: no gradients, never trained further), so that a checkpoint is the
whole model; its ``shape`` is the latent shape the samplers run on, ``data_shape`` the decoded samples'.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

CODES = ("draw", "mean")


class LatentDiffusion(nn.Module):
    """``eps_model(u, t)`` on standardised VAE codes u, with the VAE that maps u to data.

    Args:
        vae: a ``nets.vae.VAE`` (frozen here).
        net: the eps-network on u, shape [n, z_dim] (an ``MLP``, or any callable ``(u, t) -> eps``).
        codes: "draw" (z ~ q(z | x)) or "mean" (z = mu(x)): the codes the network is trained on.
    """
    kind = "latent"  # the model kind (``core.flow.kind_of``): sampled on its latent ``shape``, then ``to_data``

    def __init__(self, vae: nn.Module, net, codes: Literal["draw", "mean"] = "draw"):
        super().__init__()
        if codes not in CODES:
            raise ValueError(f"codes must be one of {', '.join(CODES)}; got {codes!r}")
        self.vae, self.net, self.codes = vae.requires_grad_(False), net, codes
        self.register_buffer("shift", torch.zeros(vae.z_dim))
        self.register_buffer("scale", torch.ones(vae.z_dim))

    @property
    def shape(self) -> tuple[int]:
        """Shape of one sample of the diffusion: the latent (z_dim,)."""
        return (self.vae.z_dim,)

    @property
    def data_shape(self) -> tuple[int, ...]:
        """Shape of one decoded sample."""
        return self.vae.shape

    def train(self, mode: bool = True) -> LatentDiffusion:
        """Train mode for the eps-network only: the VAE stays in eval mode."""
        super().train(mode)
        self.vae.eval()
        return self

    def forward(self, u: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(u, t)

    def with_net(self, net) -> LatentDiffusion:
        """The same model (VAE and standardisation shared) with another eps-network, e.g. one under autocast."""
        other = LatentDiffusion(self.vae, net, self.codes)
        other.shift, other.scale = self.shift, self.scale
        return other

    @torch.no_grad()
    def codes_of(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The VAE codes z of data x [n, z_dim]: posterior means, or one draw each from ``generator``."""
        mu, log_var = self.vae.encode(x)
        if self.codes == "mean":
            return mu
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * log_var) * eps

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standardised codes ``u = (z - shift) / scale`` of data x: what the eps-network is trained on."""
        return (self.codes_of(x, generator) - self.shift) / self.scale

    @torch.no_grad()
    def fit_standardisation(self, x: torch.Tensor, generator: torch.Generator | None = None,
                            batch_size: int = 1024) -> None:
        """Set ``shift`` and ``scale`` to the per-dimension mean and std of the codes of ``x`` (a floor of
        1e-6 on the std keeps a dimension the encoder never varies finite)."""
        z = torch.cat([self.codes_of(x[i:i + batch_size], generator) for i in range(0, x.shape[0], batch_size)])
        self.shift.copy_(z.mean(0))
        self.scale.copy_(z.std(0).clamp(min=1e-6))

    @torch.no_grad()
    def to_data(self, u: torch.Tensor) -> torch.Tensor:
        """Decoded samples ``decode(u * scale + shift)`` [n, *data_shape]: one decoder call."""
        return self.vae.decode(u.to(self.scale.dtype) * self.scale + self.shift)
