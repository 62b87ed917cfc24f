"""The ``scoregen`` command. Each subcommand is an ``_add_X(subparsers)`` / ``_run_X(args)`` pair,
registered in ``COMMANDS``; heavy imports happen inside ``_run_X`` so that ``--help`` is instant.

A user error (a bad argument, a missing or unreadable file, a destination that cannot be written) is one
line on stderr, ``scoregen: error: <message>``, and exit status 2; a failure of the machine (a full disk)
or of the run (a diverged loss) is one line and status 1; Ctrl-C is one line and status 130. ``--debug``
(or ``SCOREGEN_DEBUG=1``) shows the full traceback instead. Every destination is checked before any work.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from pathlib import Path

MACHINE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO)  # OSErrors of the machine, not of the user's input


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (no usage block), exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _count(low: int):
    """An argparse type: an integer >= ``low``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}; got {text!r}")
        return value
    return parse


def _add_dataset_options(p):
    p.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                   help="data set loader option, e.g. mixture=ring8 or size=32 (repeatable)")
    p.add_argument("--data-path", help="the folder or .npz file of --dataset folder|npz (the loader's path)")


def dataset_options(args) -> dict:
    """The loader options of ``--dataset-option KEY=VALUE ...`` and ``--data-path``."""
    options = parse_options(args.dataset_option, "--dataset-option")
    if args.data_path is not None:
        if "path" in options:
            raise ValueError("give the data path once: --data-path or --dataset-option path=...")
        options["path"] = args.data_path
    return options


def _add_train(sub):
    p = sub.add_parser("train", help="train a model (eps U-Net by default) on a data set",
                       description="Train a model. Settings come from the defaults, then --config FILE, then "
                                   "(with --resume) the run's checkpoint, then the options given here.")
    p.add_argument("--dataset", help="data set name (default: digits)")
    _add_dataset_options(p)
    p.add_argument("--out", help="run directory (default: runs/<dataset>)")
    p.add_argument("--config", type=Path, help="JSON file of TrainConfig fields, e.g. configs/digits.json")
    p.add_argument("--resume", action="store_true", help="continue from <out>/ckpt.pt")
    p.add_argument("--model", help="architecture: unet, mlp, ... (default: the data set's)")
    p.add_argument("--preset", help="model preset, e.g. digits, cifar32, small32, toy")
    p.add_argument("--vae", type=Path, help="latent diffusion: an eps-network on the codes of this VAE checkpoint "
                                            "(trained on the same data set)")
    p.add_argument("--schedule", choices=("linear", "cosine"), help="noise schedule (default: linear)")
    for flag, type_, help_ in [("--steps", _count(1), "total optimiser steps"),
                               ("--batch-size", _count(1), "global batch size (split over torchrun's processes)"),
                               ("--lr", float, "peak AdamW learning rate"),
                               ("--warmup", _count(0), "linear warm-up steps"),
                               ("--ema-decay", float, "EMA decay"),
                               ("--grad-clip", float, "gradient-norm clip (0: off)"),
                               ("--t-min", float, "smallest training time"), ("--seed", int, "random seed"),
                               ("--sample-every", _count(0), "steps between sample grids (0: off)"),
                               ("--ckpt-every", _count(0), "steps between checkpoints (0: at the end only)")]:
        p.add_argument(flag, type=type_, help=help_)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def train_config_from_args(args):
    """The TrainConfig of ``scoregen train``: defaults < --config < the checkpoint (--resume) < options."""
    from ..models.checkpoint import TrainConfig, read_checkpoint

    fields = {}
    if args.config:
        try:
            fields = json.loads(args.config.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"--config {args.config} is not valid JSON: {e}") from None
        if not isinstance(fields, dict):
            raise ValueError(f"--config {args.config} must hold a JSON object of TrainConfig fields; got a "
                             f"{type(fields).__name__}")
    given = {name: getattr(args, name) for name in ("dataset", "steps", "batch_size", "lr", "warmup", "ema_decay",
                                                     "grad_clip", "t_min", "seed", "sample_every", "ckpt_every",
                                                     "device", "out")}
    given = {k: v for k, v in given.items() if v is not None}
    if args.vae and (args.model or args.preset):
        raise ValueError("--vae trains latent diffusion (arch latent): give no --model or --preset with it")
    if args.model or args.preset:
        given["model"] = {k: v for k, v in (("arch", args.model), ("preset", args.preset)) if v}
    if args.vae:  # the config's latent settings (its eps-network) kept, its VAE replaced
        model = fields.get("model", {}) if fields.get("model", {}).get("arch") == "latent" else {}
        given["model"] = {**{k: v for k, v in model.items() if k != "vae"}, "arch": "latent",
                          "vae_checkpoint": str(args.vae)}
    if args.schedule:
        given["sde"] = {"schedule": args.schedule}
    if args.dataset_option or args.data_path:
        given["dataset_options"] = dataset_options(args)
    dataset = given.get("dataset", fields.get("dataset", TrainConfig.dataset))
    out = given.setdefault("out", fields.get("out", f"runs/{dataset}"))
    if args.resume:
        fields.update(read_checkpoint(Path(out) / "ckpt.pt")["config"])
    return TrainConfig.from_dict({**fields, **given})


