"""The training loop: denoising score matching for eps-networks, AdamW, warm-up, clipping, EMA, resume.

One step: the next ``batch_size`` items x0 of a seeded permutation of the training set (a new one each
epoch), ``loss = loss_fn(x0, generator=)``, AdamW step, EMA update. By the model's kind (``core.flow.kind_of``),
``loss_fn`` is a VAE's own ``loss(x0, generator=, rows=)`` (its negative ELBO), else ``denoising_loss`` (for
latent diffusion, ``nets.latent``, on the standardised VAE codes of x0, drawn from the same generator);
sample grids use the model's own ``sample(n, generator=)`` when it has one (a VAE's). The noise (t, eps) comes from
one ``torch.Generator`` seeded ``config.seed``; its state, the global RNG state (dropout), the weights, the
EMA and the optimiser state are in every checkpoint, so a resumed run continues bit-exactly.

Under torchrun (``scoregen.distributed``) the model is wrapped in DistributedDataParallel and
``batch_size`` is the global batch: rank r of W computes rows ``[r B/W, (r + 1) B/W)`` of it. Every rank
draws the same permutation and the noise of the whole batch (the same generator), so W processes take the
steps one process takes, up to the rounding of the gradient's all-reduce; only dropout masks are drawn per
rank. Rank 0 alone logs, draws sample grids and writes checkpoints, which any world size can resume.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import signal
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch

from ..runtime import distributed
from .checkpoint import TrainConfig, load_checkpoint, read_checkpoint, save_checkpoint
from ..data import load_dataset
from ..core.devices import resolve_device
from ..core.flow import kind_of
from .nets import PRESETS, LatentDiffusion, build_model
from .nets.unet import layout_for
from ..runtime.outputs import sample_png, write_atomic
from ..core.sde import T_MIN, VPSDE


def denoising_loss(eps_model, x0: torch.Tensor, *, generator: torch.Generator, sde: VPSDE,
                   t_min: float = T_MIN, rows: slice = slice(None)) -> torch.Tensor:
    """Ho et al. (2020) eq. 14 in continuous time: ``E ||eps_model(alpha_t x0 + sigma_t eps, t) - eps||^2``,
    t ~ U(t_min, 1), eps ~ N(0, I), averaged over the batch ``x0[rows]`` and the dimensions. t and eps are
    drawn for all of x0, so that a batch split over processes (``rows``) draws the same noise."""
    t = t_min + (1 - t_min) * torch.rand(x0.shape[0], generator=generator, device=x0.device, dtype=x0.dtype)
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    t, eps = t[rows], eps[rows]
    x_t = sde.perturb(x0[rows], t, eps)
    return (eps_model(x_t, t).float() - eps).pow(2).mean()


class Objective(torch.nn.Module):
    """The training loss of ``model`` as a module, which DistributedDataParallel wraps: ``forward(x0,
    generator, rows)`` is a VAE's own ``loss``, else ``denoising_loss`` (on a latent model's codes)."""

    def __init__(self, model: torch.nn.Module, sde: VPSDE, t_min: float):
        super().__init__()
        self.model, self.sde, self.t_min = model, sde, t_min

    def forward(self, x0: torch.Tensor, generator: torch.Generator, rows: slice) -> torch.Tensor:
        kind = kind_of(self.model)
        if kind == "vae":
            return self.model.loss(x0, generator, rows=rows)
        if kind == "latent":  # the data's codes (drawn for all of x0, like the noise)
            x0 = self.model.encode(x0, generator)
        return denoising_loss(self.model, x0, generator=generator, sde=self.sde, t_min=self.t_min, rows=rows)


class Batches:
    """The global batches: epoch e is a permutation of the ``n`` training items seeded ``chunk_seed(seed, e)``
    (computed once per epoch, on ``device``), cut into ``n // batch_size`` batches; the tail is dropped."""

    def __init__(self, n: int, batch_size: int, seed: int, device: torch.device):
        if batch_size > n:
            raise ValueError(f"batch_size must be at most the {n} training items; got {batch_size}")
        self.n, self.batch_size, self.seed, self.device = n, batch_size, seed, device
        self.per_epoch, self.epoch, self.perm = n // batch_size, None, None

    def __call__(self, step: int) -> torch.Tensor:
        """The training-set indices of the batch of step ``step`` (0-based)."""
        epoch, b = divmod(step, self.per_epoch)
        if epoch != self.epoch:
            g = torch.Generator().manual_seed(distributed.chunk_seed(self.seed, epoch))
            self.epoch, self.perm = epoch, torch.randperm(self.n, generator=g).to(self.device)
        return self.perm[b * self.batch_size:(b + 1) * self.batch_size]


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
    if model.get("arch") == "latent":
        return _latent_config(model, shape)
    return {**model, "preset": dataset} if set(model) == {"arch"} else dict(model)


LATENT_NET = {"arch": "mlp", "hidden": 256, "depth": 4, "norm": True}  # latent diffusion's default eps-network


