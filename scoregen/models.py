"""Models by kind: a checkpoint loaded and its kind checked, and a data set's model found or trained.

A model's kind is ``"eps"``, an eps-network sampled by ``scoregen.samplers``, or ``"vae"``, a
``nets.vae.VAE`` sampled in one decoder call by its own ``sample`` (options: ``vae_options``).
``model_for`` finds the model of a kind for a data set: the given checkpoint (an error if it does not
fit), else the shipped one if it fits, else the cached one, else one trained by ``RECIPES`` and cached.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import sys
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import torch

from .checkpoint import TrainConfig, load_checkpoint, read_checkpoint
from .data import load_dataset
from .nets import PRESETS
from .nets.vae import PRESETS as VAE_PRESETS
from .nets.vae import VAE
from .sde import VPSDE
from .train import train

KINDS = {"eps": "an eps-network", "vae": "a VAE"}  # kind -> what the errors call it

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


class LoadedModel(NamedTuple):
    """A model read from a checkpoint: the network, its SDE, its training config (``config.t_min`` is
    where its samplers stop) and the file's path."""
    model: torch.nn.Module
    sde: VPSDE
    config: TrainConfig
    path: str


def kind_of(model) -> str:
    """The kind of ``model``: "vae" for a ``nets.vae.VAE``, else "eps"."""
    return "vae" if isinstance(model, VAE) else "eps"


def load_checked(path, kind: str | None = None, *, device=None, names: dict | None = None) -> LoadedModel:
    """The model of checkpoint ``path`` on ``device``; with ``kind``, an error unless it is of that kind.
    ``names``: the argument each kind is given as (kind -> name), so that the error says where it goes."""
    model, sde, config = load_checkpoint(path, device=device)
    found = kind_of(model)
    if kind is not None and found != kind:
        names = names or {}
        hint = f"; use it as {names[found]}" if found in names else ""
        raise ValueError(f"{names.get(kind, 'checkpoint')} {path} holds {KINDS[found]}, not {KINDS[kind]}{hint}")
    return LoadedModel(model, sde, config, str(path))


def vae_options(options: dict) -> dict:
    """``options`` of ``VAE.sample`` completed with its defaults (its keyword parameters but the generator);
    an error names unknown ones, or a flag that is not True or False."""
    defaults = {name: p.default for name, p in inspect.signature(VAE.sample).parameters.items()
                if p.default is not p.empty and name != "generator"}
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ValueError(f"option(s) {', '.join(unknown)} do not belong to a VAE's sampling (one decoder call); "
                         f"its options: {', '.join(defaults)}")
    for name, value in options.items():
        if isinstance(defaults[name], bool) and not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False; got {value!r}")
    return {**defaults, **options}


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
    """Raise unless ``loaded`` was trained on this data set and fits its sample shape."""
    path, model, config = loaded.path, loaded.model, loaded.config
    if config.dataset != dataset:
        raise ValueError(f"checkpoint {path} was trained on data set {config.dataset!r}, not {dataset!r}")
    if config.dataset_options != dataset_options:
        theirs = load_dataset(config.dataset, **config.dataset_options)
        if (theirs.name, theirs.shape) != (data.name, data.shape):
            raise ValueError(f"checkpoint {path} was trained on {theirs.name} (samples {theirs.shape}), "
                             f"not {data.name} (samples {data.shape}); dataset_options differ: "
                             f"{config.dataset_options} vs {dataset_options}")
    if kind_of(model) == "vae":
        ok = model.shape == data.shape
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
              device: torch.device, cache_dir: Path, progress: bool = True) -> LoadedModel:
    """The ``kind`` model of ``data`` (loaded by ``dataset`` and ``dataset_options``): ``checkpoint`` (an
    error if it does not fit; ``names`` as for ``load_checked``), else the shipped one if it fits, else the
    cached one, else a freshly trained one (cached under ``cache_dir/models``)."""
    if checkpoint is not None:
        loaded = load_checked(checkpoint, kind, device=device, names=names)
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
    config = recipe(kind, data, dataset, dataset_options, device, cache_dir)
    path = Path(config.out) / "ckpt.pt"
    if not (path.is_file() and read_checkpoint(path)["step"] >= config.steps):
        print(f"no {kind} checkpoint for {data.name}: training one ({config.steps} steps) into {config.out}",
              file=sys.stderr)
        train(config, resume=path.is_file(), progress=progress)
    return load_checked(path, kind, device=device)


__all__ = ["KINDS", "RECIPES", "LoadedModel", "kind_of", "load_checked", "vae_options", "shipped_checkpoint",
           "recipe", "model_for"]
