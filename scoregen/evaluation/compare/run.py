"""The sweep run: every row of a ``Plan`` sampled from the models it is given and measured (``measure``).

Each row's ``n`` samples are drawn in chunks of ``batch_size``, chunk k from the generator seeded
``chunk_seed(seed, k)``, shared by the ranks of a torchrun (``runtime.distributed.map_chunks``) and gathered on
rank 0, which alone measures: the eps-network's rows start from the same prior draws (common random numbers),
and the deterministic ones are measured by ``ode_err`` against the PF-ODE's own map of those draws, solved
once. What comes back is plain data (``Results``), which ``report`` renders.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ...models.loading import LoadedModel, ModelInfo, vae_options
from ...runtime import distributed
from ...samplers import pf_ode_solution, sample, steps_onto_zero
from ...samplers.learned import LearnedSolver, load_solver
from ...samplers.ode import TOL
from ..features import save_reference_stats
from ..metrics import floor
from ..tune import grid_for
from ..tune_solver import BASE, solver_for
from .measure import Evaluator, clip, extractor_for, features_note
from .plan import Plan, Row
from .rank import RANK_BY, rank
from .settings import CompareSettings

FLOOR = "data floor"


@dataclass
class Results:
    """What a run measured: ``summary``, the contents of compare.json (the run's facts and its ``rows``, the
    data floor first); ``samples``, for each row of the plan in order, its first 64 images or 2000 points (the
    pictures); ``features_note``, the feature space images were measured in (None for other data)."""
    summary: dict
    samples: list[torch.Tensor]
    features_note: str | None = None


def _row_grid(row: Row, grid, loaded: LoadedModel, cache_dir: Path, progress: bool, solver=None):
    """The grid a row runs on: the run's rule by name; the run's explicit grid, its last time set to the
    model's t_min for samplers that stop there (``steps_onto_zero``) when it ends at 0; the model's tuned
    grid (``tune.grid_for``); or, for a "learned" row, its ``LearnedSolver`` (the file ``solver``, else
    ``tune_solver.solver_for``), or the run's grid when there is none (the row falls back to ``BASE``)."""
    sweep = row.sweep
    if sweep.grid == "tuned":
        return grid_for(loaded, sweep.method, int(row.value), sweep.options, cache_dir=cache_dir, progress=progress)
    if sweep.grid == "learned":
        found = load_solver(solver) if solver is not None else solver_for(loaded, int(row.value), cache_dir=cache_dir)
        if found is not None:
            return found
        k = int(row.value)
        if distributed.is_main():
            print(f"no solver learned for {loaded.info.path} at {k} NFE: row {row.label}@{k} runs {BASE} "
                  f"instead (learn one with `scoregen tune {loaded.info.path} --learn solver --steps {k}`)")
    if not isinstance(grid, torch.Tensor) or steps_onto_zero(sweep.method) or grid[-1] > 0:
        return grid
    t_min = loaded.info.t_min
    if not grid[-2] > t_min:
        raise ValueError(f"the grid ends at 0 and {sweep.method!r} stops at the model's t_min = {t_min}: its "
                         f"last but one time must be above it; got {float(grid[-2])}")
    return torch.cat([grid[:-1], grid.new_tensor([t_min])])


def _draw(row: Row, grid, loaded: LoadedModel, size: int, shape, generator) -> tuple:
    """``(x, nfe, resolved options, decoder calls)`` of ``size`` samples of a row on ``grid``; a VAE draws by its
    own ``sample`` (its one decoder call is its NFE); a latent model's decoder call is not NFE."""
    sweep, value = row.sweep, row.value
    if sweep.kind == "vae":
        options = vae_options(sweep.options)
        return loaded.model.sample(size, generator=generator, **options), 1, options, 0
    if isinstance(grid, LearnedSolver):
        res = grid.sample(loaded.model, loaded.sde, (size, *shape), generator=generator)
        return res.x, res.nfe, {"grid": "learned", "t": grid.t.tolist()}, res.decoder_calls
    if sweep.grid == "learned":  # no solver learned at this NFE
        res = sample(loaded.model, loaded.sde, (size, *shape), BASE, grid=grid, generator=generator,
                     steps=None if isinstance(grid, torch.Tensor) else int(value),
                     t_min=None if isinstance(grid, torch.Tensor) else loaded.info.t_min)
        return res.x, res.nfe, {"fallback": BASE, "grid": res.options["grid"]}, res.decoder_calls
    options = dict(sweep.options, **({"rtol": value, "atol": value} if sweep.adaptive else {}))
    explicit = isinstance(grid, torch.Tensor)
    res = sample(loaded.model, loaded.sde, (size, *shape), sweep.method, grid=grid, generator=generator,
                 steps=None if sweep.adaptive or explicit else int(value),
                 t_min=None if explicit else loaded.info.t_min, **options)
    resolved = {k: v for k, v in res.options.items() if k not in ("method", "steps", "rtol", "atol")}
    return res.x, res.nfe, dict(resolved, grid=sweep.grid or resolved["grid"]), res.decoder_calls


