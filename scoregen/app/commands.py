"""The commands that glue the floors below together, each a function of its settings: ``sample`` (a model's
samples to a picture or an .npz), ``tune_grid`` (a grid file tuned to a checkpoint) and ``export`` (a
checkpoint's EMA weights alone). ``train``, ``compare`` and ``likelihood`` live with their jobs
(``models.train``, ``evaluation.compare``, ``evaluation.likelihood``).

Each prints what the command line prints and returns its result; under torchrun only rank 0 writes and
prints, and the other ranks return None.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..core.settings import count, device_setting, dtype_setting, parse_options, progress_setting, setting
from ..models.loading import DTYPES
from ..runtime.distributed import CHUNK

# sample()'s own parameters, which -o must not set
SAMPLE_FLAGS = {"steps": "--steps", "grid": "--grid", "method": "--method", "shape": "-n", "generator": "--seed",
                "device": "--device", "dtype": "(the checkpoint's)", "return_trajectory": "(not a CLI option)",
                "seed": "--seed", "chunk": "--batch-size"}
# optimize_grid's own parameters, which -o must not set
TUNE_FLAGS = {**SAMPLE_FLAGS, "n": "-n", "seed": "--seed", "max_evals": "--max-evals", "progress": "--no-progress",
              "t_min": "(the checkpoint's)", "x1": "(the tuning draws)"}


@dataclass(frozen=True)
class SampleSettings:
    """``scoregen sample``: what to sample, how, and where the samples go."""
    checkpoint: Path | None = setting(None, "e.g. runs/digits/ckpt.pt, scoregen/checkpoints/digits.pt or a diffusers "
                                            "folder", positional=True)
    model: Path | None = setting(None, "the model, as an option", aliases=("--ckpt",))
    method: str | None = setting(None, "sampler of an eps-network (default: ddim; `scoregen sample` lists them)")
    steps: int | None = setting(None, "number of steps (default: the method's)", parse=count(1))
    grid: str | None = setting(None, "time grid of the sampler: a name (default: uniform; `scoregen sample` lists "
                                     "them) or a grid file (JSON, e.g. from `scoregen tune-grid`; it fixes the steps)")
    options: dict = setting(help="method option, e.g. -o eta=0.5 -o solver=dopri5 -o rtol=1e-4; a VAE's: -o "
                                 "mean=False (repeatable)", factory=dict, flag="--option", short="-o",
                            metavar="KEY=VALUE", repeat=True, parse=lambda items: parse_options(items,
                                                                                                 reserved=SAMPLE_FLAGS))
    solver: Path | None = setting(None, "a learned solver's file (`scoregen tune --learn solver`): it fixes the "
                                        "method, steps and grid", metavar="FILE.json")
    n: int = setting(64, "number of samples", short="-n", parse=count(1))
    seed: int = setting(0, "seed of the first chunk of samples")
    batch_size: int = setting(CHUNK, "samples per sampler call, each call seeded from --seed and its index, so that "
                                     "the samples are the same under torchrun for any number of processes",
                              parse=count(1))
    device: str | None = device_setting()
    dtype: str | None = dtype_setting(tuple(DTYPES))
    out: Path = setting(Path("samples.png"), ".png (grid or scatter) or .npz")


def sample(settings: SampleSettings) -> dict | None:
    """Sample ``settings.checkpoint`` (or ``model``) and write the samples to ``out`` (module docstring); without
    a model, print the samplers, their options and the grids. Returns ``{"x", "nfe", "options", "wall_s"}``."""
    s = settings
    if s.checkpoint and s.model:
        raise ValueError("give the model once: as an argument or as --model")
    source = s.checkpoint or s.model
    if source is None:
        from ..samplers import describe
        print(describe())
        return None
    out = Path(s.out)
    if out.suffix not in (".png", ".npz"):
        raise ValueError(f"--out must end in .png or .npz; got {out}")
    import numpy as np
    import torch

    from ..models import load_model, vae_options, with_dtype
    from ..runtime import distributed
    from ..runtime.outputs import check_writable, sample_png, write_atomic
    from ..samplers.common import check_memory

    options = dict(s.options)
    check_writable(out)
    loaded = load_model(source, device=s.device)
    data_shape = getattr(loaded.model, "data_shape", None) or loaded.info.shape  # what rank 0 gathers
    check_memory((s.n, *data_shape), torch.float32, torch.device("cpu"))
    device, start = next(loaded.model.parameters()).device, time.perf_counter()
    if loaded.kind == "vae":
        if any(flag is not None for flag in (s.method, s.steps, s.grid, s.dtype)):
            raise ValueError(f"checkpoint {source} holds a VAE, sampled in one decoder call: "
                             "--method/--steps/--grid/--dtype do not apply")
        options = vae_options(options)
        parts = distributed.map_chunks(lambda start, size, g: loaded.model.sample(size, generator=g, **options),
                                       s.n, s.batch_size, seed=s.seed, device=device)
        x, nfe, label, decoded, latents = None if parts is None else torch.cat(parts), 1, "vae", "", {}
        options = {"kind": "vae", **options}
    else:
        model, sde, info = with_dtype(loaded, s.dtype)
        label, grid = s.method or "ddim", grid_arg(s.grid, s.steps)
        if s.solver is not None:
            from ..samplers.learned import load_solver
            if any(flag is not None for flag in (s.method, s.steps, s.grid)) or options:
                raise ValueError("--solver fixes the method, steps and grid: give no --method, --steps, --grid or -o")
            label, grid, options = "learned", load_solver(s.solver).t, {"solver": str(s.solver)}
        options = {**({} if isinstance(grid, torch.Tensor) else {"t_min": info.t_min}), **options,
                   **({"grid": grid} if grid is not None else {})}
        res = distributed.sample(model, sde, (s.n, *info.shape), label, steps=s.steps, seed=s.seed, chunk=s.batch_size,
                                 **options)
        x, nfe, options = (None, None, None) if res is None else (res.x, res.nfe, recorded_options(res.options))
        decoded = "" if res is None or res.latents is None else f" + {res.decoder_calls} decoder call(s)"
        latents = {} if decoded == "" else {"latents": res.latents.float().cpu().numpy()}
    if not distributed.is_main():
        return None
    wall = time.perf_counter() - start  # every rank's chunks are in: the samples are on the CPU
    if out.suffix == ".npz":
        write_atomic(out, lambda f: np.savez(f, x=x.float().cpu().numpy(), nfe=nfe, options=json.dumps(options),
                                             **latents))
    else:
        write_atomic(out, sample_png(x))
    processes = "" if distributed.world_size() == 1 else f" on {distributed.world_size()} processes"
    print(f"{s.n} samples by {label} ({nfe} NFE{decoded}) in {wall:.2f} s{processes} -> {out}")
    return {"x": x, "nfe": nfe, "options": options, "wall_s": wall}


def recorded_options(options: dict) -> dict:
    """A sampler's resolved options as the samples' file records them: an adaptive ODE solver takes no steps of the
    grid (steps None) but runs to its tolerances (rtol and atol; None: ``samplers.ode.TOL``)."""
    from ..core.flow import ADAPTIVE
    from ..samplers.ode import TOL

    if options.get("solver") not in ADAPTIVE:
        return options
    return {**options, "steps": None, **{k: TOL if options[k] is None else options[k] for k in ("rtol", "atol")}}


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


@dataclass(frozen=True)
class TuneGridSettings:
    """``scoregen tune-grid``: the sampler and step count to tune for a checkpoint, the draws and the file."""
    checkpoint: Path | None = setting(None, "eps-network: a checkpoint (e.g. scoregen/checkpoints/digits.pt) or a "
                                            "diffusers folder", positional=True, required=True)
    method: str | None = setting(None, "deterministic sampler: ddim, dpmpp, unipc, deis, ipndm, heun, ode (fixed grid)",
                                 required=True)
    steps: int | None = setting(None, "number of steps K", parse=count(1), required=True)
    options: dict = setting(help="method option, e.g. -o order=3 -o solver=heun2 (repeatable)", factory=dict,
                            flag="--option", short="-o", metavar="KEY=VALUE", repeat=True,
                            parse=lambda items: parse_options(items, reserved=TUNE_FLAGS))
    n: int = setting(256, "prior draws tuned on", short="-n", parse=count(2))
    seed: int = setting(0, "seed of the tuning draws; the held-out draws use seed + 1")
    max_evals: int = setting(200, "most sampler runs of the tuning, each about K NFE at batch n", parse=count(0))
    out: Path = setting(Path("grid.json"), "the grid file, JSON")
    device: str | None = device_setting()
    progress: bool = progress_setting()


def tune_grid(settings: TuneGridSettings):
    """Tune the grid (``evaluation.tune.optimize_grid``), measure it on held-out draws and write the grid file with
    both errors; returns the ``TunedGrid``."""
    from ..evaluation.tune import held_out_errors, optimize_grid
    from ..models import load_checked
    from ..runtime.outputs import check_writable
    from ..samplers.grids import save_grid

    s = settings
    if s.checkpoint is None or s.method is None or s.steps is None:
        raise ValueError("tune_grid needs checkpoint, method and steps")
    check_writable(s.out)
    model, sde, info = load_checked(s.checkpoint, "eps", device=s.device)
    shape, t_min, options = tuple(info.shape), info.t_min, dict(s.options)
    tuned = optimize_grid(model, sde, s.method, s.steps, shape, n=s.n, seed=s.seed, t_min=t_min,
                          max_evals=s.max_evals, progress=s.progress, **options)
    held = held_out_errors(model, sde, s.method, tuned.t, shape, n=s.n, seed=s.seed + 1, t_min=t_min,
                           progress=s.progress, **options)
    tuning = {"tuned": tuned.error, **tuned.fixed_errors}
    save_grid(s.out, tuned.t, method=s.method, steps=s.steps, options=options, checkpoint=info.path, t_min=t_min,
              n=s.n, seed=s.seed, start_grid=tuned.start_grid, evaluations=tuned.evaluations,
              errors={"tuning": tuning, "held_out": held})
    for label, seed, errors in (("tuning", s.seed, tuning), ("held out", s.seed + 1, held)):
        best = min(tuned.fixed_errors, key=errors.get)
        print(f"{label} (n={s.n}, seed {seed}): ode_err {errors['tuned']:.4g} tuned vs {errors[best]:.4g} best "
              f"named ({best}), {errors['tuned'] / errors[best]:.3f}x")
    print(f"{s.method}, {s.steps} steps, tuned in {tuned.evaluations} runs -> {s.out}")
    return tuned


@dataclass(frozen=True)
class TuneSettings:
    """``scoregen tune``: what to learn for a checkpoint (a sampler's grid, or a whole solver), on which draws."""
    checkpoint: Path | None = setting(None, "eps-network: a checkpoint (e.g. scoregen/checkpoints/digits.pt) or a "
                                            "diffusers folder", positional=True, required=True)
    learn: str = setting("grid", "grid: the times of --method (as tune-grid); solver: the weights, times and network "
                                 "times of a solver of --steps calls (scoregen.evaluation.tune_solver)",
                         choices=("grid", "solver"))
    method: str | None = setting(None, "--learn grid: the deterministic sampler whose grid is tuned")
    steps: int | None = setting(None, "number of steps K (network calls of a learned solver)", parse=count(1),
                                required=True)
    options: dict = setting(help="--learn grid: method option, e.g. -o order=3 (repeatable)", factory=dict,
                            flag="--option", short="-o", metavar="KEY=VALUE", repeat=True,
                            parse=lambda items: parse_options(items, reserved=TUNE_FLAGS))
    n: int = setting(None, "prior draws learned on (default: 256 for a grid, 512 for a solver)", short="-n",
                     parse=count(2))
    seed: int = setting(0, "seed of the tuning draws; the held-out draws use seed + 1")
    max_evals: int = setting(200, "--learn grid: most sampler runs", parse=count(0))
    iters: int = setting(150, "--learn solver: Adam steps, each K network calls at batch 128 and their gradient",
                         parse=count(0))
    out: Path | None = setting(None, "the file (default: grid.json; a solver goes where `scoregen sample --solver` "
                                     "and `scoregen compare` find it, the cache's solvers/)")
    device: str | None = device_setting()
    progress: bool = progress_setting()


def tune(settings: TuneSettings):
    """``--learn grid``: ``tune_grid``. ``--learn solver``: learn the K-call solver and measure it beside every fixed
    solver on held-out draws (``tune_solver.learn_solver``), write its file; returns the ``LearnedSolver``."""
    s = settings
    if s.learn == "grid":
        return tune_grid(TuneGridSettings(s.checkpoint, s.method, s.steps, s.options, s.n or 256, s.seed, s.max_evals,
                                          s.out or Path("grid.json"), s.device, s.progress))
    from ..evaluation.tune_solver import best_fixed, learn_solver, solver_path
    from ..models import load_checked
    from ..runtime.outputs import check_writable
    from ..samplers.learned import save_solver

    if s.method is not None or s.options:
        raise ValueError("--learn solver learns the solver itself: give no --method or -o")
    model, sde, info = load_checked(s.checkpoint, "eps", device=s.device)
    out, n = check_writable(s.out or solver_path(info, s.steps)[1]), s.n or 512
    solver = learn_solver(model, sde, s.steps, tuple(info.shape), n=n, seed=s.seed, t_min=info.t_min, iters=s.iters,
                          progress=s.progress)
    solver.info["checkpoint"] = info.path
    save_solver(out, solver)
    held = solver.info["errors"]["held_out"]
    name, err = best_fixed(held)
    print(f"held out (n={n}, seed {s.seed + 1}): ode_err {held['learned']:.4g} learned vs {err:.4g} best fixed "
          f"({name}), {held['learned'] / err:.3f}x")
    print(f"a {s.steps}-call solver learned in {solver.info['minutes']:.1f} min -> {out}")
    return solver


@dataclass(frozen=True)
class ExportSettings:
    """``scoregen export``: a training checkpoint and the file its EMA weights go to."""
    checkpoint: Path | None = setting(None, "training checkpoint, e.g. runs/digits/ckpt.pt", positional=True,
                                      required=True)
    dest: Path | None = setting(None, "output file, e.g. scoregen/checkpoints/digits.pt", positional=True,
                                required=True)


def export(settings: ExportSettings) -> Path:
    """Write the EMA weights and config of ``checkpoint`` alone to ``dest`` (``models.checkpoint.export_ema``)."""
    from ..models.checkpoint import export_ema
    from ..runtime.outputs import check_writable

    if settings.checkpoint is None or settings.dest is None:
        raise ValueError("export needs checkpoint and dest")
    path = export_ema(settings.checkpoint, check_writable(settings.dest))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return path
