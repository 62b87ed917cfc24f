"""The sampler sweep: step count against sample quality, for every sampler of one eps-network and the VAE.

``compare(CompareSettings("digits"))`` plans the rows, gets the data set's eps-network and its VAE
(``models.model_for``: shipped, cached, or trained once into the cache) and, for images, its feature
network; draws ``n`` samples per row from the same seed (the eps-network's rows from the same prior
draws, common random numbers: they differ by their sampler only; the VAE's by its own ``sample``, one
decoder call); and measures every row against the held-out split with the metrics of ``scoregen.metrics``:

    images         Frechet distance ``fd`` and ``kid`` in the feature network's space, of the samples
                   clamped to [-1, 1] (the pictures; ``clipped`` is the share of pixels that needed it)
    other data     sliced Wasserstein ``swd`` and ``mmd`` (unbiased MMD^2)
    mixture oracle ``logp`` (exact mean log-density of the samples), ``logp_data`` (the data's),
                   ``logp_gap``, ``moment_kl`` (exact KL between moment-matched Gaussians)
    deterministic  ``ode_err``: RMS distance per coordinate to the PF-ODE's own map of the same prior draws
    samplers       (``samplers.pf_ode_solution``: dopri5 at 1e-5, computed once), the sampler's own
                   error, free of the sampling noise of the distances above

Every metric carries a spread ``<metric>_std``: KID's is its std over subsets; the others' is the
half-sampling estimate ``std(metric on random halves) / sqrt(2)`` of the sampling error at n (Politis &
Romano 1994; variance ~ 1/n). The ``data floor`` row is the same metrics on n real points independent
of the held-out split (training items, or fresh draws for synthetic data): the best a sampler can score.

NFE is counted, not assumed: adaptive solvers report what they used. Wall time is sampling alone. A latent
diffusion model (``nets.latent``) is sampled on its latents and decoded: its rows add ``decoder_calls`` (1,
not NFE), its ``ode_err`` is measured on the decoded samples, and its own VAE is the VAE row unless another
is given.
Outputs (``compare.json``, ``compare.csv``, ``compare.md``, ``quality_vs_nfe.png``, ``samples_<sampler>.png``;
rendered by ``scoregen.outputs``) are written only after every row is measured, each to a temporary file
then ``os.replace``-d; the folder is checked to be writable before any work, and sample pictures of
samplers that an earlier run into the same folder had, but this one has not, are removed, so the folder
holds one run.
"""
from __future__ import annotations

import json
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import KW_ONLY, dataclass, field, replace
from pathlib import Path

import torch

from ..runtime import distributed, outputs
from ..data import dataset_source, load_dataset
from ..core.devices import resolve_device
from .features import FeatureNet, InceptionFeatures, default_cache_dir
from .metrics import (attribute_tv, floor, frechet_distance, half_sampling_std, image_metrics, label_frequencies,
                      ode_err, sample_metrics)
from ..models.loading import LoadedModel, ModelInfo, compute_dtype, load_checked, model_for, vae_options, with_dtype
from ..models.nets import LatentDiffusion
from ..samplers import is_deterministic, pf_ode_solution, sample, steps_onto_zero
from ..samplers.grids import resolve_grid
from ..samplers.ode import ADAPTIVE, TOL
from .tune import grid_for


@dataclass(frozen=True)
class Sweep:
    """One line of the plot: ``method`` with ``options`` at each of ``values`` (step counts, or rtol = atol
    for an adaptive solver); ``quick`` are the values of ``--quick``. ``kind`` is the model's
    (``scoregen.models``): "eps", sampled by the samplers' ``method``, or "vae", by ``VAE.sample`` (one
    decoder call; ``method`` is then only its label, and the data must be images). ``grid``: "tuned" runs
    on the model's tuned grid for this sampler and step count (``tune.grid_for``), None on the run's grid."""
    method: str
    options: dict
    values: tuple
    quick: tuple
    kind: str = "eps"
    grid: str | None = None

    @property
    def adaptive(self) -> bool:
        return self.options.get("solver") in ADAPTIVE


