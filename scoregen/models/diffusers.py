"""A local diffusers folder as an eps-model: a ``UNet2DModel`` and its scheduler's betas (diffusers imported here).

The folder is a pipeline (``model_index.json``, ``unet/``, ``scheduler/``) or a bare UNet folder (``config.json``
and weights) with its scheduler config beside it (``scheduler_config.json``, or a sibling ``scheduler/``).
The mapping to scoregen's conventions:

- schedule: the scheduler's ``alphas_cumprod[k]`` (from ``linear``, ``scaled_linear``, ``squaredcos_cap_v2`` or
  ``trained_betas``, as diffusers computes them) is ``alpha_bar((k + 1) / N)`` of
  ``VPSDE.from_ddpm_betas(1 - alphas_cumprod[k] / alphas_cumprod[k - 1])``: exact at the knots, log-linear
  between them;
- time: timestep k is t = (k + 1) / N; our t calls the UNet at the fractional timestep N t - 1
  (``adapters.wrap(time="index")``), the integer k at the knots;
- prediction: ``prediction_type`` epsilon, v_prediction and sample become eps (``adapters``); a learned variance
  (``variance_type`` learned / learned_range: 2C output channels) is dropped, the samplers use their own;
- t_min = 1 / N, the smallest timestep.

Not supported, each a clear error: conditional UNets (``UNet2DConditionModel``, class embeddings), latent pipelines
(a VAE in ``model_index.json``), learned or Fourier time embeddings, schedulers without betas (VE / Karras). The
schedulers' own sampling tweaks (``clip_sample``, ``thresholding``) are not applied: every sampler here follows
its equation; ``details`` reports them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .adapters import Wrapped, wrap
from ..core.checks import check_range, check_types
from ..core.sde import VPSDE

PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}
CONDITIONING = ("vae", "vqvae", "text_encoder", "image_encoder", "transformer")  # model_index keys we cannot run


class _UNetCall(torch.nn.Module):
    """``unet(x, k).sample``, its first ``channels`` channels (a learned variance's half dropped)."""

    def __init__(self, unet: torch.nn.Module, channels: int):
        super().__init__()
        self.unet, self.channels = unet, channels

    def forward(self, x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return self.unet(x, k, return_dict=False)[0][:, :self.channels]


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object; got a {type(data).__name__}")
    return data


def _listing(root: Path) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    return ", ".join(names) or "nothing"


def _find(root: Path) -> tuple[Path, Path]:
    """The UNet folder and the scheduler config of the diffusers folder ``root``."""
    index = root / "model_index.json"
    if index.is_file():
        found = [key for key in CONDITIONING if key in _json(index)]
        if found:
            raise ValueError(f"{root} is a pipeline with {', '.join(found)} (model_index.json): a latent or "
                             "conditional pipeline; scoregen runs unconditional pixel-space UNet2DModel pipelines "
                             "(DDPMPipeline, DDIMPipeline)")
    unet = root / "unet" if (root / "unet" / "config.json").is_file() else root
    if not (unet / "config.json").is_file():
        raise ValueError(f"{root} is a folder, not a checkpoint file, and not a diffusers folder: it holds no UNet, "
                         f"neither unet/config.json nor config.json (found: {_listing(root)})")
    for sched in (root / "scheduler" / "scheduler_config.json", unet / "scheduler_config.json",
                  unet.parent / "scheduler" / "scheduler_config.json"):
        if sched.is_file():
            return unet, sched
    raise ValueError(f"{root} holds no scheduler config (scheduler/scheduler_config.json, or scheduler_config.json "
                     f"beside the UNet's config.json): its betas are the model's schedule (found: {_listing(root)})")


def _check_unet(config: dict, where: Path) -> None:
    name = config.get("_class_name")
    if name != "UNet2DModel":
        kind = "a conditional UNet" if "Condition" in str(name) else "not a UNet2DModel"
        raise ValueError(f"{where} holds {name or 'a model without _class_name'} ({kind}); scoregen runs "
                         "unconditional UNet2DModel networks")
    if config.get("num_class_embeds") is not None or config.get("class_embed_type") is not None:
        raise ValueError(f"{where}: the UNet2DModel is class-conditional (num_class_embeds="
                         f"{config.get('num_class_embeds')}, class_embed_type={config.get('class_embed_type')!r}); "
                         "scoregen runs unconditional networks")
    embedding = config.get("time_embedding_type", "positional")
    if embedding != "positional":
        raise ValueError(f"{where}: time_embedding_type {embedding!r} is not supported (only 'positional', which takes "
                         "fractional timesteps; 'fourier' is a VE model, 'learned' an integer-only table)")
    if config.get("sample_size") is None:
        raise ValueError(f"{where}: the UNet's config has no sample_size, so the sample shape is unknown")


class _SchedulerFields:
    """The scheduler config's fields that make the schedule and the prediction, by type (``check_types``)."""
    num_train_timesteps: int
    beta_start: float
    beta_end: float
    beta_schedule: str
    trained_betas: list | None
    prediction_type: str


# their ranges (open intervals): N > 1 timesteps (t_min = 1 / N < 1), betas in (0, 1)
SCHEDULER_RANGES = {"num_train_timesteps": (1, math.inf), "beta_start": (0.0, 1.0), "beta_end": (0.0, 1.0)}


def _check_scheduler_fields(config: dict, where: Path) -> None:
    """Raise a ValueError naming ``where`` and the field unless the fields of ``_SchedulerFields`` present in the
    scheduler config have their types and ranges (``SCHEDULER_RANGES``; every trained beta in (0, 1))."""
    check_types(_SchedulerFields, config, f"{where}: field")
    try:
        for name, (lo, hi) in SCHEDULER_RANGES.items():
            if name in config:
                check_range(name, config[name], lo, hi)
        for i, beta in enumerate(config.get("trained_betas") or ()):
            check_range(f"trained_betas[{i}]", beta, 0.0, 1.0)
    except ValueError as e:
        raise ValueError(f"{where}: field {e}") from None


def _scheduler(config: dict, where: Path):
    import diffusers

    _check_scheduler_fields(config, where)
    name = config.get("_class_name")
    cls = getattr(diffusers, str(name), None)
    try:
        sched = cls.from_config(config) if isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin) \
            else None
    except (ValueError, NotImplementedError) as e:  # an option of its own it refuses (an unknown beta_schedule)
        raise ValueError(f"{where}: {name} refuses this config: {e}") from None
    if sched is None or not hasattr(sched, "alphas_cumprod"):
        raise ValueError(f"{where}: scheduler {name!r} is not supported; scoregen needs a DDPM-family scheduler with "
                         "betas (DDPMScheduler, DDIMScheduler, PNDMScheduler, DPMSolverMultistepScheduler, "
                         "EulerDiscreteScheduler, UniPCMultistepScheduler, ...)")
    return sched


def load_folder(path, device: torch.device) -> tuple[Wrapped, VPSDE, tuple, dict]:
    """``(eps_model, sde, shape, details)`` of the diffusers folder ``path`` (module docstring), the network
    on ``device`` in eval mode with gradients off."""
    root = Path(path)
    try:
        import diffusers
    except ImportError:
        raise ValueError(f"{root} is a diffusers folder and diffusers is not installed: pip install -e "
                         "'.[diffusers]'") from None
    unet_dir, sched_path = _find(root)
    config = _json(unet_dir / "config.json")
    _check_unet(config, unet_dir / "config.json")
    sched = _scheduler(_json(sched_path), sched_path)
    prediction = sched.config.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise ValueError(f"{sched_path}: prediction_type {prediction!r} is not supported; supported: "
                         f"{', '.join(PREDICTION_TYPES)}")
    channels, out = config.get("in_channels", 3), config.get("out_channels", 3)
    variance = sched.config.get("variance_type")
    if out != channels and not (out == 2 * channels and str(variance).startswith("learned")):
        raise ValueError(f"{unet_dir}: the UNet maps {channels} channels to {out}; it must return {channels} "
                         f"(or {2 * channels} with a learned variance_type; the scheduler's is {variance!r})")
    # safetensors if the folder has them, else the .bin weights (torch.load, weights_only), without diffusers' note
    # on falling back to unsafe serialisation
    unet = diffusers.UNet2DModel.from_pretrained(unet_dir, low_cpu_mem_usage=False,
                                                 use_safetensors=any(unet_dir.glob("*.safetensors")))
    unet = unet.to(device).eval().requires_grad_(False)
    ac = sched.alphas_cumprod.to(torch.float64)
    try:
        sde = VPSDE.from_ddpm_betas(1 - ac / torch.cat([ac.new_ones(1), ac[:-1]]))
    except ValueError:
        raise ValueError(f"{sched_path}: the scheduler's alphas_cumprod give betas outside (0, 1), which scoregen "
                         "cannot run (a zero terminal SNR, rescale_betas_zero_snr, ends at beta = 1)") from None
    size = config["sample_size"]
    shape = (channels, *((size, size) if isinstance(size, int) else size))
    model = wrap(_UNetCall(unet, channels), sde, prediction=PREDICTION_TYPES[prediction], time="index")
    details = dict(unet=str(unet_dir), scheduler=sched.__class__.__name__, prediction_type=prediction,
                   num_train_timesteps=len(ac), beta_schedule=sched.config.get("beta_schedule"),
                   variance_type=variance, clip_sample=sched.config.get("clip_sample"),
                   thresholding=sched.config.get("thresholding"))
    return model, sde, shape, details


__all__ = ["load_folder", "PREDICTION_TYPES"]
