"""The training loop: denoising score matching for eps-networks, AdamW, warm-up, clipping, EMA, resume.

One step: draw a batch x0 of the training set, ``loss = loss_fn(x0, generator=)``, AdamW step, EMA update.
``loss_fn`` is the model's own ``loss(x0, generator=)`` when it has one (the VAE's negative ELBO), else
``denoising_loss``; likewise sample grids use the model's own ``sample(n, generator=)`` when it has one.
All randomness (batches, t, eps) comes from one ``torch.Generator`` seeded from ``config.seed`` and the
rank; its state, the global RNG state (dropout), the weights, the EMA and the optimiser state are in
every checkpoint, so a resumed run continues bit-exactly.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from .checkpoint import TrainConfig, read_checkpoint, save_checkpoint
from .data import load_dataset
from .devices import resolve_device
from .nets import PRESETS, build_model
from .nets.unet import layout_for
from .outputs import sample_png, write_atomic
from .sde import T_MIN, VPSDE


def denoising_loss(eps_model, x0: torch.Tensor, *, generator: torch.Generator, sde: VPSDE,
                   t_min: float = T_MIN) -> torch.Tensor:
    """Ho et al. (2020) eq. 14 in continuous time: ``E ||eps_model(alpha_t x0 + sigma_t eps, t) - eps||^2``,
    t ~ U(t_min, 1), eps ~ N(0, I), averaged over the batch and the dimensions."""
    t = t_min + (1 - t_min) * torch.rand(x0.shape[0], generator=generator, device=x0.device, dtype=x0.dtype)
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = sde.perturb(x0, t, eps)
    return (eps_model(x_t, t).float() - eps).pow(2).mean()


@dataclass
class TrainResult:
    model: torch.nn.Module    # the trained weights, in train mode
    ema: torch.nn.Module      # their EMA, in eval mode
    step: int
    loss: float | None        # mean loss over the last logging interval (None if no step was run)


def model_config_for(model: dict, dataset: str, shape: tuple[int, ...]) -> dict:
    """Complete a ``build_model`` config for data set ``dataset`` of one-sample ``shape``.

    ``{}`` becomes the preset named after the data set if there is one, else a U-Net (images) or an MLP
    (vectors). Without a preset, a U-Net or MLP gets its size (``in_channels`` and ``image_size``, or
    ``dim``) from ``shape``, and a U-Net the levels and attention resolutions that exist at that size
    (``unet.layout_for``) unless given; a bare ``{"arch": name}`` of another arch (one with presets of its
    own, the VAE) gets the preset named after the data set.
    """
    if not model:
        model = {"preset": dataset} if dataset in PRESETS else {"arch": "unet" if len(shape) == 3 else "mlp"}
    if "preset" in model:
        return dict(model)
    if model.get("arch") == "unet":
        layout = layout_for(shape[-1], model.get("ch_mult"))
        return {"in_channels": shape[0], "image_size": shape[-1], **layout, **model}
    if model.get("arch") == "mlp":
        return {"dim": shape[0], **model}
    return {**model, "preset": dataset} if set(model) == {"arch"} else dict(model)


def _rank_and_world(rank, world_size) -> tuple[int, int]:
    dist = torch.distributed
    initialised = dist.is_available() and dist.is_initialized()
    rank = rank if rank is not None else dist.get_rank() if initialised else 0
    world_size = world_size if world_size is not None else dist.get_world_size() if initialised else 1
    return rank, world_size


def _check_resumable(saved: dict, config: TrainConfig):
    changed = [k for k, v in config.to_dict().items() if k not in TrainConfig.RESUMABLE and saved.get(k) != v]
    if changed:
        raise ValueError(f"cannot resume: {', '.join(changed)} differ from the checkpoint's config "
                         f"(only {', '.join(TrainConfig.RESUMABLE)} may change)")


@torch.no_grad()
def _update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float):
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1 - decay)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


@torch.no_grad()
def save_samples(model, sde: VPSDE, shape: tuple[int, ...], path, *, seed: int = 0):
    """Draw samples of ``model`` (its own ``sample(n, generator=)``, else 50 DDIM steps) and save a PNG:
    an 8x8 grid of images, or a scatter plot of 2000 points (``outputs.sample_png``)."""
    device = next(model.parameters()).device
    g = torch.Generator(device).manual_seed(seed)
    n = 64 if len(shape) == 3 else 2000
    if hasattr(model, "sample"):
        x = model.sample(n, generator=g)
    else:
        from .samplers import sample
        x = sample(model, sde, (n, *shape), method="ddim", steps=50, generator=g).x
    write_atomic(path, sample_png(x))


def _truncate_log(path: Path, step: int):
    """Drop the log lines written after ``step`` (by a run that crashed after its last checkpoint), and
    a partial last line (a run killed while writing it)."""
    if path.exists():
        lines = path.read_text().splitlines(keepends=True)
        if lines and not lines[-1].endswith("\n"):
            lines.pop()
        write_atomic(path, "".join(ln for ln in lines if json.loads(ln)["step"] <= step).encode())


class Interrupted(KeyboardInterrupt):
    """Training stopped by Ctrl-C (SIGINT) at a step boundary, after saving a checkpoint there."""


@contextmanager
def _sigint_at_step_end():
    """While training, Ctrl-C sets ``flag["set"]`` (the loop saves a checkpoint at the end of the step and
    raises ``Interrupted``); a second Ctrl-C interrupts at once. Only the main thread can take signals:
    elsewhere Ctrl-C behaves as usual."""
    flag = {"set": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        if flag["set"]:
            raise KeyboardInterrupt
        flag["set"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class _State:
    """What a training checkpoint holds besides the config: step, weights, EMA, optimiser, RNG states."""
    model: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0

    def state_dict(self) -> dict:
        rng = {"generator": self.generator.get_state(), "torch": torch.get_rng_state()}
        if self.generator.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.generator.device)
        return {"step": self.step, "model": self.model.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.opt.state_dict(), "rng": rng}

    def load_state_dict(self, saved: dict):
        self.step = saved["step"]
        self.model.load_state_dict(saved["model"])
        self.ema.load_state_dict(saved["ema"])
        self.opt.load_state_dict(saved["optimizer"])
        self.generator.set_state(saved["rng"]["generator"])
        torch.set_rng_state(saved["rng"]["torch"])
        if self.generator.device.type == "cuda" and "cuda" in saved["rng"]:
            torch.cuda.set_rng_state(saved["rng"]["cuda"], self.generator.device)


def train(config: TrainConfig, *, resume: bool = False, rank: int | None = None, world_size: int | None = None,
          progress: bool = True) -> TrainResult:
    """Train ``config``'s model on its data set; checkpoints, samples, ``log.jsonl`` and ``config.json``
    go to ``config.out`` (rank 0 only). ``resume`` continues from ``config.out/ckpt.pt``.

    ``rank`` / ``world_size`` default to torch.distributed's when it is initialised, else 0 / 1. The
    initial weights are drawn after ``torch.manual_seed(seed)``; the generator and the global RNG
    (dropout) are then seeded with ``seed * world_size + rank``. Raises FloatingPointError naming the step
    when the loss or gradient stops being finite; the last checkpoint written before is left intact.
    Ctrl-C (SIGINT, main thread) finishes the step, saves a checkpoint and raises ``Interrupted``.
    """
    from tqdm.auto import tqdm

    rank, world_size = _rank_and_world(rank, world_size)
    out, device, writer = Path(config.out), resolve_device(config.device), rank == 0
    ckpt_path, log_path = out / "ckpt.pt", out / "log.jsonl"
    data = load_dataset(config.dataset, **config.dataset_options)
    config = dataclasses.replace(config, model=model_config_for(config.model, config.dataset, data.shape))
    if resume:
        saved = read_checkpoint(ckpt_path)
        _check_resumable(saved["config"], config)
        if saved["step"] > config.steps:
            raise ValueError(f"cannot resume to steps={config.steps}: {ckpt_path} is already at step "
                             f"{saved['step']}; give steps > {saved['step']} (--steps) to train on")
    elif ckpt_path.exists():
        raise FileExistsError(f"{ckpt_path} exists: pass resume=True (--resume) or choose another out dir")

    x_train, sde = data.train.to(device), VPSDE(**config.sde)
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = build_model(config.model).to(device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    state = _State(model, ema, opt, torch.Generator(device).manual_seed(config.seed * world_size + rank))
    torch.manual_seed(config.seed * world_size + rank)  # dropout
    if resume:
        state.load_state_dict(saved)
    loss_fn = getattr(model, "loss", None) or partial(denoising_loss, model, sde=sde, t_min=config.t_min)
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "config.json", (json.dumps(config.to_dict(), indent=2) + "\n").encode())
        _truncate_log(log_path, state.step)

    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.amp and device.type == "cuda")
    max_norm = config.grad_clip or math.inf
    first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first non-finite step, kept on device
    loss_sum, n_sum, loss = torch.zeros((), device=device), 0, None
    bar = tqdm(total=config.steps, initial=state.step, disable=not (progress and writer), dynamic_ncols=True)
    t_last, step_last = time.perf_counter(), state.step
    with _sigint_at_step_end() as stop:
        while state.step < config.steps:
            for group in opt.param_groups:
                group["lr"] = config.lr * min(1.0, (state.step + 1) / max(config.warmup, 1))
            idx = torch.randint(x_train.shape[0], (config.batch_size,), generator=state.generator, device=device)
            with autocast:
                batch_loss = loss_fn(x_train[idx], generator=state.generator)
            opt.zero_grad(set_to_none=True)
            batch_loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            opt.step()
            _update_ema(ema, model, min(config.ema_decay, (1 + state.step) / (10 + state.step)))
            state.step += 1
            step, last = state.step, state.step == config.steps
            bar.update(1)
            finite = torch.isfinite(batch_loss.detach()) & torch.isfinite(grad_norm)
            first_bad = torch.where(~finite & (first_bad < 0), step, first_bad)
            loss_sum += batch_loss.detach()
            n_sum += 1
            interrupted = stop["set"]
            do_ckpt = last or interrupted or (config.ckpt_every and step % config.ckpt_every == 0)
            if not (do_ckpt or step % config.log_every == 0):
                continue
            if first_bad >= 0:
                bar.close()
                raise FloatingPointError(f"loss or gradient is not finite at step {int(first_bad)}; the last good "
                                         f"checkpoint, if one was written, is {ckpt_path}")
            loss = float(loss_sum) / n_sum
            rate = (step - step_last) / (time.perf_counter() - t_last)
            loss_sum.zero_()
            n_sum, step_last = 0, step
            bar.set_postfix(loss=f"{loss:.4f}")
            if writer:
                with open(log_path, "a") as f:
                    f.write(json.dumps({"step": step, "loss": loss, "lr": opt.param_groups[0]["lr"],
                                        "grad_norm": float(grad_norm), "steps_per_s": rate}) + "\n")
                if do_ckpt:
                    save_checkpoint({"config": config.to_dict(), **state.state_dict()}, ckpt_path)
                if config.sample_every and (step % config.sample_every == 0 or last):
                    save_samples(ema, sde, data.shape, out / f"samples_{step:07d}.png", seed=config.seed)
            if interrupted and not last:
                bar.close()
                raise Interrupted(f"interrupted at step {step}" + (f"; checkpoint {ckpt_path}, continue with --resume"
                                                                   if writer else ""))
            t_last = time.perf_counter()  # steps/s counts training steps only
        bar.close()
    return TrainResult(model, ema, state.step, loss)