def _latent_config(model: dict, shape: tuple[int, ...]) -> dict:
    """A latent diffusion config completed from its ``vae_checkpoint``: the VAE's build config (``vae``), checked
    to decode to the data's ``shape``, and the eps-network on its codes (``net``, default ``LATENT_NET``)."""
    path = model.get("vae_checkpoint")
    if not isinstance(path, str):
        raise ValueError(f"a latent diffusion model needs vae_checkpoint, the path of a VAE checkpoint (--vae); "
                         f"got {path!r}")
    vae_config = model.get("vae") or read_checkpoint(path)["config"]["model"]
    vae = build_model(vae_config)
    is_vae = kind_of(vae) == "vae"
    if not is_vae or tuple(vae.shape) != tuple(shape):
        what = f"decodes to samples of shape {tuple(vae.shape)}" if is_vae else "holds no VAE"
        raise ValueError(f"vae_checkpoint {path} {what}; the data set's samples have shape {tuple(shape)}")
    net = model.get("net") or {}
    net = model_config_for(net if "arch" in net or "preset" in net else {**LATENT_NET, **net}, "", (vae.z_dim,))
    return {"codes": "draw", **model, "vae": vae_config, "net": net}


def _init_latent(model: LatentDiffusion, config: TrainConfig, x_train: torch.Tensor, device: torch.device):
    """A new latent diffusion run: the VAE's EMA weights from ``vae_checkpoint`` and the standardisation of the
    training set's codes (``LatentDiffusion.fit_standardisation``, its draws seeded ``config.seed``)."""
    vae, _, _ = load_checkpoint(config.model["vae_checkpoint"], device=device)
    model.vae.load_state_dict(vae.state_dict())
    model.fit_standardisation(x_train, torch.Generator(device).manual_seed(config.seed))


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
    """Draw samples of ``model`` (its own ``sample(n, generator=)`` if it has one, as a VAE has: not a kind test,
    any module that draws its own samples does; else 50 DDIM steps) and save a PNG:
    an 8x8 grid of images, or a scatter plot of 2000 points (``outputs.sample_png``); ``shape``: the data's."""
    device = next(model.parameters()).device
    g = torch.Generator(device).manual_seed(seed)
    n = 64 if len(shape) == 3 else 2000
    if callable(getattr(model, "sample", None)):
        x = model.sample(n, generator=g)
    else:
        from ..samplers import sample
        x = sample(model, sde, (n, *model.shape), method="ddim", steps=50, generator=g).x
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


