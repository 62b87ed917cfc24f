"""The model zoo: a data set's model of a kind, found or trained once.

``model_for(kind, data, ...)`` takes the first of: the given checkpoint (an error if it does not fit the data),
the one shipped with the package (``scoregen/checkpoints``) if it fits, the one cached under
``<cache>/models`` (``runtime.cache``), else one trained by ``RECIPES`` into that cache. Kinds are those of
``core.flow`` as the sweep asks for them: "eps" (an eps-network; a latent diffusion model counts as one) or
"vae". ``vae_of`` is a latent diffusion model's own VAE, which stands in for the VAE it was built on.

This is the one module of the package, besides the CLI, that imports ``models.train``: loading a model
(``models.loading``) never trains.
"""
from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from importlib import resources
from pathlib import Path

import torch

from ..core.flow import kind_of
from ..data import load_dataset
from ..runtime.cache import cache_dir as runtime_cache_dir
from .checkpoint import TrainConfig, read_checkpoint
from .loading import LoadedModel, load_checked
from .nets import PRESETS
from .nets.vae import PRESETS as VAE_PRESETS
from .train import train

# Training recipes for a data set without a checkpoint (TrainConfig fields), by model kind and data kind;
# "model" is completed by train.model_config_for. eps: MLP for vectors (seconds to a minute on CPU),
# configs/digits.json for digits, small32/small64 for other images (GPU recommended); vae: the conv VAE of
# nets.vae (see _vae_arch).
RECIPES = {
    ("eps", "vector"): dict(model={"arch": "mlp", "hidden": 128, "depth": 3}, steps=1000, batch_size=512,
                            lr=2e-3, warmup=100, ema_decay=0.995),
    ("eps", "digits"): dict(model={"preset": "digits"}, steps=2000, batch_size=128, lr=1e-3, warmup=200,
                            ema_decay=0.998),
    ("eps", "image"): dict(steps=5000, batch_size=64, lr=2e-4, warmup=500, ema_decay=0.999),
    ("vae", "digits"): dict(steps=2000, batch_size=128, lr=2e-3, warmup=100, ema_decay=0.995),
    ("vae", "image"): dict(steps=5000, batch_size=64, lr=1e-3, warmup=200, ema_decay=0.999),
}


def shipped_checkpoint(name: str) -> Path | None:
    """The checkpoint ``name`` shipped with the package (``scoregen/checkpoints``), None if there is none."""
    path = Path(str(resources.files("scoregen") / "checkpoints" / name))
    return path if path.is_file() else None


def _data_kind(data) -> str:
    return "digits" if data.name == "digits" else "image" if data.is_image else "vector"


def _eps_arch(data) -> dict:
    """A CPU-sized U-Net for images without a preset of their own: small32 or small64 on the data's channels."""
    preset = f"small{data.shape[-1]}"
    return {"preset": preset, "in_channels": data.shape[0]} if preset in PRESETS else {}


def _vae_arch(data) -> dict:
    """A conv VAE for the data's shape: the data set's preset if it has one, else small32 or seed64 resized."""
    preset = data.name if data.name in VAE_PRESETS else "small32" if data.shape[-1] <= 32 else "seed64"
    return {"arch": "vae", "preset": preset, "shape": list(data.shape), "levels": data.levels, "scale": None}


