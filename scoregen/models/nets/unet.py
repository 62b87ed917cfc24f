"""The DDPM U-Net (Ho et al. 2020, appendix B; a PixelCNN++ backbone) predicting eps from (x, t).

Levels of ``num_res_blocks`` residual blocks at widths ``ch * ch_mult[i]``, halving the resolution
between levels; self-attention after the blocks whose resolution is in ``attn_resolutions``;
a middle of res-attn-res; a mirrored up path that concatenates the down path's activations.
Each residual block adds a projection of the time embedding; GroupNorm, SiLU, dropout.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .embedding import TimeEmbedding


def _norm(c: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (DDPM), fewer when ``c`` is not a multiple of 32."""
    return nn.GroupNorm(math.gcd(32, c), c)


class ResBlock(nn.Module):
    """``h = conv(drop(SiLU(norm(conv(SiLU(norm(x))) + W temb)))); return shortcut(x) + h``."""

    def __init__(self, c_in: int, c_out: int, temb_dim: int, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = _norm(c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.temb_proj = nn.Linear(temb_dim, c_out)
        self.norm2, self.drop = _norm(c_out), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.shortcut = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.shortcut(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual connection."""

    def __init__(self, c: int):
        super().__init__()
        self.norm, self.qkv, self.proj = _norm(c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, hgt, wid = x.shape
        q, k, v = self.qkv(self.norm(x)).flatten(2).transpose(1, 2).chunk(3, dim=2)  # [b, hw, c] each
        h = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(h.transpose(1, 2).reshape(b, c, hgt, wid))


def layout_for(image_size: int, ch_mult=None) -> dict:
    """``ch_mult`` and ``attn_resolutions`` of a U-Net that fits ``image_size``: DDPM's (1, 2, 2, 2) cut to
    the levels whose resolution halving divides ``image_size`` (at most four), or the ``ch_mult`` given;
    self-attention at the existing resolution nearest to DDPM's 16 x 16."""
    if ch_mult is None:
        levels = 1
        while levels < 4 and image_size % 2 ** levels == 0:
            levels += 1
        ch_mult = (1, 2, 2, 2)[:levels]
    resolutions = [image_size // 2 ** i for i in range(len(ch_mult))]
    attn = min(resolutions, key=lambda r: (abs(math.log2(r / 16)), r))
    return {"ch_mult": tuple(ch_mult), "attn_resolutions": (attn,)}


class UNet(nn.Module):
    """DDPM's eps-network ``eps_model(x, t)`` on images x of shape [n, in_channels, image_size, image_size].

    Args:
        in_channels: image channels (also the output channels).
        ch: base width; level i has width ``ch * ch_mult[i]``.
        ch_mult: width multipliers, one level each; the resolution halves between levels.
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attn_resolutions: resolutions (of image_size, image_size/2, ...) with self-attention.
        dropout: dropout rate inside the residual blocks.
        image_size: input height and width; divisible by 2^(len(ch_mult) - 1).
    The time t in [0, 1] enters through a sinusoidal embedding of 1000 t (``timestep_embedding``).
    The output convolution is zero-initialised, so the untrained network predicts eps = 0.
    """

    def __init__(self, in_channels: int, ch: int = 64, ch_mult=(1, 2, 2, 2), num_res_blocks: int = 2,
                 attn_resolutions=(16,), dropout: float = 0.1, image_size: int = 32):
        super().__init__()
        ch_mult, attn_resolutions = tuple(ch_mult), tuple(attn_resolutions)
        resolutions = [image_size // 2 ** i for i in range(len(ch_mult))]
        if not ch_mult or image_size % 2 ** (len(ch_mult) - 1):
            raise ValueError(f"image_size={image_size} must be divisible by 2^(len(ch_mult) - 1) "
                             f"with a non-empty ch_mult={ch_mult}")
        if not set(attn_resolutions) <= set(resolutions):
            raise ValueError(f"attn_resolutions={attn_resolutions} must be among the resolutions "
                             f"{resolutions} of image_size={image_size} with ch_mult={ch_mult}")
        self.in_channels, self.image_size = in_channels, image_size
        temb_dim = 4 * ch
        self.temb = TimeEmbedding(ch, temb_dim)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)

        def block(c_in, c_out, res):
            layers = [ResBlock(c_in, c_out, temb_dim, dropout)]
            return nn.ModuleList(layers + [AttnBlock(c_out)] if res in attn_resolutions else layers)

        self.down, skips, c = nn.ModuleList(), [ch], ch
        for i, (mult, res) in enumerate(zip(ch_mult, resolutions)):
            for _ in range(num_res_blocks):
                self.down.append(block(c, ch * mult, res))
                c = ch * mult
                skips.append(c)
            if i < len(ch_mult) - 1:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
                skips.append(c)
        self.mid = nn.ModuleList([ResBlock(c, c, temb_dim, dropout), AttnBlock(c), ResBlock(c, c, temb_dim, dropout)])
        self.up = nn.ModuleList()
        for i, (mult, res) in reversed(list(enumerate(zip(ch_mult, resolutions)))):
            for _ in range(num_res_blocks + 1):
                self.up.append(block(c + skips.pop(), ch * mult, res))
                c = ch * mult
            if i > 0:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                             nn.Conv2d(c, c, 3, padding=1)))
        self.norm_out, self.conv_out = _norm(c), nn.Conv2d(c, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    @property
    def shape(self) -> tuple[int, int, int]:
        """Shape of one sample."""
        return (self.in_channels, self.image_size, self.image_size)

    def forward(self, x, t):
        expected = self.shape
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must have shape [n, {', '.join(map(str, expected))}]; got {tuple(x.shape)}")
        temb = self.temb(t, x)
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            h = self._run(layer, h, temb)
            hs.append(h)
        h = self._run(self.mid, h, temb)
        for layer in self.up:
            h = self._run(layer, torch.cat([h, hs.pop()], dim=1) if isinstance(layer, nn.ModuleList) else h, temb)
        return self.conv_out(F.silu(self.norm_out(h)))

    @staticmethod
    def _run(layer, h, temb):
        """Run a resample layer, or a block list (ResBlock takes temb, AttnBlock does not)."""
        if not isinstance(layer, nn.ModuleList):
            return layer(h)
        for sub in layer:
            h = sub(h, temb) if isinstance(sub, ResBlock) else sub(h)
        return h
