"""Training configs and checkpoint files: atomic writes, validated reads, ``load_checkpoint``.

A checkpoint is a dict ``{"format": FORMAT, "version": VERSION, "step", "config", "ema", ...}``
saved by ``torch.save``; a training checkpoint adds ``model``, ``optimizer`` and ``rng`` (everything
``--resume`` needs to continue bit-exactly), an exported one holds the EMA weights alone.
"""
from __future__ import annotations

import dataclasses
import errno
import json
import pickle
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.checks import check_t_min, check_types
from ..core.settings import (count, data_path_setting, dataset_options_setting, device_setting, progress_setting,
                             setting)
from ..data import DATA_KINDS, with_data_path
from ..core.devices import resolve_device
from .nets import PRESETS, build_model
from ..runtime.outputs import check_writable, write_atomic
from ..core.sde import T_MIN, VPSDE

FORMAT = "scoregen-checkpoint"
VERSION = 1
ARCH_DATA = {"unet": "images", "mlp": "vectors"}  # the data each eps-network arch takes (data.DATA_KINDS)


class CheckpointError(ValueError):
    """A file that is not a readable scoregen checkpoint."""


@dataclass
class TrainConfig:
    """Everything that defines a training run; saved as JSON in the run dir and in every checkpoint.

    ``model`` is a ``build_model`` config; ``{}`` means the default for the data set: the preset named
    after it if there is one, else a U-Net for images and an MLP for vectors, sized to the data; a U-Net or an
    MLP given for the other kind of data (``ARCH_DATA``, ``data.DATA_KINDS``) is refused.
    ``sde`` holds ``VPSDE`` keyword arguments. ``t_min``, in (0, 1): training times are
    t ~ U(t_min, 1) (default ``sde.T_MIN``); sampling and likelihoods of the checkpoint use the same t_min.
    ``ema_decay``: the EMA uses ``min(ema_decay, (1 + step) / (10 + step))``, so short runs are not
    dominated by the initial weights. ``amp``: bf16 autocast, on CUDA only. ``device``: None is CUDA if
    available, else CPU. ``sample_every`` / ``ckpt_every``: 0 turns sample grids off / checkpoints only
    at the end. ``batch_size`` is the global batch, split over the processes of a distributed run;
    ``world_size`` is a record, set by ``train``: the number of processes it ran on (the last, if resumed).
    """

    dataset: str = setting("digits", "data set name")
    dataset_options: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    sde: dict = field(default_factory=dict)
    steps: int = setting(10000, "total optimiser steps", parse=count(1))
    batch_size: int = setting(128, "global batch size (split over torchrun's processes)", parse=count(1))
    lr: float = setting(2e-4, "peak AdamW learning rate")
    weight_decay: float = 0.0
    warmup: int = setting(500, "linear warm-up steps", parse=count(0))
    ema_decay: float = setting(0.999, "EMA decay")
    grad_clip: float = setting(1.0, "gradient-norm clip (0: off)")
    t_min: float = setting(T_MIN, "smallest training time")
    seed: int = setting(0, "random seed")
    amp: bool = True
    log_every: int = 50
    sample_every: int = setting(1000, "steps between sample grids (0: off)", parse=count(0))
    ckpt_every: int = setting(1000, "steps between checkpoints (0: at the end only)", parse=count(0))
    out: str = setting("runs/digits", "run directory (default: runs/<dataset>)")
    device: str | None = device_setting()
    world_size: int | None = None

    # Fields a resumed run may change; the others must match the checkpoint's.
    RESUMABLE = ("steps", "log_every", "sample_every", "ckpt_every", "out", "device", "world_size")

    def __post_init__(self):
        check_types(TrainConfig, {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, "config field")
        positive = ("steps", "batch_size", "log_every")
        non_negative = ("warmup", "sample_every", "ckpt_every", "weight_decay", "grad_clip")
        for name in positive + non_negative:
            value, low = getattr(self, name), (1 if name in positive else 0)
            if not value >= low:
                raise ValueError(f"{name} must be >= {low}; got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0; got {self.lr!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1); got {self.ema_decay!r}")
        check_t_min(self.t_min)
        self._check_arch_fits_data()
        if self.world_size is not None and not self.world_size >= 1:
            raise ValueError(f"world_size must be >= 1 or None; got {self.world_size!r}")
        if self.device not in (None, "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or None; got {self.device!r}")

    def _check_arch_fits_data(self):
        """Raise unless the model's arch (if a U-Net or an MLP) takes the data set's kind of data (if known)."""
        preset = PRESETS.get(str(self.model.get("preset")), {})
        arch, data = str(self.model.get("arch", preset.get("arch"))), DATA_KINDS.get(self.dataset)
        if arch in ARCH_DATA and data is not None and ARCH_DATA[arch] != data:
            fits = "; ".join(f"{a} for {kind}: {', '.join(d for d, k in DATA_KINDS.items() if k == kind)}"
                             for a, kind in ARCH_DATA.items())
            want = next(a for a, kind in ARCH_DATA.items() if kind == data)
            raise ValueError(f"model {arch!r} takes {ARCH_DATA[arch]}, and data set {self.dataset!r} holds {data}: "
                             f"use --model {want} ({fits}), or no --model for the data set's default")

    def to_dict(self) -> dict:
        """The config as plain JSON types (tuples become lists), as saved."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        if not isinstance(d, dict):
            raise ValueError(f"a training config must be a JSON object of TrainConfig fields; got a "
                             f"{type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; valid: {', '.join(names)}")
        return cls(**d)


@dataclass(frozen=True)
class TrainRun:
    """``scoregen train``: a TrainConfig assembled from, in increasing precedence, its defaults, a config file,
    the run's checkpoint (``resume``) and the TrainConfig ``fields`` given (the command line's flags), with
    the shortcuts below for its nested ``model``, ``sde`` and ``dataset_options``."""
    config: Path | None = setting(None, "JSON file of TrainConfig fields, e.g. configs/digits.json")
    resume: bool = setting(False, "continue from <out>/ckpt.pt")
    arch: str | None = setting(None, "architecture: unet, mlp, ... (default: the data set's)", flag="--model")
    preset: str | None = setting(None, "model preset, e.g. digits, cifar32, small32, toy")
    vae: Path | None = setting(None, "latent diffusion: an eps-network on the codes of this VAE checkpoint "
                                     "(trained on the same data set)")
    schedule: str | None = setting(None, "noise schedule (default: linear)", choices=("linear", "cosine"))
    dataset_options: dict | None = dataset_options_setting()
    data_path: str | None = data_path_setting()
    progress: bool = progress_setting()
    fields: dict = field(default_factory=dict)

    def train_config(self) -> TrainConfig:
        """The run's TrainConfig (class docstring); ``out`` defaults to ``runs/<dataset>``."""
        fields = {}
        if self.config:
            try:
                fields = json.loads(Path(self.config).read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"--config {self.config} is not valid JSON: {e}") from None
            if not isinstance(fields, dict):
                raise ValueError(f"--config {self.config} must hold a JSON object of TrainConfig fields; got a "
                                 f"{type(fields).__name__}")
        given = dict(self.fields)
        if self.vae and (self.arch or self.preset):
            raise ValueError("--vae trains latent diffusion (arch latent): give no --model or --preset with it")
        if self.arch or self.preset:
            given["model"] = {k: v for k, v in (("arch", self.arch), ("preset", self.preset)) if v}
        if self.vae:  # the config's latent settings (its eps-network) kept, its VAE replaced
            model = fields.get("model", {}) if fields.get("model", {}).get("arch") == "latent" else {}
            given["model"] = {**{k: v for k, v in model.items() if k != "vae"}, "arch": "latent",
                              "vae_checkpoint": str(self.vae)}
        if self.schedule:
            given["sde"] = {"schedule": self.schedule}
        options = with_data_path(self.dataset_options, self.data_path)
        if options:
            given["dataset_options"] = options
        dataset = given.get("dataset", fields.get("dataset", TrainConfig.dataset))
        out = Path(given.setdefault("out", fields.get("out", f"runs/{dataset}")))
        if out.is_file():
            raise NotADirectoryError(errno.ENOTDIR, f"--out {out} is an existing file; --out must be a folder, the "
                                                    "run's (it gets ckpt.pt, log.jsonl, config.json, samples)")
        check_writable(out, folder=True)
        if self.resume:
            fields.update(checkpoint_config(read_checkpoint(out / "ckpt.pt"), out / "ckpt.pt").to_dict())
        return TrainConfig.from_dict({**fields, **given})