def recipe(kind: str, data, dataset: str, dataset_options: dict, device: torch.device,
           cache_dir: Path) -> TrainConfig:
    """The training run of a ``kind`` model for ``data`` (``RECIPES``), its folder named by its config's
    hash under ``cache_dir/models``."""
    fields = dict(RECIPES[kind, _data_kind(data)])
    if kind == "vae":
        fields["model"] = _vae_arch(data)
    elif _data_kind(data) == "image":
        fields["model"] = _eps_arch(data)
    config = TrainConfig(dataset=dataset, dataset_options=dict(dataset_options), sample_every=0, ckpt_every=500,
                         **fields)
    digest = hashlib.sha1(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    out = cache_dir / "models" / f"{data.name}-{kind}-{digest}"
    return TrainConfig.from_dict({**config.to_dict(), "out": str(out), "device": str(device)})


def _check_fits(loaded: LoadedModel, data, dataset: str, dataset_options: dict) -> None:
    """Raise unless ``loaded`` fits the data's sample shape and, for a scoregen checkpoint, was trained on
    this data set."""
    model, info = loaded.model, loaded.info
    if info.config is None:
        if info.shape != data.shape:
            raise ValueError(f"model {info.path} makes samples of shape {info.shape}, not {data.shape} "
                             f"({data.name}); for an image folder give --dataset-option size=")
        return
    config, path = info.config, info.path
    if config.dataset != dataset:
        raise ValueError(f"checkpoint {path} was trained on data set {config.dataset!r}, not {dataset!r}")
    if config.dataset_options != dataset_options:
        theirs = load_dataset(config.dataset, **config.dataset_options)
        if (theirs.name, theirs.shape) != (data.name, data.shape):
            raise ValueError(f"checkpoint {path} was trained on {theirs.name} (samples {theirs.shape}), "
                             f"not {data.name} (samples {data.shape}); dataset_options differ: "
                             f"{config.dataset_options} vs {dataset_options}")
    kind = kind_of(model)
    if kind in ("vae", "latent"):  # their decoded samples' shape
        ok = tuple(model.data_shape if kind == "latent" else model.shape) == data.shape
    else:
        x = torch.zeros((2, *data.shape), device=next(model.parameters()).device)
        try:
            with torch.no_grad():
                ok = model(x, torch.full((2,), 0.5, device=x.device)).shape == x.shape
        except (RuntimeError, ValueError):
            ok = False
    if not ok:
        raise ValueError(f"checkpoint {path} does not fit samples of shape {data.shape} ({data.name}); "
                         f"it was built as {config.model}")


def model_for(kind: str, data, dataset: str, dataset_options: dict, *, checkpoint=None, names: dict | None = None,
              device: torch.device, cache_dir=None, progress: bool = True) -> LoadedModel:
    """The ``kind`` model of ``data`` (loaded by ``dataset`` and ``dataset_options``): ``checkpoint`` (a path or a
    ``LoadedModel``; an error if it does not fit; ``names`` as for ``load_checked``), else the shipped one if it
    fits, else the cached one, else a freshly trained one (cached under ``cache_dir/models``; None: the
    ``runtime.cache`` folder)."""
    if checkpoint is not None:
        loaded = checkpoint if isinstance(checkpoint, LoadedModel) else \
            load_checked(checkpoint, kind, device=device, names=names)
        _check_fits(loaded, data, dataset, dataset_options)
        return loaded
    shipped = shipped_checkpoint(f"{dataset}.pt" if kind == "eps" else f"{dataset}-vae.pt")
    if shipped is not None:
        loaded = load_checked(shipped, kind, device=device)
        try:
            _check_fits(loaded, data, dataset, dataset_options)
            return loaded
        except ValueError:
            pass  # another variant of the data set (options): use the cache or train
    config = recipe(kind, data, dataset, dataset_options, device, runtime_cache_dir(cache_dir))
    path = Path(config.out) / "ckpt.pt"
    if not (path.is_file() and read_checkpoint(path)["step"] >= config.steps):
        print(f"no {kind} checkpoint for {data.name}: training one ({config.steps} steps) into {config.out}",
              file=sys.stderr)
        train(config, resume=path.is_file(), progress=progress)
    return load_checked(path, kind, device=device)


def vae_of(loaded: LoadedModel) -> LoadedModel | None:
    """The VAE of a latent diffusion model (``nets.latent``), None for a model of any other kind."""
    model, info = loaded.model, loaded.info
    if kind_of(model) != "latent":
        return None
    return LoadedModel(model.vae, loaded.sde, replace(info, path=f"{info.path} (its VAE)", shape=model.data_shape))


__all__ = ["RECIPES", "shipped_checkpoint", "recipe", "model_for", "vae_of"]