def _run_train(args):
    from ..models.train import train

    config = train_config_from_args(args)
    result = train(config, resume=args.resume, progress=not args.no_progress)
    loss = "n/a" if result.loss is None else f"{result.loss:.4f}"
    print(f"step {result.step}, loss {loss}; checkpoint {Path(config.out) / 'ckpt.pt'}")


def _add_export(sub):
    p = sub.add_parser("export", help="write a checkpoint's EMA weights and config alone (a shippable model)")
    p.add_argument("checkpoint", type=Path, help="training checkpoint, e.g. runs/digits/ckpt.pt")
    p.add_argument("dest", type=Path, help="output file, e.g. scoregen/checkpoints/digits.pt")
    return p


def _run_export(args):
    from ..models.checkpoint import export_ema
    from ..runtime.outputs import check_writable

    path = export_ema(args.checkpoint, check_writable(args.dest))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


def _add_sample(sub):
    p = sub.add_parser("sample", help="draw samples from a model: an eps-network with any sampler, a VAE",
                       description="Sample a trained model (a scoregen checkpoint or a local diffusers folder): an "
                                   "eps-network with any sampler (at the t_min it was trained with), a VAE in one "
                                   "decoder call. Without a model, list the samplers, their options and the grids.")
    p.add_argument("checkpoint", type=Path, nargs="?",
                   help="e.g. runs/digits/ckpt.pt, scoregen/checkpoints/digits.pt or a diffusers folder")
    p.add_argument("--model", "--ckpt", dest="ckpt", type=Path, help="the model, as an option")
    p.add_argument("--method", help="sampler of an eps-network (default: ddim; `scoregen sample` lists them)")
    p.add_argument("--steps", type=_count(1), help="number of steps (default: the method's)")
    p.add_argument("--grid", help="time grid of the sampler: a name (default: uniform; `scoregen sample` lists them) "
                                  "or a grid file (JSON, e.g. from `scoregen tune-grid`; it fixes the steps)")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="method option, e.g. -o eta=0.5 -o solver=dopri5 -o rtol=1e-4; a VAE's: -o mean=False "
                        "(repeatable)")
    p.add_argument("-n", "--n", type=_count(1), default=64, help="number of samples (default: 64)")
    p.add_argument("--seed", type=int, default=0)
    _add_chunk(p)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    _add_dtype(p)
    p.add_argument("--out", type=Path, default=Path("samples.png"), help=".png (grid or scatter) or .npz")
    return p


def _add_chunk(p):
    p.add_argument("--batch-size", type=_count(1), default=500,
                   help="samples per sampler call, each call seeded from --seed and its index, so that the samples "
                        "are the same under torchrun for any number of processes (default: 500)")


def _add_dtype(p):
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"),
                   help="the eps-network's compute dtype: bf16/fp16 run it under autocast, the sampler in fp32 "
                        "(default: fp32)")