def save_checkpoint(state: dict, path) -> Path:
    """Write ``state`` (tagged with FORMAT and VERSION) to ``path`` atomically: a temp file, then ``os.replace``.

    A crash mid-write leaves the previous file at ``path`` untouched; a full disk raises the OSError naming ``path``
    and Ctrl-C a KeyboardInterrupt (not torch's RuntimeError).
    """
    return write_atomic(path, lambda f: torch.save({"format": FORMAT, "version": VERSION, **state}, f))


def read_checkpoint(path) -> dict:
    """The validated checkpoint dict at ``path``, tensors on the CPU.

    Raises FileNotFoundError for a missing file and CheckpointError for a truncated or corrupt file,
    a file of pickled Python objects (not loaded: torch's ``weights_only``), a foreign file (no format tag) or an
    unknown version.
    """
    path = Path(path)
    if path.is_dir():
        hint = f"; did you mean {path / 'ckpt.pt'}?" if (path / "ckpt.pt").is_file() else ""
        raise CheckpointError(f"{path} is a folder, not a checkpoint file{hint}")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with warnings.catch_warnings():  # weights_only's note on a pickle protocol other than torch.save's
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: (?:GLOBAL )?(\S+)", str(e))
        if found is None:
            raise _unreadable(path) from e
        raise CheckpointError(f"{path} holds Python objects ({found[1]}), which are not loaded, for safety; a "
                              "scoregen checkpoint holds only tensors and plain values") from None
    except Exception as e:  # torch reports truncation and foreign pickles with many exception types
        raise _unreadable(path) from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a scoregen checkpoint (no format tag {FORMAT!r})")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {ckpt.get('version')!r}; this scoregen reads {VERSION}")
    return ckpt


