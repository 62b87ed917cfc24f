"""The flow of a network: what kind of model it is, the eps/x0 view of an eps-network (``Model``), the
probability-flow ODE's right-hand side and the final denoising step, used by the samplers and the likelihoods
alike.

Model kinds. A network declares its kind by a class attribute ``kind`` (``kind_of``):

    "eps"     an eps-network ``(x, t) -> eps`` (the default: any callable without ``kind``), run by every sampler
    "latent"  an eps-network on a latent ``shape`` with ``to_data(u)``, its decoder (``nets.latent``): every
              sampler runs on the latents, and the samples are decoded once
    "vae"     a VAE (``nets.vae``): sampled by its own ``sample(n, generator=)`` in one decoder call, no sampler
"""
from __future__ import annotations

KINDS = {"eps": "an eps-network", "latent": "a latent diffusion model", "vae": "a VAE"}  # kind -> what errors say


def kind_of(model) -> str:
    """The kind of ``model`` (module docstring): its ``kind`` attribute, else "eps"."""
    kind = getattr(model, "kind", "eps")
    if kind not in KINDS:
        raise ValueError(f"model kind must be one of {', '.join(KINDS)}; {type(model).__name__} declares {kind!r}")
    return kind


def samples_with_samplers(model) -> bool:
    """Whether the samplers run ``model``: an eps-network or a latent model, not a VAE."""
    return kind_of(model) != "vae"