def parse_options(items, flag: str = "-o/--option", reserved: dict | None = None) -> dict:
    """``["k=v", ...]`` -> ``{k: v}``, each value a Python literal where it parses as one, else a string.
    ``reserved`` maps keys that have a flag of their own to that flag (an error names it)."""
    import ast

    options = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"{flag} takes KEY=VALUE; got {item!r}")
        if key in (reserved or {}):
            raise ValueError(f"{flag} {item}: {key} has its own option, {reserved[key]}")
        try:
            options[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key] = value
    return options


# sample()'s own parameters, which -o must not set
SAMPLE_FLAGS = {"steps": "--steps", "grid": "--grid", "method": "--method", "shape": "-n", "generator": "--seed",
                "device": "--device", "dtype": "(the checkpoint's)", "return_trajectory": "(not a CLI option)",
                "seed": "--seed", "chunk": "--batch-size"}


def _run_sample(args):
    if args.checkpoint and args.ckpt:
        raise ValueError("give the model once: as an argument or as --model")
    args.checkpoint = args.checkpoint or args.ckpt
    if args.checkpoint is None:
        from ..samplers import describe
        print(describe())
        return
    if args.out.suffix not in (".png", ".npz"):
        raise ValueError(f"--out must end in .png or .npz; got {args.out}")
    import numpy as np
    import torch

    from ..runtime import distributed
    from ..models.loading import kind_of, load_model, vae_options, with_dtype
    from ..runtime.outputs import check_writable, sample_png, write_atomic

    options = parse_options(args.option, reserved=SAMPLE_FLAGS)
    check_writable(args.out)
    loaded = load_model(args.checkpoint, device=args.device)
    device, chunk, start = next(loaded.model.parameters()).device, args.batch_size, time.perf_counter()
    if kind_of(loaded.model) == "vae":
        if any(flag is not None for flag in (args.method, args.steps, args.grid, args.dtype)):
            raise ValueError(f"checkpoint {args.checkpoint} holds a VAE, sampled in one decoder call: "
                             "--method/--steps/--grid/--dtype do not apply")
        options = vae_options(options)
        parts = distributed.map_chunks(lambda start, size, g: loaded.model.sample(size, generator=g, **options),
                                       args.n, chunk, seed=args.seed, device=device)
        x, nfe, label, decoded, latents = None if parts is None else torch.cat(parts), 1, "vae", "", {}
        options = {"kind": "vae", **options}
    else:
        model, sde, info = with_dtype(loaded, args.dtype)
        label = args.method or "ddim"
        grid = grid_arg(args.grid, args.steps)
        options = {**({} if isinstance(grid, torch.Tensor) else {"t_min": info.t_min}), **options,
                   **({"grid": grid} if grid is not None else {})}
        res = distributed.sample(model, sde, (args.n, *info.shape), label, steps=args.steps, seed=args.seed,
                                 chunk=chunk, **options)
        x, nfe, options = (None, None, None) if res is None else (res.x, res.nfe, res.options)
        decoded = "" if res is None or res.latents is None else f" + {res.decoder_calls} decoder call(s)"
        latents = {} if decoded == "" else {"latents": res.latents.float().cpu().numpy()}
    if not distributed.is_main():
        return
    wall = time.perf_counter() - start  # every rank's chunks are in: the samples are on the CPU
    if args.out.suffix == ".npz":
        write_atomic(args.out, lambda f: np.savez(f, x=x.float().cpu().numpy(), nfe=nfe, options=json.dumps(options),
                                                  **latents))
    else:
        write_atomic(args.out, sample_png(x))
    processes = "" if distributed.world_size() == 1 else f" on {distributed.world_size()} processes"
    print(f"{args.n} samples by {label} ({nfe} NFE{decoded}) in {wall:.2f} s{processes} -> {args.out}")


def grid_arg(text: str | None, steps: int | None):
    """``--grid``: None, a ``GRIDS`` name, or the times of a grid file (``samplers.grids.resolve_grid``), which
    fix the step count: then ``--steps`` must not be given."""
    from ..samplers import GRIDS
    from ..samplers.grids import resolve_grid

    if text is None or text in GRIDS:
        return text
    if not Path(text).exists():
        raise ValueError(f"--grid {text}: neither a named grid ({', '.join(GRIDS)}) nor a grid file")
    if steps is not None:
        raise ValueError(f"--grid {text} is a grid file, which fixes the steps: give no --steps")
    return resolve_grid(text)