def _reference(loaded: LoadedModel, n: int, chunk: int, shape, device: torch.device, seed: int) -> tuple | None:
    """``(x, nfe, wall)`` on rank 0 (None elsewhere): the PF-ODE's map (``pf_ode_solution``) of the prior draws
    every row starts from (the first draw of each chunk from the row's generator of that chunk)."""
    dtype = next(loaded.model.parameters()).dtype

    def solve(start, size, g):
        x1 = loaded.sde.prior_sample((size, *shape), generator=g, device=device, dtype=dtype)
        res = pf_ode_solution(loaded.model, loaded.sde, x1, t_min=loaded.info.t_min)
        return res.x, res.nfe

    begin = time.perf_counter()
    parts = distributed.map_chunks(solve, n, chunk, seed=seed, device=device, what="the PF-ODE reference")
    if parts is None:
        return None
    return torch.cat([x for x, _ in parts]), max(nfe for _, nfe in parts), time.perf_counter() - begin


def _sample(row: Row, grid, models: dict, shape, n: int, chunk: int, seed: int, device: torch.device):
    """``(x, nfe, resolved options, decoder calls, wall)`` of a row's n samples from ``seed`` on rank 0 (the chunks
    shared by the ranks, ``map_chunks``), None elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    parts = distributed.map_chunks(lambda _, size, g: _draw(row, grid, models[row.sweep.kind], size, shape, g), n,
                                   chunk, seed=seed, device=device, what=f"the samples of {row.label}")
    wall = time.perf_counter() - start  # the parts are on the CPU: every chunk has finished
    if parts is None:
        return None
    nfes = [p[1] for p in parts]
    nfe = sum(nfes) / len(nfes) if row.sweep.adaptive else nfes[0]
    return torch.cat([p[0] for p in parts]), nfe, parts[0][2], parts[0][3], wall


def _sample_rows(rows, grids: list, models: dict, data, n: int, device: torch.device, seed: int, chunk: int,
                 evaluate: Evaluator | None, progress: bool, repeats: int = 1) -> tuple[list, list, list, dict | None]:
    """Each row's fields, kept samples (the first 64 images or 2000 points) and draws on the halves on rank 0
    (``map_chunks`` shares the chunks of ``chunk`` samples among the ranks; elsewhere the lists are empty), and what
    the PF-ODE reference of ``ode_err`` cost (None without one). ``repeats`` > 1: each row is drawn again from the
    seeds ``seed + 1``, ..., ``seed + repeats - 1``, and ``<metric>_rerun_std`` is the spread of its metrics over
    the ``repeats`` runs (``ode_err``'s is not: its reference is solved for ``seed`` alone)."""
    from tqdm.auto import tqdm

    fields, kept, draws, reference, ref = [], [], [], None, None
    shape = models["eps"].info.shape or data.shape  # what the samplers draw: a latent model's latents
    if any(row.deterministic for row in rows):
        solved = _reference(models["eps"], n, chunk, shape, device, seed)
        if solved is not None:
            ref, ref_nfe, ref_wall = solved
            reference = dict(method="ode", solver="dopri5", tol=TOL, nfe=ref_nfe, wall_s=ref_wall)
    for row, grid in tqdm(list(zip(rows, grids)), desc="compare", disable=not (progress and distributed.is_main()),
                          dynamic_ncols=True):
        sampled = _sample(row, grid, models, shape, n, chunk, seed, device)
        reruns = [_sample(row, grid, models, shape, n, chunk, seed + r, device) for r in range(1, repeats)]
        if sampled is None:
            continue
        x, nfe, resolved, decoder_calls, wall = sampled
        err = evaluate.ode_err(x, ref) if row.deterministic else None
        x, clipped = clip(x, data)
        measured = evaluate(x)
        values = [evaluate(clip(again[0], data)[0]).fields for again in reruns]
        rerun = {f"{k}_rerun_std": statistics.stdev([measured.fields[k]] + [v[k] for v in values])
                 for k in measured.draws} if values else {}
        decoded = {"decoder_calls": decoder_calls} if decoder_calls else {}  # per sampler call, as nfe
        fields.append(dict(sampler=row.label, method=row.sweep.method, options=resolved,
                           steps=None if row.sweep.adaptive else int(row.value),
                           tol=row.value if row.sweep.adaptive else None, nfe=nfe, n=n, **measured.fields,
                           **(err.fields if err else {}), **rerun, **clipped, **decoded, wall_s=wall,
                           device=str(device)))
        draws.append({**measured.draws, **(err.draws if err else {})})
        kept.append(x[:64 if data.is_image else 2000])
    return fields, kept, draws, reference


def run(plan: Plan, models: dict, data, settings: CompareSettings, *, grid, device: torch.device,
        dataset_options: dict, cache_dir: Path, inception=None, ref_stats=None,
        started: float | None = None) -> Results | None:
    """Sample and measure every row of ``plan`` (module docstring) with ``models`` (kind -> ``LoadedModel``:
    "eps", and "vae" for a VAE row) on ``grid`` (the settings' grid resolved: a name or times), against
    ``data`` (loaded with ``dataset_options``). ``inception``: ``features.InceptionFeatures`` on rank 0, else
    the data set's feature network (``cache_dir/features``); tuned grids are cached in ``cache_dir/grids``.
    ``ref_stats``: ``(mean, cov)`` that ``fd`` and ``fd_inf`` are measured against (``measure.Evaluator``).
    ``started``: when the run began, for ``wall_s_total``. Returns the ``Results`` on rank 0, None elsewhere."""
    s, n, rows = settings, plan.n, plan.rows
    started = time.perf_counter() if started is None else started
    main, progress = distributed.is_main(), s.progress and distributed.is_main()
    chunk = s.batch_size or distributed.CHUNK
    extractor = extractor_for(data, inception=inception, cache_dir=cache_dir, device=device, progress=progress) \
        if data.is_image and main else None
    if extractor is not None and s.save_ref_stats is not None:
        save_reference_stats(s.save_ref_stats, extractor.reference)
    with distributed.main_first():  # rank 0 tunes the grids into the cache, the others read them
        grids = [_row_grid(row, grid, models["eps"], cache_dir, progress, s.solver) if row.sweep.kind == "eps"
                 else "uniform" for row in rows]
    evaluate = Evaluator(data, extractor, n, s.seed, s.halves, ref_stats=ref_stats) if main else None
    fields, kept, draws, reference = _sample_rows(rows, grids, models, data, n, device, s.seed, chunk, evaluate,
                                                  progress, s.repeats)
    if not main:
        return None
    source = "oracle draws" if data.oracle is not None else "training items"
    floor_row = dict(sampler=FLOOR, method=None, options={"source": source}, steps=None, tol=None, nfe=None,
                     n=n, **floor(evaluate, data, n, generator=torch.Generator().manual_seed(s.seed + 2)).fields,
                     wall_s=None, device=str(device))
    metric = s.rank_by or RANK_BY["image" if data.is_image else "vector"]
    ranking = rank(fields, draws, metric, n, s.baseline)
    summary = dict(dataset=data.name, dataset_options=dataset_options, n=n, seed=s.seed, device=str(device),
                   world_size=distributed.world_size(), chunk=chunk,
                   grid=grid if isinstance(grid, str) else grid.tolist(), ode_reference=reference,
                   checkpoint=models["eps"].info.path, model=_model_facts(models["eps"].info),
                   dtype=s.dtype or "fp32", vae_checkpoint=models["vae"].info.path if "vae" in models else None,
                   feature_net=None if extractor is None else extractor.info, halves=s.halves, repeats=s.repeats,
                   ranking=ranking, wall_s_total=time.perf_counter() - started, rows=[floor_row] + fields)
    note = None if extractor is None else features_note(extractor.info, data.name)
    return Results(summary, kept, note)


def _model_facts(info: ModelInfo) -> dict:
    """What the summary says of the eps-network: its format, smallest time and the format's own facts."""
    return dict(format=info.format, t_min=info.t_min, **info.details)


__all__ = ["FLOOR", "Results", "run"]
