"""Models from anywhere, their kind checked: loading never trains (a data set's model is found or trained by
``models.zoo``).

A model's kind is that of ``core.flow.kind_of``: "eps", an eps-network sampled by ``scoregen.samplers``;
"latent", an eps-network on a VAE's codes (``nets.latent``), sampled there and decoded; "vae", a ``nets.vae.VAE``
sampled in one decoder call by its own ``sample`` (options: ``vae_options``).

``load_model`` is the one entry point for a model from anywhere: a scoregen checkpoint, a local diffusers folder
(``from_diffusers``) or a network wrapped by ``adapters.wrap``; ``load_checked`` is it with the kind checked.
"""
from __future__ import annotations

import errno
import hashlib
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from .adapters import Autocast, Wrapped
from .checkpoint import TrainConfig, load_checkpoint
from .nets.vae import VAE
from ..core.devices import resolve_device
from ..core.flow import KINDS, kind_of
from ..core.sde import T_MIN, VPSDE


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
    """A loaded model: the network (an eps-model, a latent diffusion model or a VAE), its SDE and its
    ``ModelInfo``."""
    model: torch.nn.Module
    sde: VPSDE
    info: ModelInfo

    @property
    def kind(self) -> str:
        """The network's kind (``core.flow.kind_of``): "eps", "latent" or "vae"."""
        return kind_of(self.model)


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
    if loaded.kind == "vae":
        raise ValueError(f"dtype {dtype} applies to eps-networks; {loaded.info.path} holds a VAE (float32 only)")
    if loaded.kind == "latent":  # its eps-network in dtype, its decoder in float32
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
    """``load_model(path)``; with ``kind``, an error unless the model is of that kind: a latent diffusion model
    is an eps-network here (kind "eps"; kind "latent" asks for one alone). ``names``: the argument each kind is
    given as (kind -> name), so that the error says where it goes."""
    loaded = load_model(path, device=device)
    found = "eps" if loaded.kind == "latent" and kind != "latent" else loaded.kind
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


__all__ = ["DTYPES", "ModelInfo", "LoadedModel", "compute_dtype", "with_dtype", "load_model",
           "load_checked", "vae_options"]