def _add_tune_grid(sub):
    p = sub.add_parser("tune-grid", help="tune a deterministic sampler's time grid to a checkpoint (a grid file)",
                       description="Tune the K + 1 times of a deterministic sampler to a checkpoint: least end-point "
                                   "error against the PF-ODE's own map of the same prior draws (scoregen.tune). "
                                   "Writes the grid with its errors on the tuning draws and on fresh ones, beside "
                                   "every named grid's; `scoregen sample --grid FILE` runs on it.")
    p.add_argument("checkpoint", type=Path,
                   help="eps-network: a checkpoint (e.g. scoregen/checkpoints/digits.pt) or a diffusers folder")
    p.add_argument("--method", required=True,
                   help="deterministic sampler: ddim, dpmpp, unipc, heun, ode (a fixed-grid solver)")
    p.add_argument("--steps", type=_count(1), required=True, help="number of steps K")
    p.add_argument("-o", "--option", action="append", default=[], metavar="KEY=VALUE",
                   help="method option, e.g. -o order=3 -o solver=heun2 (repeatable)")
    p.add_argument("-n", "--n", type=_count(2), default=256, help="prior draws tuned on (default: 256)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the tuning draws; the held-out draws use seed + 1 (default: 0)")
    p.add_argument("--max-evals", type=_count(0), default=200,
                   help="most sampler runs of the tuning, each about K NFE at batch n (default: 200)")
    p.add_argument("--out", type=Path, default=Path("grid.json"), help="the grid file, JSON (default: grid.json)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


# optimize_grid's own parameters, which -o must not set
TUNE_FLAGS = {**SAMPLE_FLAGS, "n": "-n", "seed": "--seed", "max_evals": "--max-evals", "progress": "--no-progress",
              "t_min": "(the checkpoint's)", "x1": "(the tuning draws)"}


def _run_tune_grid(args):
    from ..models.loading import load_checked
    from ..runtime.outputs import check_writable
    from ..samplers.grids import save_grid
    from ..evaluation.tune import held_out_errors, optimize_grid

    options = parse_options(args.option, reserved=TUNE_FLAGS)
    check_writable(args.out)
    model, sde, info = load_checked(args.checkpoint, "eps", device=args.device)
    shape, t_min, path = tuple(info.shape), info.t_min, info.path
    tuned = optimize_grid(model, sde, args.method, args.steps, shape, n=args.n, seed=args.seed, t_min=t_min,
                          max_evals=args.max_evals, progress=not args.no_progress, **options)
    held = held_out_errors(model, sde, args.method, tuned.t, shape, n=args.n, seed=args.seed + 1, t_min=t_min,
                           **options)
    save_grid(args.out, tuned.t, method=args.method, steps=args.steps, options=options, checkpoint=path,
              t_min=t_min, n=args.n, seed=args.seed, start_grid=tuned.start_grid, evaluations=tuned.evaluations,
              errors={"tuning": {"tuned": tuned.error, **tuned.fixed_errors}, "held_out": held})
    for label, seed, errors in (("tuning", args.seed, {"tuned": tuned.error, **tuned.fixed_errors}),
                                ("held out", args.seed + 1, held)):
        best = min(tuned.fixed_errors, key=errors.get)
        print(f"{label} (n={args.n}, seed {seed}): ode_err {errors['tuned']:.4g} tuned vs {errors[best]:.4g} best "
              f"named ({best}), {errors['tuned'] / errors[best]:.3f}x")
    print(f"{args.method}, {args.steps} steps, tuned in {tuned.evaluations} runs -> {args.out}")


def _add_likelihood(sub):
    p = sub.add_parser("likelihood", help="bits/dim of held-out data: PF-ODE, DDPM bound, VAE ELBO and IWAE, and "
                                          "the VAE with a diffusion prior",
                       description="Bits/dim of the held-out split under the given models, one convention "
                                   "(scoregen.likelihood): a table, and JSON with --out.")
    p.add_argument("--ckpt", "--model", dest="ckpt", type=Path, action="append",
                   help="eps-network: a checkpoint (e.g. scoregen/checkpoints/digits.pt) or a diffusers folder; or a "
                        "latent diffusion model (e.g. scoregen/checkpoints/cartoon.pt): its VAE with the "
                        "diffusion prior, and its VAE alone unless --vae-ckpt is given. Give it twice for one of each")
    p.add_argument("--vae-ckpt", type=Path, help="VAE checkpoint, e.g. scoregen/checkpoints/digits-vae.pt")
    p.add_argument("--dataset", default="digits", help="data set name (default: digits)")
    _add_dataset_options(p)
    p.add_argument("-n", type=_count(1), help="held-out points (default: all)")
    p.add_argument("--divergence", choices=("exact", "hutchinson"), default="hutchinson")
    p.add_argument("--probes", type=_count(1), default=1, help="Hutchinson probes per point (default: 1)")
    p.add_argument("--t-min", type=float, help="where the PF-ODE starts (default: the checkpoint's training t_min)")
    p.add_argument("--bound-steps", type=_count(2), default=1000, help="K of the DDPM bound (default: 1000)")
    p.add_argument("--sample-steps", type=_count(1), help="importance-sample this many of the K steps (default: all)")
    p.add_argument("--iwae-k", type=_count(1), default=100, help="samples of the IWAE bound (default: 100)")
    p.add_argument("--prior-k", type=_count(1), default=16,
                   help="samples of the IWAE bound with the diffusion prior, one PF-ODE solve each (default: 16)")
    p.add_argument("--prior-divergence", choices=("exact", "hutchinson"), default="exact",
                   help="the diffusion prior's divergence: exact (a bound) or hutchinson (an estimate; default: exact)")
    p.add_argument("--batch-size", type=_count(1), default=512,
                   help="points per solve or model call, each chunk of them seeded from --seed and its index: the "
                        "unit that torchrun's processes share (default: 512)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    p.add_argument("--out", type=Path, help="write the rows as JSON here")
    return p


def _run_likelihood(args):
    if not (args.ckpt or args.vae_ckpt):
        raise ValueError("give --ckpt and/or --vae-ckpt")
    from ..runtime import distributed
    from ..data import load_dataset
    from ..evaluation.likelihood import likelihood_points, likelihood_rows, markdown_table
    from ..models.loading import load_checked
    from ..runtime.outputs import check_writable, write_atomic

    if args.out:
        check_writable(args.out)
    data = load_dataset(args.dataset, **dataset_options(args))
    names = {"eps": "--ckpt", "vae": "--vae-ckpt"}
    eps = latent = None
    for path in args.ckpt or ():
        loaded = load_checked(path, "eps", device=args.device, names=names)
        kind = "latent diffusion" if hasattr(loaded.model, "to_data") else "pixel-space"
        if (latent if kind == "latent diffusion" else eps) is not None:
            raise ValueError(f"--ckpt is given two {kind} models (the second: {path}); give at most one of each")
        eps, latent = (eps, loaded) if kind == "latent diffusion" else (loaded, latent)
    vae = load_checked(args.vae_ckpt, "vae", device=args.device, names=names).model if args.vae_ckpt else \
        latent.model.vae if latent else None
    models = {} if eps is None else dict(eps_model=eps.model, sde=eps.sde,
                                         t_min=eps.info.t_min if args.t_min is None else args.t_min)
    if latent:
        models.update(latent=latent.model, latent_sde=latent.sde, latent_t_min=latent.info.t_min,
                      prior_k=args.prior_k, prior_divergence=args.prior_divergence)
    first = (eps or latent).model if eps or latent else vae
    device, x = next(first.parameters()).device, data.test[:args.n]
    parts = distributed.map_chunks(
        lambda start, size, g: likelihood_points(x[start:start + size], levels=data.levels, vae=vae,
                                                 divergence=args.divergence, probes=args.probes,
                                                 bound_steps=args.bound_steps, sample_steps=args.sample_steps,
                                                 iwae_k=args.iwae_k, batch_size=args.batch_size, generator=g,
                                                 **models),
        x.shape[0], args.batch_size, seed=args.seed, device=device, what="likelihoods")
    if parts is None:  # a rank other than 0 of a torchrun
        return
    rows = likelihood_rows(parts)
    print(markdown_table(rows), end="")
    if args.out:
        write_atomic(args.out, json.dumps(rows, indent=1).encode())


def _add_compare(sub):
    p = sub.add_parser("compare", help="step count vs sample quality for every sampler and the VAE",
                       description="Sample one model with every sampler at several step counts (and the VAE at one "
                                   "NFE), measure each row against held-out data, write a table, a plot and "
                                   "sample grids. Missing models are trained once and cached.")
    p.add_argument("--dataset", "--reference", dest="dataset", default="digits",
                   help="the data the samples are measured against: a data set name, an image folder (resized to "
                        "the model's size) or an .npz of images (default: digits)")
    _add_dataset_options(p)
    p.add_argument("--samplers", help="comma-separated sampler names (default: all)")
    p.add_argument("--steps", action="append", metavar="[SAMPLER=]N,N,...",
                   help="step counts for every fixed-step sampler, or per sampler (repeatable)")
    p.add_argument("--tols", help="comma-separated tolerances (rtol = atol) for adaptive solvers")
    p.add_argument("-n", "--n", type=int, help="samples per row (default: 500 for images, 2000 otherwise)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda if available)")
    _add_dtype(p)
    p.add_argument("--seed", type=int, default=0, help="seed of the prior draws (default: 0)")
    p.add_argument("--out", type=Path, help="output folder (default: results/<data set>)")
    p.add_argument("--quick", action="store_true", help="smoke run: few step counts, few samples")
    p.add_argument("--model", "--checkpoint", dest="checkpoint", type=Path,
                   help="eps-network: a scoregen checkpoint or a diffusers folder (default: the data set's shipped, "
                        "cached or trained one)")
    p.add_argument("--vae-checkpoint", type=Path, help="VAE checkpoint (default: shipped, cached or trained)")
    p.add_argument("--grid", default="uniform",
                   help="time grid of every sampler: a name (uniform, quadratic, log_snr, karras) or a grid file "
                        "(JSON, e.g. from `scoregen tune-grid`; it fixes the steps) (default: uniform)")
    p.add_argument("--grid-nfe", type=float, default=100, help="NFE of the sample pictures (default: 100)")
    p.add_argument("--batch-size", type=int, help="samples per sampler call, each seeded from --seed and its index: "
                                                  "the unit that torchrun's processes share (default: 500)")
    p.add_argument("--cache-dir", type=Path, help="model cache (default: ~/.cache/scoregen)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 is fastest on a busy machine)")
    p.add_argument("--inception-path", type=Path, help="Inception weights on disk (TorchScript inception-2015-12-05.pt "
                                                       "or a torchvision state dict): standard FID/KID")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _number(text: str, what: str):
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise ValueError(f"{what}: {text!r} is not a number") from None


def parse_steps(values: list[str] | None):
    """``--steps`` values: ``["10,20"]`` -> [10, 20] (every fixed-step sampler), ``["ddim=10,20", "ode-dopri5=1e-3"]``
    -> a dict sampler -> values; None -> None."""
    if not values:
        return None
    per = [v.partition("=") for v in values]
    if all(sep for _, sep, _ in per):
        return {k: [_number(x, f"--steps {k}") for x in v.split(",")] for k, _, v in per}
    if len(values) == 1:
        return [_number(x, "--steps") for x in values[0].split(",")]
    raise ValueError("give --steps once as N,N,... (every fixed-step sampler) or as SAMPLER=N,N,... (repeatable)")


def _run_compare(args):
    from ..evaluation.compare import CompareSettings, compare, markdown_table

    settings = CompareSettings(args.dataset, samplers=args.samplers.split(",") if args.samplers else None,
                               steps=parse_steps(args.steps), tols=parse_steps([args.tols]) if args.tols else None,
                               n=args.n, device=args.device, seed=args.seed, out=args.out, quick=args.quick,
                               checkpoint=args.checkpoint, vae_checkpoint=args.vae_checkpoint, dtype=args.dtype,
                               dataset_options=dataset_options(args), grid=args.grid, grid_nfe=args.grid_nfe,
                               batch_size=args.batch_size, cache_dir=args.cache_dir, threads=args.threads,
                               inception_path=args.inception_path, progress=not args.no_progress)
    rows = compare(settings)
    if rows is not None:  # None: a rank other than 0 of a torchrun
        print(markdown_table(rows), end="")


COMMANDS = {"train": (_add_train, _run_train), "export": (_add_export, _run_export),
            "sample": (_add_sample, _run_sample), "tune-grid": (_add_tune_grid, _run_tune_grid),
            "likelihood": (_add_likelihood, _run_likelihood),
            "compare": (_add_compare, _run_compare)}


DISTRIBUTED = ("train", "sample", "compare", "likelihood")  # the commands that share their work under torchrun


def main(argv=None):
    """The ``scoregen`` command (see the module docstring for its errors and exit statuses).

    Under torchrun (RANK and WORLD_SIZE set) the commands of ``DISTRIBUTED`` join its process group first
    (``scoregen.distributed``); every rank prints its own errors, prefixed with its rank, and an error of
    another rank is reported by rank 0 alone."""
    parser = _Parser(prog="scoregen", description="Continuous-time diffusion models: train, sample, compare.")
    debug = dict(action="store_true", help="show full tracebacks (also SCOREGEN_DEBUG=1)")
    parser.add_argument("--debug", **debug)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add, _ in COMMANDS.values():  # before or after the command; SUPPRESS keeps a leading --debug
        add(sub).add_argument("--debug", default=argparse.SUPPRESS, **debug)
    args = parser.parse_args(argv)
    launched, done = args.command in DISTRIBUTED and "RANK" in os.environ and "WORLD_SIZE" in os.environ, False
    try:
        if launched:
            from ..runtime import distributed
            args.device = distributed.init(args.device)
        if args.debug or os.environ.get("SCOREGEN_DEBUG", "") not in ("", "0"):
            COMMANDS[args.command][1](args)
        else:
            _run_reporting(args)
        done = True
    finally:
        if launched:
            distributed.shutdown(wait=done)


def _run_reporting(args):
    """Run the command; a user error, a machine error, a diverged run or Ctrl-C is one line and an exit status."""
    rank = int(os.environ.get("RANK", 0)) if args.command in DISTRIBUTED else 0
    prefix = f"scoregen: rank {rank}: " if int(os.environ.get("WORLD_SIZE", 1)) > 1 else "scoregen: "
    try:
        COMMANDS[args.command][1](args)
    except KeyboardInterrupt as e:  # training's Interrupted says where its checkpoint is; Ctrl-C says nothing
        print(f"{prefix}{str(e) or 'interrupted'}", file=sys.stderr)
        sys.exit(130)
    except (ValueError, OSError, FloatingPointError) as e:
        print(f"{prefix}error: {_message(e)}", file=sys.stderr)
        # 2: the user's input (arguments, files, destinations; CheckpointError is a ValueError);
        # 1: the machine (a full disk, an I/O error) or the run (a diverged loss)
        sys.exit(1 if isinstance(e, FloatingPointError) or getattr(e, "errno", None) in MACHINE_ERRNOS else 2)
    except RuntimeError as e:  # another rank failed (RankError), or a collective broke (torch.distributed.DistError)
        from ..runtime.distributed import RankError, broken
        if not isinstance(e, RankError) and not broken(e):
            raise
        if rank == 0:
            print(f"{prefix}error: {e}", file=sys.stderr)
        sys.exit(1)


def _message(e: Exception) -> str:
    """The exception's message, without the ``[Errno N]`` that ``str`` puts before an OSError's own text."""
    return e.strerror if isinstance(e, OSError) and e.strerror and e.filename is None else str(e)
