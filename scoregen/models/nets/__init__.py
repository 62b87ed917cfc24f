"""The networks: the shared eps U-Net, an MLP for low-dimensional data, the VAE, latent diffusion; built from
JSON-able configs.

``build_model({"preset": "digits"})``, ``build_model({"arch": "unet", "in_channels": 3, "ch": 128})``,
``build_model({"arch": "mlp", "dim": 2})``: ``arch`` names an entry of ``ARCHS``, a constructor taking an
optional ``preset`` name and keyword arguments that override the preset's. ``PRESETS`` holds the presets
of the eps-networks (each names its arch); a new architecture is one more entry in ``ARCHS``, which may
resolve presets of its own.
"""
from __future__ import annotations

from torch import nn

from .latent import LatentDiffusion
from .mlp import MLP
from .unet import UNet
from .vae import build_vae

PRESETS = {
    # CPU-trainable on 1x8x8 digits in minutes (1.11M parameters, 4.5 MB in fp32).
    "digits": dict(arch="unet", in_channels=1, image_size=8, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                   attn_resolutions=(4,), dropout=0.1),
    # DDPM's CIFAR-10 model (Ho et al. 2020): 35.7M parameters.
    "cifar32": dict(arch="unet", in_channels=3, image_size=32, ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2,
                    attn_resolutions=(16,), dropout=0.1),
    # DDPM on 64x64 faces, widths 64..512.
    "cartoon64": dict(arch="unet", in_channels=3, image_size=64, ch=64, ch_mult=(1, 2, 4, 8), num_res_blocks=2,
                      attn_resolutions=(32, 16, 8), dropout=0.1),
    # CPU-sized image models.
    "small32": dict(arch="unet", in_channels=3, image_size=32, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                    attn_resolutions=(8,), dropout=0.1),
    "small64": dict(arch="unet", in_channels=3, image_size=64, ch=32, ch_mult=(1, 2, 2, 2), num_res_blocks=1,
                    attn_resolutions=(8,), dropout=0.1),
    # The MLP for 2-D data.
    "toy": dict(arch="mlp", dim=2, hidden=256, depth=3),
}


def _with_presets(cls, arch: str):
    """``cls`` as an ``ARCHS`` entry: ``build(preset=None, **kwargs)`` with the ``arch`` presets of PRESETS."""
    def build(preset: str | None = None, **kwargs) -> nn.Module:
        if preset is not None:
            valid = sorted(name for name, p in PRESETS.items() if p["arch"] == arch)
            if preset not in valid:
                raise ValueError(f"unknown {arch} preset {preset!r}; valid: {', '.join(valid)}")
            kwargs = {**{k: v for k, v in PRESETS[preset].items() if k != "arch"}, **kwargs}
        return cls(**kwargs)
    return build


def build_latent(vae: dict, net: dict, codes: str = "draw", vae_checkpoint: str | None = None) -> LatentDiffusion:
    """Latent diffusion (``nets.latent``): the VAE built from ``vae`` and the eps-network from ``net`` (configs
    of ``build_model``). ``vae_checkpoint`` records where training took the VAE's weights from
    (``train.train`` loads them); the built model holds them."""
    return LatentDiffusion(build_model(vae), build_model(net), codes)


ARCHS = {"unet": _with_presets(UNet, "unet"), "mlp": _with_presets(MLP, "mlp"),
         "vae": build_vae,  # the VAE resolves its own presets (nets.vae.PRESETS)
         "latent": build_latent}


def build_model(config: dict) -> nn.Module:
    """The network described by ``config`` (see the module docstring); without ``arch``, the preset's."""
    config = dict(config)
    arch = config.pop("arch", None)
    if arch is None:
        preset = config.get("preset")
        if preset not in PRESETS:
            raise ValueError(f"config needs 'arch' (one of {', '.join(sorted(ARCHS))}) or 'preset' "
                             f"(one of {', '.join(sorted(PRESETS))}); got {config!r}")
        arch = PRESETS[preset]["arch"]
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; valid: {', '.join(sorted(ARCHS))}")
    try:
        return ARCHS[arch](**config)
    except TypeError as e:
        raise ValueError(f"bad options for arch {arch!r}: {e}") from None


__all__ = ["ARCHS", "LatentDiffusion", "MLP", "PRESETS", "UNet", "build_model"]
