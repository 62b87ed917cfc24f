"""Models by kind: a checkpoint loaded and its kind checked, and a data set's model found or trained.

A model's kind is ``"eps"``, an eps-network sampled by ``scoregen.samplers``, or ``"vae"``, a
``nets.vae.VAE`` sampled in one decoder call by its own ``sample`` (options: ``vae_options``).
``model_for`` finds the model of a kind for a data set: the given checkpoint (an error if it does not
fit), else the shipped one if it fits, else the cached one, else one trained by ``RECIPES`` and cached.

``load_model`` is the one entry point for a model from anywhere: a scoregen checkpoint, a local diffusers folder
(``from_diffusers``) or a network wrapped by ``adapters.wrap``; ``load_checked`` is it with the kind checked.
"""
from __future__ import annotations

import errno
import hashlib
import inspect
import json
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import torch

from .adapters import Autocast, Wrapped
from .checkpoint import TrainConfig, load_checkpoint, read_checkpoint
from ..data import load_dataset
from .nets import PRESETS, LatentDiffusion
from .nets.vae import PRESETS as VAE_PRESETS
from .nets.vae import VAE
from ..core.devices import resolve_device
from ..core.sde import T_MIN, VPSDE
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


DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # --dtype: the network's compute dtype


@dataclass(frozen=True)
class ModelInfo:
    """What is known of a loaded model besides its network and SDE.

    ``path``: where it was read from (a wrapped callable's name); ``format``: "scoregen" (a checkpoint), "diffusers" (a
    folder) or "callable" (``adapters.wrap``); ``shape``: one sample's shape (None: unknown); ``t_min``: the
    smallest time it was trained at, where its samplers stop; ``config``: a scoregen checkpoint's TrainConfig
    (else None); ``details``: the format's own facts (a diffusers folder's classes, prediction type, N, ...)."""
    path: str
    format: str
    shape: tuple | None
    t_min: float
    config: TrainConfig | None = None
    details: dict = field(default_factory=dict)

    def digest(self) -> str:
        """A hash of the model's files (a checkpoint, or a folder's configs and weights): a cache key that
        changes with the model."""
        root = Path(self.path)
        if self.format == "callable" or not root.exists():
            raise ValueError(f"model {self.path} has no files to key a cache on; save it as a checkpoint")
        files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file())
        h = hashlib.sha1()
        for f in files:
            h.update(b"" if f == root else str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
        return h.hexdigest()[:10]


class LoadedModel(NamedTuple):
    """A loaded model: the network (an eps-model or a VAE), its SDE and its ``ModelInfo``."""
    model: torch.nn.Module
    sde: VPSDE
    info: ModelInfo


def kind_of(model) -> str:
    """The kind of ``model``: "vae" for a ``nets.vae.VAE``, else "eps"."""
    return "vae" if isinstance(model, VAE) else "eps"


def compute_dtype(dtype) -> torch.dtype | None:
    """A network's compute dtype, "fp32" (or None, torch.float32), "bf16" or "fp16" (or the torch dtypes), as
    the half dtype of ``adapters.Autocast`` or None for float32."""
    dtype = DTYPES.get(dtype, dtype) if isinstance(dtype, str) else dtype
    if isinstance(dtype, str) or dtype not in (None, torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    return None if dtype == torch.float32 else dtype


def with_dtype(loaded: LoadedModel, dtype) -> LoadedModel:
    """``loaded`` with its eps-network computing in ``dtype`` (``compute_dtype``) under autocast
    (``adapters.Autocast``); the samplers stay in float32. A VAE computes in float32 only."""
    dtype = compute_dtype(dtype)
    if dtype is None:
        return loaded
    if kind_of(loaded.model) == "vae":
        raise ValueError(f"dtype {dtype} applies to eps-networks; {loaded.info.path} holds a VAE (float32 only)")
    if isinstance(loaded.model, LatentDiffusion):  # its eps-network in dtype, its decoder in float32
        return loaded._replace(model=loaded.model.with_net(Autocast(loaded.model.net, dtype)))
    return loaded._replace(model=Autocast(loaded.model, dtype))


def load_model(source, *, device=None, dtype=None) -> LoadedModel:
    """``(eps_model, sde, info)`` of a model from anywhere, on ``device`` (None: CUDA if available):

    - a scoregen checkpoint file (``checkpoint.load_checkpoint``; a VAE's too, kind "vae");
    - a local diffusers folder, a pipeline or a bare UNet2DModel with its scheduler config
      (``from_diffusers``: timestep k is t = (k + 1) / N, the prediction type converted to eps);
    - a network wrapped by ``adapters.wrap`` (its device is its own).

    ``dtype``: the eps-network's compute dtype ("bf16", "fp16": autocast; ``with_dtype``). Nothing is downloaded:
    a hub model is fetched first (``huggingface-cli download google/ddpm-cifar10-32 --local-dir DIR``).
    """
    if isinstance(source, Wrapped):
        t_min = 1 / source.num_steps if source.time == "index" else T_MIN
        name = getattr(source.fn, "__name__", type(source.fn).__name__)
        return with_dtype(LoadedModel(source, source.sde, ModelInfo(name, "callable", None, t_min)), dtype)
    if not isinstance(source, (str, Path)):
        raise ValueError(f"model must be a checkpoint file, a diffusers folder or adapters.wrap(...); got "
                         f"{type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(errno.ENOENT, f"no model at {path}: give a scoregen checkpoint or a local diffusers "
                                              "folder (nothing is downloaded; fetch a hub model first with "
                                              "huggingface-cli download ID --local-dir DIR)")
    if path.is_dir():
        from .diffusers import load_folder

        model, sde, shape, details = load_folder(path, resolve_device(device))
        info = ModelInfo(str(path), "diffusers", shape, 1 / sde.num_steps, details=details)
    else:
        model, sde, config = load_checkpoint(path, device=device)
        info = ModelInfo(str(path), "scoregen", tuple(model.shape), config.t_min, config)
    return with_dtype(LoadedModel(model, sde, info), dtype)


def load_checked(path, kind: str | None = None, *, device=None, names: dict | None = None) -> LoadedModel:
    """``load_model(path)``; with ``kind``, an error unless the model is of that kind. ``names``: the argument
    each kind is given as (kind -> name), so that the error says where it goes."""
    loaded = load_model(path, device=device)
    found = kind_of(loaded.model)
    if kind is not None and found != kind:
        names = names or {}
        hint = f"; use it as {names[found]}" if found in names else ""
        raise ValueError(f"{names.get(kind, 'checkpoint')} {path} holds {KINDS[found]}, not {KINDS[kind]}{hint}")
    return loaded


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
    if kind_of(model) == "vae" or isinstance(model, LatentDiffusion):
        ok = tuple(getattr(model, "data_shape", model.shape)) == data.shape
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
    """The ``kind`` model of ``data`` (loaded by ``dataset`` and ``dataset_options``): ``checkpoint`` (a path or a
    ``LoadedModel``; an error if it does not fit; ``names`` as for ``load_checked``), else the shipped one if it
    fits, else the cached one, else a freshly trained one (cached under ``cache_dir/models``)."""
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
    config = recipe(kind, data, dataset, dataset_options, device, cache_dir)
    path = Path(config.out) / "ckpt.pt"
    if not (path.is_file() and read_checkpoint(path)["step"] >= config.steps):
        print(f"no {kind} checkpoint for {data.name}: training one ({config.steps} steps) into {config.out}",
              file=sys.stderr)
        train(config, resume=path.is_file(), progress=progress)
    return load_checked(path, kind, device=device)


__all__ = ["KINDS", "RECIPES", "DTYPES", "ModelInfo", "LoadedModel", "kind_of", "compute_dtype", "with_dtype",
           "load_model", "load_checked", "vae_options", "shipped_checkpoint", "recipe", "model_for"]
