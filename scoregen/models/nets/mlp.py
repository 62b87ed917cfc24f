"""An eps-network for low-dimensional data x of shape [n, d]."""
from __future__ import annotations

from torch import nn

from .embedding import TimeEmbedding


class MLP(nn.Module):
    """Residual MLP ``eps_model(x, t)``: ``h <- h + Linear(SiLU(h + temb(t)))``, ``depth`` times.

    Args:
        dim: data dimension d.
        hidden: width of every layer.
        depth: number of residual layers.
        emb_dim: width of the sinusoidal time embedding (see ``timestep_embedding``).
        norm: a LayerNorm before every activation (``h + Linear(SiLU(LN(h) + temb(t)))``). The output is then
            bounded whatever x, so the forward PF-ODE drift ``-beta/2 (x - eps/sigma)`` turns back towards the
            origin far from the data, and a likelihood solve from an atypical point cannot diverge; without it,
            eps grows linearly in x with a slope learnt nowhere near there (a latent prior's codes,
            ``nets.latent``).
    The output layer is zero-initialised, so the untrained network predicts eps = 0.
    """

    def __init__(self, dim: int, hidden: int = 256, depth: int = 3, emb_dim: int = 64, norm: bool = False):
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 0:
            raise ValueError(f"need dim >= 1, hidden >= 1, depth >= 0; got dim={dim}, hidden={hidden}, depth={depth}")
        self.dim = dim
        self.temb = TimeEmbedding(emb_dim, hidden)
        self.inp = nn.Linear(dim, hidden)
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, dim)
        self.norms = nn.ModuleList(nn.LayerNorm(hidden) if norm else nn.Identity() for _ in range(depth + 1))
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    @property
    def shape(self) -> tuple[int]:
        """Shape of one sample."""
        return (self.dim,)

    def forward(self, x, t):
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape [n, {self.dim}]; got {tuple(x.shape)}")
        temb = self.temb(t, x)
        h = self.inp(x)
        for layer, norm in zip(self.layers, self.norms):
            h = h + layer(nn.functional.silu(norm(h) + temb))
        return self.out(nn.functional.silu(self.norms[-1](h)))
