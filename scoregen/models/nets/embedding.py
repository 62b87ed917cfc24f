"""Time embedding shared by the eps-networks."""
from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of ``scale * t`` (Vaswani et al. 2017; DDPM's ``get_timestep_embedding``).

    ``t`` is a float tensor of shape [batch] in [0, 1]; ``scale = 1000`` puts continuous time on
    DDPM's step axis. Returns [batch, dim] in t's dtype: ``[sin(s t w_k), cos(s t w_k)]`` with
    ``w_k = max_period^(-k / (dim/2 - 1))``, k = 0 .. dim/2 - 1 (zero-padded when dim is odd).
    """
    half = dim // 2
    w = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=t.dtype) / max(half - 1, 1))
    arg = scale * t[:, None] * w[None]
    emb = torch.cat([arg.sin(), arg.cos()], dim=1)
    return nn.functional.pad(emb, (0, dim % 2))


class TimeEmbedding(nn.Module):
    """``t -> Linear(SiLU(Linear(sinusoid(t))))``: DDPM's ``temb`` MLP, from width ``dim`` to ``out_dim``."""

    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.dim = dim
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t, x: torch.Tensor) -> torch.Tensor:
        """Embedding [batch, out_dim] of ``t`` (a float, or a tensor of shape [] or [batch]) for input ``x``."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
        if t.dim() > 1 or t.numel() not in (1, x.shape[0]):
            raise ValueError(f"t must be a scalar or have shape [{x.shape[0]}]; got {tuple(t.shape)}")
        return self.mlp(timestep_embedding(t.expand(x.shape[0]), self.dim))