def _rng_state(device: torch.device) -> dict:
    """The global RNG states that dropout draws from: the CPU's, and the CUDA device's when on one."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device):
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@dataclass
class _State:
    """What a training checkpoint holds besides the config: step, weights, EMA, optimiser, RNG states
    (``rng["ranks"]``: every rank's dropout RNG, in a distributed run)."""
    model: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0

    def state_dict(self) -> dict:
        """Collective in a distributed run (every rank's RNG state is gathered): call it on every rank."""
        own = _rng_state(self.generator.device)
        rng = {"generator": self.generator.get_state(), **own}
        if distributed.world_size() > 1:
            rng["ranks"] = distributed.all_gather(own, "the RNG states of a checkpoint")
        return {"step": self.step, "world_size": distributed.world_size(), "model": self.model.state_dict(),
                "ema": self.ema.state_dict(), "optimizer": self.opt.state_dict(), "rng": rng}

    def load_state_dict(self, saved: dict, seed: int):
        """Restore ``saved``; a checkpoint of another world size reseeds each rank's dropout RNG from
        ``(seed, world size, rank, step)`` (the rest of the state does not depend on the world size)."""
        self.step = saved["step"]
        self.model.load_state_dict(saved["model"])
        self.ema.load_state_dict(saved["ema"])
        self.opt.load_state_dict(saved["optimizer"])
        self.generator.set_state(saved["rng"]["generator"])
        rank, world = distributed.rank(), distributed.world_size()
        ranks = saved["rng"].get("ranks", [saved["rng"]])
        if len(ranks) == world:
            _set_rng_state(ranks[rank], self.generator.device)
        else:
            torch.manual_seed(distributed.chunk_seed(seed * world + rank, self.step))


def _agree(loss_sum: torch.Tensor, first_bad: torch.Tensor, stop: bool) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """At a logging step of a distributed run: the mean loss sum over the ranks, the first non-finite step
    of any rank and whether any rank was interrupted (one all-reduce each; each rank's own values alone)."""
    if distributed.world_size() == 1:
        return loss_sum, first_bad, stop
    dist, never = torch.distributed, torch.iinfo(torch.long).max
    loss_sum, bad = loss_sum.clone(), torch.where(first_bad < 0, never, first_bad)
    flag = torch.tensor(int(stop), device=first_bad.device)
    dist.all_reduce(loss_sum)
    dist.all_reduce(bad, op=dist.ReduceOp.MIN)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return loss_sum / distributed.world_size(), torch.where(bad == never, -1, bad), bool(flag)


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train ``config``'s model on its data set; checkpoints, samples, ``log.jsonl`` and ``config.json``
    go to ``config.out`` (rank 0 only). ``resume`` continues from ``config.out/ckpt.pt``, at any world size.

    Under torch.distributed (initialised, e.g. by ``distributed.init`` under torchrun) this is one of W
    data-parallel processes of one run (module docstring); the config records W (``world_size``). The
    initial weights are drawn after ``torch.manual_seed(seed)``; the noise generator is seeded ``seed``,
    and dropout's global RNG ``seed * W + rank``. Raises FloatingPointError naming the step when the loss
    or gradient stops being finite; the last checkpoint written before is left intact. Ctrl-C (SIGINT,
    main thread) finishes the step (in a distributed run: the step of the next log line), saves a
    checkpoint and raises ``Interrupted``.
    """
    from tqdm.auto import tqdm

    rank, world_size = distributed.rank(), distributed.world_size()
    out, device, writer = Path(config.out), resolve_device(config.device), rank == 0
    if config.batch_size % world_size:
        raise ValueError(f"batch_size is the global batch, split over the {world_size} processes: it must be a "
                         f"multiple of {world_size}; got {config.batch_size}")
    ckpt_path, log_path = out / "ckpt.pt", out / "log.jsonl"
    data = load_dataset(config.dataset, **config.dataset_options)
    config = dataclasses.replace(config, model=model_config_for(config.model, config.dataset, data.shape),
                                 world_size=world_size)
    if resume:
        saved = read_checkpoint(ckpt_path)
        _check_resumable(saved["config"], config)
        if saved["step"] > config.steps:
            raise ValueError(f"cannot resume to steps={config.steps}: {ckpt_path} is already at step "
                             f"{saved['step']}; give steps > {saved['step']} (--steps) to train on")
    elif ckpt_path.exists():
        raise FileExistsError(f"{ckpt_path} exists: pass resume=True (--resume) or choose another out dir")

    x_train, sde = data.train.to(device), VPSDE(**config.sde)
    batches = Batches(x_train.shape[0], config.batch_size, config.seed, device)
    local = config.batch_size // world_size
    rows = slice(rank * local, (rank + 1) * local)
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = build_model(config.model).to(device)
    if kind_of(model) == "latent" and not resume:
        _init_latent(model, config, x_train, device)
    ema = copy.deepcopy(model).eval().requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    state = _State(model, ema, opt, torch.Generator(device).manual_seed(config.seed))
    torch.manual_seed(config.seed * world_size + rank)  # dropout
    if resume:
        state.load_state_dict(saved, config.seed)
    objective = Objective(model, sde, config.t_min)
    if world_size > 1:
        objective = torch.nn.parallel.DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None)
    if writer:
        out.mkdir(parents=True, exist_ok=True)
        write_atomic(out / "config.json", (json.dumps(config.to_dict(), indent=2) + "\n").encode())
        _truncate_log(log_path, state.step)

    if writer and config.warmup >= config.steps:  # rank 0 alone, as it logs
        warnings.warn(f"warmup {config.warmup} >= steps {config.steps}: the learning rate rises for the whole run and "
                      f"never holds at its peak lr {config.lr:g}; give a warmup below steps (--warmup)", stacklevel=2)
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
            with autocast:
                batch_loss = objective(x_train[batches(state.step)], state.generator, rows)
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
            ckpt_step = last or (config.ckpt_every and step % config.ckpt_every == 0)
            synced = ckpt_step or step % config.log_every == 0
            if world_size == 1:
                interrupted = stop["set"]
            elif synced:
                loss_sum, first_bad, interrupted = _agree(loss_sum, first_bad, stop["set"])
            else:
                interrupted = False
            do_ckpt = ckpt_step or interrupted
            if not (do_ckpt or synced):
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
            checkpoint = {"config": config.to_dict(), **state.state_dict()} if do_ckpt else None
            if writer:
                with open(log_path, "a") as f:
                    f.write(json.dumps({"step": step, "loss": loss, "lr": opt.param_groups[0]["lr"],
                                        "grad_norm": float(grad_norm), "steps_per_s": rate}) + "\n")
                if do_ckpt:
                    save_checkpoint(checkpoint, ckpt_path)
                if config.sample_every and (step % config.sample_every == 0 or last):
                    save_samples(ema, sde, data.shape, out / f"samples_{step:07d}.png", seed=config.seed)
            if interrupted and not last:
                bar.close()
                raise Interrupted(f"interrupted at step {step}" + (f"; checkpoint {ckpt_path}, continue with --resume"
                                                                   if writer else ""))
            t_last = time.perf_counter()  # steps/s counts training steps only
        bar.close()
    distributed.barrier()  # the last checkpoint is on disk before any rank goes on (and reads it)
    return TrainResult(model, ema, state.step, loss)