SWEEPS = {
    "ddpm": Sweep("ddpm", {}, (10, 20, 50, 100, 1000), (10, 100)),
    "ddim": Sweep("ddim", {}, (10, 20, 50, 100), (10, 100)),  # 1000 steps: the same samples as 100 (ode_err)
    "sde": Sweep("sde", {"solver": "euler"}, (20, 50, 100, 200), (50,)),
    "ode-heun": Sweep("ode", {"solver": "heun2"}, (5, 10, 25), (10,)),
    "ode-dopri5": Sweep("ode", {"solver": "dopri5"}, (1e-2, 1e-3, 1e-4), (1e-3,)),
    "dpmpp": Sweep("dpmpp", {}, (5, 10, 20), (10,)),             # DPM-Solver++(2M)
    "dpmpp-tuned": Sweep("dpmpp", {}, (10,), (10,), grid="tuned"),
    "unipc": Sweep("unipc", {}, (5, 10, 20), (10,)),
    "heun": Sweep("heun", {}, (3, 5, 10), (5,)),                # EDM: 2K - 1 NFE, 5, 9 and 19
    "vae": Sweep("vae", {}, (1,), (1,), kind="vae"),  # the conv VAE of nets.vae
}
FLOOR = "data floor"
DEFAULT_N = {"image": 500, "vector": 2000}        # samples per row; --quick: a fifth
METRICS = ("fd", "kid", "attr_tv", "swd", "mmd", "logp", "logp_data", "logp_gap", "moment_kl", "ode_err",
           "clipped")  # columns
PLOTTED = {"image": ("fd", "kid", "attr_tv"), "vector": ("swd", "mmd"), "oracle": ("moment_kl", "logp_gap"),
           "deterministic": ("ode_err",)}
LOG_SCALE = ("fd", "swd", "moment_kl", "ode_err")  # positive metrics, plotted on a log axis
CHECKPOINTS = {"eps": "checkpoint (--checkpoint)", "vae": "vae_checkpoint (--vae-checkpoint)"}  # each kind's setting


@dataclass
class _Row:
    label: str
    sweep: Sweep
    value: float
    fields: dict = field(default_factory=dict)
    grid: str | torch.Tensor = "uniform"  # the name of a GRIDS rule or the times themselves

    @property
    def deterministic(self) -> bool:
        return self.sweep.kind == "eps" and is_deterministic(self.sweep.method, self.sweep.options)


# --- validation (before any training, sampling or writing) --------------------------------------------
def _check_samplers(samplers) -> list[str]:
    samplers = list(SWEEPS) if samplers is None else [samplers] if isinstance(samplers, str) else list(samplers)
    unknown = [s for s in samplers if s not in SWEEPS]
    if unknown:
        raise ValueError(f"unknown sampler(s) {', '.join(map(repr, unknown))}; valid: {', '.join(SWEEPS)}")
    if not samplers:
        raise ValueError(f"empty sweep: samplers is empty; choose from {', '.join(SWEEPS)}")
    return list(dict.fromkeys(samplers))