def _unreadable(path) -> CheckpointError:
    return CheckpointError(f"{path} is not a readable checkpoint: truncated, corrupt or not written by torch.save")


def checkpoint_config(ckpt: dict, path) -> TrainConfig:
    """The TrainConfig of the checkpoint ``ckpt`` read from ``path``; one that this version refuses (an older
    version's, trained at t_min = 0, say) is a CheckpointError naming the file."""
    try:
        return TrainConfig.from_dict(ckpt["config"])
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path} holds a training config that is no longer valid ({e}); retrain "
                              "the model with a valid value (scoregen train --help)") from None


def load_checkpoint(path, device=None) -> tuple[torch.nn.Module, VPSDE, TrainConfig]:
    """``(model, sde, config)`` from a training or exported checkpoint: the EMA weights, in eval mode,
    with gradients off, on ``device`` (None: CUDA if available, else CPU)."""
    ckpt = read_checkpoint(path)
    config = checkpoint_config(ckpt, path)
    model = build_model(config.model)
    model.load_state_dict(ckpt["ema"])
    model = model.to(resolve_device(device)).eval().requires_grad_(False)
    return model, VPSDE(**config.sde), config


def export_ema(src, dst) -> Path:
    """Write the EMA weights and config of checkpoint ``src`` alone to ``dst`` (a shippable checkpoint).
    ``dst`` must be another file: overwriting a training checkpoint would lose what ``--resume`` needs."""
    if Path(dst).exists() and Path(src).exists() and Path(dst).samefile(src):
        raise ValueError(f"export destination {dst} is the source checkpoint itself; choose another file")
    ckpt = read_checkpoint(src)
    return save_checkpoint({k: ckpt[k] for k in ("step", "config", "ema")}, dst)
