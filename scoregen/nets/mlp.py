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
    The output layer is zero-initialised, so the untrained network predicts eps = 0.
    """

    def __init__(self, dim: int, hidden: int = 256, depth: int = 3, emb_dim: int = 64):
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 0:
            raise ValueError(f"need dim >= 1, hidden >= 1, depth >= 0; got dim={dim}, hidden={hidden}, depth={depth}")
        self.dim = dim
        self.temb = TimeEmbedding(emb_dim, hidden)
        self.inp = nn.Linear(dim, hidden)
        self.layers = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(depth))
        self.out = nn.Linear(hidden, dim)
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
        for layer in self.layers:
            h = h + layer(nn.functional.silu(h + temb))
        return self.out(nn.functional.silu(h))