def _check_values(label: str, values) -> tuple:
    sweep, values = SWEEPS[label], tuple(values)
    if not values:
        raise ValueError(f"empty sweep: no {'tolerances' if sweep.adaptive else 'step counts'} for {label!r}")
    for v in values:
        if sweep.adaptive:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
                raise ValueError(f"tolerances of {label!r} must be numbers in (0, 1); got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"step counts of {label!r} must be positive integers; got {v!r}")
        elif sweep.kind == "vae" and v != 1:
            raise ValueError(f"'vae' is one decoder call: its only step count is 1; got {v!r}")
    return values


def _plan(samplers, steps, tols, quick: bool, is_image: bool, grid_steps: int | None = None) -> list[_Row]:
    """The rows of the sweep: ``steps`` a list for every fixed-step sampler or a dict sampler -> list
    (tolerances for adaptive ones), ``tols`` a list for every adaptive sampler. ``grid_steps``: the step
    count of an explicit grid, which every fixed-step sampler then runs at."""
    explicit = samplers is not None
    samplers = _check_samplers(samplers)
    per_label = dict(steps) if isinstance(steps, dict) else {}
    bad = [k for k in per_label if k not in samplers]
    if bad:
        raise ValueError(f"steps given for sampler(s) {', '.join(map(repr, bad))} not in the sweep "
                         f"({', '.join(samplers)})")
    if grid_steps is not None and (steps is not None and not isinstance(steps, dict)
                                   or any(not SWEEPS[k].adaptive for k in per_label)):
        raise ValueError(f"the grid file fixes the step count ({grid_steps}): give no step counts")
    rows = []
    for label in samplers:
        sweep = SWEEPS[label]
        if sweep.kind == "vae" and not is_image:
            if explicit:
                raise ValueError(f"sampler {label!r} needs image data (nets.vae builds convolutional VAEs)")
            continue
        if label in per_label:
            values = per_label[label]
        elif sweep.adaptive and tols is not None:
            values = tols
        elif not sweep.adaptive and sweep.kind == "eps" and grid_steps is not None:
            values = (grid_steps,)
        elif not sweep.adaptive and sweep.kind == "eps" and steps is not None and not isinstance(steps, dict):
            values = steps
        else:
            values = sweep.quick if quick else sweep.values
        rows += [_Row(label, sweep, v) for v in _check_values(label, values)]
    if not rows:
        raise ValueError("empty sweep: no rows to run")
    return rows


# --- metrics -------------------------------------------------------------------------------------------
def _evaluator(data, extractor, n: int, seed: int, halves: int = 8):
    """``evaluate(x) -> {metric: value, metric_std: spread}`` for samples x (see the module docstring).
    Low-dimensional data is compared with n held-out points (all of them if fewer). With a classifier
    (``FeatureNet`` trained on labels), also ``attr_tv`` and ``attributes``, the predicted label frequencies."""
    data = data if data.is_image else replace(data, test=data.test[:n])
    classes = getattr(extractor, "config", {}).get("num_classes")
    reference = extractor.predict(data.test) if classes else None

    def attributes(x):
        labels = extractor.predict(x)
        tv = lambda y: {"attr_tv": attribute_tv(y, reference, classes)}  # noqa: E731
        freqs = dict(zip(_label_names(data, len(classes)), label_frequencies(labels, classes)))
        return {**tv(labels), **half_sampling_std(tv, labels, halves=halves,
                                                  generator=torch.Generator().manual_seed(seed + 3)),
                "attributes": freqs}

    def full(rep):
        g = torch.Generator(rep.device).manual_seed(seed)
        if data.is_image:
            return image_metrics(rep, extractor.reference, generator=g)
        return sample_metrics(rep, data, generator=g)

    def cheap(rep):  # what the halves measure: everything but KID (which has its own spread)
        if data.is_image:
            return {"fd": frechet_distance(rep, extractor.reference)}
        out = full(rep)
        out.pop("logp_data", None)
        return out

    def evaluate(x):
        rep = extractor.features(x) if data.is_image else x
        return {**full(rep), **half_sampling_std(cheap, rep, halves=halves,
                                                 generator=torch.Generator().manual_seed(seed + 1)),
                **(attributes(x) if classes else {})}

    return evaluate


def _label_names(data, k: int) -> list[str]:
    """The names of a data set's ``k`` label columns: its attributes' (``data.info["attributes"]``), else
    "class" for one column, else "label_j"."""
    names = list(data.info.get("attributes", {}))
    return names if len(names) == k else ["class"] if k == 1 else [f"label_{j}" for j in range(k)]


def _clip(x: torch.Tensor, data) -> tuple[torch.Tensor, dict]:
    """Images are measured as the pictures they are: clamped to the data range [-1, 1]. ``clipped`` is the
    share of pixel values beyond it by more than half a quantisation bin (1 / (L - 1))."""
    if not data.is_image:
        return x, {}
    margin = 1 / (data.levels - 1) if data.levels else 0.0
    clipped = (x.abs() > 1 + margin).double().mean().item()
    return x.clamp(-1, 1), {"clipped": clipped}


@contextmanager
def _num_threads(threads: int | None):
    """torch's intra-op CPU threads set to ``threads`` (None: unchanged) for the block."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads or saved)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


# --- the sweep -----------------------------------------------------------------------------------------
def _row_grid(row: _Row, grid, loaded: LoadedModel, cache_dir: Path, progress: bool):
    """The grid a row runs on: the run's rule by name; the run's explicit grid, its last time set to the
    model's t_min for samplers that stop there (``steps_onto_zero``) when it ends at 0; or the model's
    tuned grid (``tune.grid_for``)."""
    sweep = row.sweep
    if sweep.grid == "tuned":
        return grid_for(loaded, sweep.method, int(row.value), sweep.options, cache_dir=cache_dir, progress=progress)
    if not isinstance(grid, torch.Tensor) or steps_onto_zero(sweep.method) or grid[-1] > 0:
        return grid
    t_min = loaded.info.t_min
    if not grid[-2] > t_min:
        raise ValueError(f"the grid ends at 0 and {sweep.method!r} stops at the model's t_min = {t_min}: its "
                         f"last but one time must be above it; got {float(grid[-2])}")
    return torch.cat([grid[:-1], grid.new_tensor([t_min])])


def _draw(row: _Row, loaded: LoadedModel, size: int, shape, generator) -> tuple:
    """``(x, nfe, resolved options, decoder calls)`` of ``size`` samples of a row; a VAE draws by its own
    ``sample`` (its one decoder call is its NFE); a latent model's decoder call is not NFE."""
    sweep, value = row.sweep, row.value
    if sweep.kind == "vae":
        options = vae_options(sweep.options)
        return loaded.model.sample(size, generator=generator, **options), 1, options, 0
    options = dict(sweep.options, **({"rtol": value, "atol": value} if sweep.adaptive else {}))
    explicit = isinstance(row.grid, torch.Tensor)
    res = sample(loaded.model, loaded.sde, (size, *shape), sweep.method, grid=row.grid, generator=generator,
                 steps=None if sweep.adaptive or explicit else int(value),
                 t_min=None if explicit else loaded.info.t_min, **options)
    resolved = {k: v for k, v in res.options.items() if k not in ("method", "steps", "rtol", "atol")}
    return res.x, res.nfe, dict(resolved, grid=sweep.grid or resolved["grid"]), res.decoder_calls


def _reference(loaded: LoadedModel, n: int, chunk: int, shape, device: torch.device, seed: int) -> tuple:
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


def _sample_rows(rows: list[_Row], models: dict, data, n: int, device: torch.device, seed: int,
                 chunk: int, evaluate, progress: bool) -> tuple[dict, dict | None]:
    """Fill each row's fields (on rank 0; ``distributed.map_chunks`` shares the chunks of ``chunk`` samples
    among the ranks); return ``{id(row): samples}`` kept for the grid pictures (the first 64 images or 2000
    points of every row) and what the PF-ODE reference of ``ode_err`` cost (None without one)."""
    from tqdm.auto import tqdm

    kept, reference, ref = {}, None, None
    shape = models["eps"].info.shape or data.shape  # what the samplers draw: a latent model's latents
    if any(row.deterministic for row in rows):
        solved = _reference(models["eps"], n, chunk, shape, device, seed)
        if solved is not None:
            ref, ref_nfe, ref_wall = solved
            reference = dict(method="ode", solver="dopri5", tol=TOL, nfe=ref_nfe, wall_s=ref_wall)
    for row in tqdm(rows, desc="compare", disable=not (progress and distributed.is_main()), dynamic_ncols=True):
        sweep = row.sweep
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        parts = distributed.map_chunks(lambda _, size, g: _draw(row, models[sweep.kind], size, shape, g), n,
                                       chunk, seed=seed, device=device, what=f"the samples of {row.label}")
        wall = time.perf_counter() - start  # the parts are on the CPU: every chunk has finished
        if parts is None:
            continue
        x, nfes, resolved = torch.cat([p[0] for p in parts]), [p[1] for p in parts], parts[0][2]
        decoded = {"decoder_calls": parts[0][3]} if parts[0][3] else {}  # per sampler call, as nfe
        err = {"ode_err": ode_err(x, ref)} if row.deterministic else {}
        x, clipped = _clip(x, data)
        row.fields = dict(sampler=row.label, method=sweep.method, options=resolved,
                          steps=None if sweep.adaptive else int(row.value), tol=row.value if sweep.adaptive else None,
                          nfe=sum(nfes) / len(nfes) if sweep.adaptive else nfes[0], n=n, **evaluate(x), **err,
                          **clipped, **decoded, wall_s=wall, device=str(device))
        kept[id(row)] = x[:64 if data.is_image else 2000]
    return kept, reference


@dataclass(frozen=True)
class CompareSettings:
    """What ``compare`` runs; everything but ``dataset`` by keyword.

    Args:
        dataset: a ``load_dataset`` name ('digits', 'gmm', 'toy', 'cartoon', 'folder', 'npz'), or an image
            folder or ``.npz`` file of reference images (``data.dataset_source``; a folder's images resized to
            the model's size); ``dataset_options`` go to its loader (e.g. ``{"mixture": "ring8"}``).
        samplers: keys of ``SWEEPS`` (default: all; 'vae' for image data only, and with a model that is not a
            scoregen checkpoint only when ``vae_checkpoint`` is given).
        steps: step counts for every fixed-step sampler, or a dict sampler -> step counts (tolerances
            for an adaptive one); tols: tolerances (rtol = atol) for every adaptive sampler.
            Defaults: each ``Sweep``'s values (``quick``: its quick values).
        n: samples per row (default 500 for images, 2000 otherwise; ``quick``: a fifth).
        device: 'cpu', 'cuda' or 'cuda:N' (default: CUDA if available); seed: prior draws of every row.
        out: output folder (default ``results/<data set name>``).
        checkpoint, vae_checkpoint: model files (default: shipped, else cached, else trained and cached);
            ``checkpoint`` is any ``models.load_model`` source: a scoregen checkpoint or a diffusers folder.
        dtype: the eps-network's compute dtype, "fp32" (default), "bf16" or "fp16" (autocast; ``models.with_dtype``).
        grid: the time grid of every sampler: a rule of ``samplers.GRIDS``, or a grid file (a JSON list of
            decreasing times, or ``scoregen tune-grid``'s output; ``samplers.grids.load_grid``) or tensor,
            which fixes every fixed-step sampler's step count (samplers that stop at t_min > 0 get its last
            time 0 replaced by the model's t_min); rows with ``Sweep.grid`` "tuned" run on the model's
            tuned grid. grid_nfe: each sampler's sample picture shows its row with the NFE closest to this;
            batch_size: samples drawn per sampler call (default ``distributed.CHUNK``): the chunks, each seeded
            from ``seed`` and its index, that the processes of a torchrun share (the same samples at any world
            size).
        cache_dir: where trained models and feature networks are cached (default ``~/.cache/scoregen``).
        threads: torch's CPU threads during the run (default: unchanged); on a busy machine 1 is fastest.
        inception_path: Inception weights on disk (``features.InceptionFeatures``): image rows are then
            scored in its pool3 space, i.e. standard FID and KID, instead of the package's feature network.
        progress: progress bars and the note of what was written, on stderr.
    """
    dataset: str = "digits"
    _: KW_ONLY
    samplers: list | str | None = None
    steps: list | dict | None = None
    tols: list | None = None
    n: int | None = None
    device: str | None = None
    seed: int = 0
    out: str | Path | None = None
    quick: bool = False
    checkpoint: str | Path | None = None
    vae_checkpoint: str | Path | None = None
    dtype: str | None = None
    dataset_options: dict | None = None
    grid: str | Path | torch.Tensor = "uniform"
    grid_nfe: float = 100
    batch_size: int | None = None
    cache_dir: str | Path | None = None
    threads: int | None = None
    inception_path: str | Path | None = None
    progress: bool = True


def compare(settings: CompareSettings) -> list[dict]:
    """Sweep samplers over step counts (``settings``) and write the table, plot and sample grids.

    Returns the rows (dicts; see ``compare.csv``), the data floor first. Everything is validated
    before any model is trained, any sample drawn or any file written. Under torchrun every rank runs
    it: the ranks share each row's chunks (and the training of a missing model), rank 0 alone measures,
    writes and returns the rows, the others return None.
    """
    s = settings
    if not isinstance(s, CompareSettings):
        raise ValueError(f"compare takes a CompareSettings; got {s!r}")
    dataset_options = dict(s.dataset_options or {})
    if not isinstance(s.dataset, str):
        raise ValueError(f"dataset must be a data set name; got {s.dataset!r}")
    _check_samplers(s.samplers)
    grid = resolve_grid(s.grid)
    device = resolve_device(s.device)
    for name, value, low in (("n", s.n, 2), ("batch_size", s.batch_size, 2), ("threads", s.threads, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    compute_dtype(s.dtype)
    # a given eps-network first: its sample size is a folder's image size, and it fits or fails before any training
    given = None if s.checkpoint is None else load_checked(s.checkpoint, "eps", device=device, names=CHECKPOINTS)
    shape = None if given is None else getattr(given.model, "data_shape", given.info.shape)
    size = shape[-1] if shape else None
    dataset, dataset_options = dataset_source(s.dataset, dataset_options, size=size)
    data = load_dataset(dataset, **dataset_options)
    is_image = data.is_image
    samplers = s.samplers
    if samplers is None and s.vae_checkpoint is None and given is not None and given.info.config is None:
        samplers = [label for label, sweep in SWEEPS.items() if sweep.kind != "vae"]  # no VAE of theirs to compare
    rows = _plan(samplers, s.steps, s.tols, s.quick, is_image,
                 grid_steps=len(grid) - 1 if isinstance(grid, torch.Tensor) else None)
    n = s.n or DEFAULT_N["image" if is_image else "vector"] // (5 if s.quick else 1)
    if is_image and n > data.train.shape[0]:
        raise ValueError(f"n must be at most {data.train.shape[0]} for {data.name}: the data floor compares "
                         f"n training items with the held-out split; got {n}")
    out = outputs.check_writable(Path(s.out) if s.out is not None else Path("results") / data.name, folder=True)
    kinds = ("eps", "vae") if any(r.sweep.kind == "vae" for r in rows) else ("eps",)
    if s.vae_checkpoint is not None and "vae" not in kinds:
        raise ValueError("vae_checkpoint given but 'vae' is not in the sweep")
    if not (isinstance(s.grid_nfe, (int, float)) and s.grid_nfe > 0):
        raise ValueError(f"grid_nfe must be a positive number; got {s.grid_nfe!r}")
    cache_dir = Path(s.cache_dir) if s.cache_dir is not None else default_cache_dir().parent
    if s.inception_path is not None and not is_image:
        raise ValueError(f"inception_path scores images; {data.name} samples have shape {data.shape}")
    main, progress = distributed.is_main(), s.progress and distributed.is_main()
    inception = None if s.inception_path is None or not main else InceptionFeatures(s.inception_path, device=device)

    with _num_threads(s.threads):
        start = time.perf_counter()
        # the eps-network first: a checkpoint that does not fit fails before any VAE is trained (by every rank);
        # a latent diffusion model's VAE row is its own VAE unless another is given
        models = {}
        for kind in kinds:
            own = _own_vae(models["eps"]) if kind == "vae" and s.vae_checkpoint is None else None
            models[kind] = own or model_for(kind, data, dataset, dataset_options, names=CHECKPOINTS, device=device,
                                            checkpoint=given if kind == "eps" else s.vae_checkpoint,
                                            cache_dir=cache_dir, progress=progress)
        models["eps"] = with_dtype(models["eps"], s.dtype)
        extractor = None if not (is_image and main) else inception.with_reference(data) if inception else \
            FeatureNet.for_dataset(data, cache_dir=cache_dir / "features", device=device)
        if extractor is not None:
            print(_features_note(extractor.info, data.name), file=sys.stderr)
        with distributed.main_first():  # rank 0 tunes the grids into the cache, the others read them
            for row in rows:
                if row.sweep.kind == "eps":
                    row.grid = _row_grid(row, grid, models["eps"], cache_dir, progress)
        evaluate = _evaluator(data, extractor, n, s.seed) if main else None
        kept, reference = _sample_rows(rows, models, data, n, device, s.seed, s.batch_size or distributed.CHUNK,
                                       evaluate, progress)
        if not main:
            return None
        source = "oracle draws" if data.oracle is not None else "training items"
        floor_row = dict(sampler=FLOOR, method=None, options={"source": source}, steps=None, tol=None, nfe=None,
                         n=n, **floor(evaluate, data, n, generator=torch.Generator().manual_seed(s.seed + 2)),
                         wall_s=None, device=str(device))
        table = [floor_row] + [r.fields for r in rows]
        summary = dict(dataset=data.name, dataset_options=dataset_options, n=n, seed=s.seed, device=str(device),
                       world_size=distributed.world_size(), chunk=s.batch_size or distributed.CHUNK,
                       grid=grid if isinstance(grid, str) else grid.tolist(), ode_reference=reference,
                       checkpoint=models["eps"].info.path, model=_model_facts(models["eps"].info),
                       dtype=s.dtype or "fp32",
                       vae_checkpoint=models["vae"].info.path if "vae" in models else None,
                       feature_net=None if extractor is None else extractor.info,
                       wall_s_total=time.perf_counter() - start, rows=table)
        _write_outputs(out, summary, rows, kept, s.grid_nfe, progress)
    return table


def _own_vae(loaded: LoadedModel) -> LoadedModel | None:
    """The VAE of a latent diffusion model (``nets.latent``), None for any other model."""
    model, info = loaded.model, loaded.info
    if not isinstance(model, LatentDiffusion):
        return None
    return LoadedModel(model.vae, loaded.sde, replace(info, path=f"{info.path} (its VAE)", shape=model.data_shape))


def _features_note(info: dict, dataset: str) -> str:
    """What space fd and kid were measured in: Inception's (FID, KID) or the package's feature network's."""
    if info["kind"] == "inception":
        return f"fd and kid are measured in Inception's pool3 features ({info['path']}): FID and KID"
    accuracy = "" if info.get("accuracy") is None else f", {100 * info['accuracy']:.1f}% held-out accuracy"
    return (f"fd and kid are measured in the features of a network trained on {dataset} ({info['kind']}{accuracy}), "
            "not Inception's: not FID; give inception_path (--inception-path) for standard FID")


def _model_facts(info: ModelInfo) -> dict:
    """What the summary says of the eps-network: its format, smallest time and the format's own facts."""
    return dict(format=info.format, t_min=info.t_min, **info.details)


# --- outputs (rendered by scoregen.outputs) ------------------------------------------------------------
def markdown_table(rows: list[dict]) -> str:
    """The rows of ``compare`` as a markdown table, each metric as ``value ± spread``; options are the
    sweep's own (every resolved option is in the JSON and CSV)."""
    return outputs.markdown_table(rows, METRICS, {label: sweep.options for label, sweep in SWEEPS.items()})


def _write_outputs(out: Path, summary: dict, rows: list[_Row], kept: dict, grid_nfe: float, progress: bool):
    """Every file of ``compare``, rendered in memory first, then each written whole (``outputs.write_atomic``).
    quality_vs_nfe.png: the headline metrics, one line per sampler, a star for the VAE and each tuned row."""
    table = summary["rows"]
    title = f"{summary['dataset']}: n = {summary['n']} samples per row, seed {summary['seed']}, {summary['device']}"
    note = f"Model: {summary['checkpoint']} ({summary['model']['format']}, {summary['dtype']})." + (
        "" if summary["feature_net"] is None else f" {_features_note(summary['feature_net'], summary['dataset'])}.")
    plot = outputs.quality_plot(table, title, sum(PLOTTED.values(), ()), LOG_SCALE,
                                stars=[label for label, sweep in SWEEPS.items() if sweep.kind == "vae" or sweep.grid])
    files = {"compare.json": json.dumps(summary, indent=2).encode() + b"\n",
             "compare.csv": outputs.csv_table(table, METRICS),
             "compare.md": f"# {title}\n\n{note}\n\n{markdown_table(table)}".encode(), "quality_vs_nfe.png": plot}
    for label in dict.fromkeys(r.label for r in rows):
        best = min((r for r in rows if r.label == label), key=lambda r: abs(math.log(r.fields["nfe"] / grid_nfe)))
        files[f"samples_{label}.png"] = outputs.sample_png(kept[id(best)])
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        outputs.write_atomic(out / name, content)
    for stale in set(out.glob("samples_*.png")) - {out / name for name in files}:  # an earlier run's samplers
        stale.unlink()
    if progress:
        print(f"wrote {', '.join(files)} to {out} ({summary['wall_s_total']:.0f} s)", file=sys.stderr)


__all__ = ["compare", "CompareSettings", "markdown_table", "SWEEPS", "Sweep"]
