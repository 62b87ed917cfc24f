"""The sampler sweep: step count against sample quality, for every sampler of one eps-network and the VAE.

``compare("digits")`` loads (or trains, once, into the cache) the data set's eps-network, its VAE and,
for images, its feature network; draws ``n`` samples per row of the sweep from the same seeded prior
draws (common random numbers: rows differ by their sampler only); and measures every row against the
held-out split with the metrics of ``scoregen.metrics``:

    images         Frechet distance ``fd`` and ``kid`` in the feature network's space, of the samples
                   clamped to [-1, 1] (the pictures; ``clipped`` is the share of pixels that needed it)
    other data     sliced Wasserstein ``swd`` and ``mmd`` (unbiased MMD^2)
    mixture oracle ``logp`` (exact mean log-density of the samples), ``logp_data`` (the data's),
                   ``logp_gap``, ``moment_kl`` (exact KL between moment-matched Gaussians)

Every metric carries a spread ``<metric>_std``: KID's is its std over subsets; the others' is the
half-sampling estimate ``std(metric on random halves) / sqrt(2)`` of the sampling error at n (Politis &
Romano 1994; variance ~ 1/n). The ``data floor`` row is the same metrics on n real points independent
of the held-out split (training items, or fresh draws for synthetic data): the best a sampler can score.

NFE is counted, not assumed: adaptive solvers report what they used. Wall time is sampling alone.
Outputs (``compare.json``, ``compare.csv``, ``compare.md``, ``quality_vs_nfe.png``, ``samples_<sampler>.png``)
are written only after every row is measured, each to a temporary file then ``os.replace``-d; the folder
is checked to be writable before any work, and sample pictures of samplers that an earlier run into the
same folder had, but this one has not, are removed, so the folder holds one run.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import torch

from .checkpoint import TrainConfig, load_checkpoint, read_checkpoint
from .data import load_dataset
from .devices import resolve_device
from .features import FeatureNet, InceptionFeatures, default_cache_dir
from .metrics import floor, frechet_distance, image_metrics, sample_metrics
from .nets import PRESETS
from .nets.vae import PRESETS as VAE_PRESETS
from .nets.vae import VAE
from .outputs import check_writable, sample_png, write_atomic
from .samplers import GRIDS, sample
from .samplers.ode import ADAPTIVE
from .train import train


@dataclass(frozen=True)
class Sweep:
    """One line of the plot: ``method`` with ``options`` at each of ``values`` (step counts, or rtol = atol
    for an adaptive solver); ``quick`` are the values of ``--quick``."""
    method: str
    options: dict
    values: tuple
    quick: tuple
    images_only: bool = False

    @property
    def adaptive(self) -> bool:
        return self.options.get("solver") in ADAPTIVE


SWEEPS = {
    "ddpm": Sweep("ddpm", {}, (10, 20, 50, 100, 1000), (10, 100)),
    "ddim": Sweep("ddim", {}, (10, 20, 50, 100, 1000), (10, 100)),
    "sde": Sweep("sde", {"solver": "euler"}, (20, 50, 100, 200), (50,)),
    "ode-heun": Sweep("ode", {"solver": "heun2"}, (5, 10, 25), (10,)),
    "ode-dopri5": Sweep("ode", {"solver": "dopri5"}, (1e-2, 1e-3, 1e-4), (1e-3,)),
    "vae": Sweep("vae", {}, (1,), (1,), images_only=True),  # the conv VAE of nets.vae
}
FLOOR = "data floor"
DEFAULT_N = {"image": 500, "vector": 2000}        # samples per row; --quick: a fifth
METRICS = ("fd", "kid", "swd", "mmd", "logp", "logp_data", "logp_gap", "moment_kl", "clipped")  # column order
PLOTTED = {"image": ("fd", "kid"), "vector": ("swd", "mmd"), "oracle": ("moment_kl", "logp_gap")}
LOG_SCALE = ("fd", "swd", "moment_kl")             # positive metrics, plotted on a log axis

# Training recipes for a data set without a checkpoint (TrainConfig fields); "model" is completed by
# train.model_config_for. eps: MLP for vectors (seconds to a minute on CPU), configs/digits.json for digits,
# small32/small64 for other images (GPU recommended); vae: the conv VAE of nets.vae (see _vae_model).
RECIPES = {
    ("eps", "vector"): dict(model={"arch": "mlp", "hidden": 128, "depth": 3}, steps=1000, batch_size=512,
                            lr=2e-3, warmup=100, ema_decay=0.995),
    ("eps", "digits"): dict(model={"preset": "digits"}, steps=2000, batch_size=128, lr=1e-3, warmup=200,
                            ema_decay=0.998),
    ("eps", "image"): dict(steps=5000, batch_size=64, lr=2e-4, warmup=500, ema_decay=0.999),
    ("vae", "digits"): dict(steps=2000, batch_size=128, lr=2e-3, warmup=100, ema_decay=0.995),
    ("vae", "image"): dict(steps=5000, batch_size=64, lr=1e-3, warmup=200, ema_decay=0.999),
}


@dataclass
class _Row:
    label: str
    sweep: Sweep
    value: float
    fields: dict = field(default_factory=dict)


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
        elif sweep.method == "vae" and v != 1:
            raise ValueError(f"'vae' is one decoder call: its only step count is 1; got {v!r}")
    return values


def _plan(samplers, steps, tols, quick: bool, is_image: bool) -> list[_Row]:
    """The rows of the sweep: ``steps`` a list for every fixed-step sampler or a dict sampler -> list
    (tolerances for adaptive ones), ``tols`` a list for every adaptive sampler."""
    explicit = samplers is not None
    samplers = _check_samplers(samplers)
    per_label = dict(steps) if isinstance(steps, dict) else {}
    bad = [k for k in per_label if k not in samplers]
    if bad:
        raise ValueError(f"steps given for sampler(s) {', '.join(map(repr, bad))} not in the sweep "
                         f"({', '.join(samplers)})")
    rows = []
    for label in samplers:
        sweep = SWEEPS[label]
        if sweep.images_only and not is_image:
            if explicit:
                raise ValueError(f"sampler {label!r} needs image data (nets.vae builds convolutional VAEs)")
            continue
        if label in per_label:
            values = per_label[label]
        elif sweep.adaptive and tols is not None:
            values = tols
        elif not sweep.adaptive and sweep.method != "vae" and steps is not None and not isinstance(steps, dict):
            values = steps
        else:
            values = sweep.quick if quick else sweep.values
        rows += [_Row(label, sweep, v) for v in _check_values(label, values)]
    if not rows:
        raise ValueError("empty sweep: no rows to run")
    return rows


# --- models: the given checkpoint, the shipped one, the cached one, or train one ----------------------
def _kind_of(data) -> str:
    return "digits" if data.name == "digits" else "image" if data.is_image else "vector"


def _eps_model(data) -> dict:
    """A CPU-sized U-Net for images without a preset of their own: small32 or small64 on the data's channels."""
    preset = f"small{data.shape[-1]}"
    return {"preset": preset, "in_channels": data.shape[0]} if preset in PRESETS else {}


def _vae_model(data) -> dict:
    """A conv VAE for the data's shape: the data set's preset if it has one, else small32 or seed64 resized."""
    preset = data.name if data.name in VAE_PRESETS else "small32" if data.shape[-1] <= 32 else "seed64"
    return {"arch": "vae", "preset": preset, "shape": list(data.shape), "levels": data.levels, "scale": None}


def _recipe(kind: str, data, dataset: str, dataset_options: dict, device: torch.device,
            cache_dir: Path) -> TrainConfig:
    fields = dict(RECIPES[kind, _kind_of(data)])
    if kind == "vae":
        fields["model"] = _vae_model(data)
    elif _kind_of(data) == "image":
        fields["model"] = _eps_model(data)
    config = TrainConfig(dataset=dataset, dataset_options=dict(dataset_options), sample_every=0, ckpt_every=500,
                         **fields)
    digest = hashlib.sha1(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:10]
    out = cache_dir / "models" / f"{data.name}-{kind}-{digest}"
    return TrainConfig.from_dict({**config.to_dict(), "out": str(out), "device": str(device)})


def _check_model(path, model, config: TrainConfig, kind: str, data, dataset: str, dataset_options: dict):
    """Raise unless the checkpoint at ``path`` is a ``kind`` model of this data set and its sample shape."""
    is_vae = isinstance(model, VAE)
    if is_vae != (kind == "vae"):
        what, arg = ("a VAE", "vae_checkpoint (--vae-checkpoint)") if is_vae else ("an eps-network", "checkpoint")
        raise ValueError(f"checkpoint {path} holds {what}; pass it as {arg}")
    if config.dataset != dataset:
        raise ValueError(f"checkpoint {path} was trained on data set {config.dataset!r}, not {dataset!r}")
    if config.dataset_options != dataset_options:
        theirs = load_dataset(config.dataset, **config.dataset_options)
        if (theirs.name, theirs.shape) != (data.name, data.shape):
            raise ValueError(f"checkpoint {path} was trained on {theirs.name} (samples {theirs.shape}), "
                             f"not {data.name} (samples {data.shape}); dataset_options differ: "
                             f"{config.dataset_options} vs {dataset_options}")
    if is_vae:
        ok = model.shape == data.shape
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


def _shipped(name: str) -> Path | None:
    path = Path(str(resources.files("scoregen") / "checkpoints" / name))
    return path if path.is_file() else None


def _load_model(kind: str, checkpoint, data, dataset: str, dataset_options: dict, device: torch.device,
                cache_dir: Path, progress: bool):
    """``(model, sde, path)``: the given checkpoint (an error if it does not fit), else the shipped one if it
    fits, else the cached one, else a freshly trained one (cached under ``cache_dir/models``)."""
    if checkpoint is not None:
        model, sde, config = load_checkpoint(checkpoint, device=device)
        _check_model(checkpoint, model, config, kind, data, dataset, dataset_options)
        return model, sde, str(checkpoint)
    shipped = _shipped(f"{dataset}.pt" if kind == "eps" else f"{dataset}-vae.pt")
    if shipped is not None:
        model, sde, config = load_checkpoint(shipped, device=device)
        try:
            _check_model(shipped, model, config, kind, data, dataset, dataset_options)
            return model, sde, str(shipped)
        except ValueError:
            pass  # another variant of the data set (options): use the cache or train
    config = _recipe(kind, data, dataset, dataset_options, device, cache_dir)
    path = Path(config.out) / "ckpt.pt"
    if not (path.is_file() and read_checkpoint(path)["step"] >= config.steps):
        print(f"no {kind} checkpoint for {data.name}: training one ({config.steps} steps) into {config.out}",
              file=sys.stderr)
        train(config, resume=path.is_file(), progress=progress)
    model, sde, _ = load_checkpoint(path, device=device)
    return model, sde, str(path)


# --- metrics -------------------------------------------------------------------------------------------
def _evaluator(data, extractor, n: int, seed: int, halves: int = 8):
    """``evaluate(x) -> {metric: value, metric_std: spread}`` for samples x (see the module docstring).
    Low-dimensional data is compared with n held-out points (all of them if fewer)."""
    data = data if data.is_image else replace(data, test=data.test[:n])

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
        out = full(rep)
        g = torch.Generator().manual_seed(seed + 1)
        n = rep.shape[0]
        draws = [cheap(rep[torch.randperm(n, generator=g)[:n // 2].to(rep.device)]) for _ in range(halves)]
        for key in draws[0]:
            values = torch.tensor([d[key] for d in draws], dtype=torch.float64)
            out[f"{key}_std"] = values.std().item() / math.sqrt(2)
        return out

    return evaluate


# --- outputs -------------------------------------------------------------------------------------------
def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _metric_keys(rows: list[dict]) -> list[str]:
    return [k for k in METRICS if any(k in r for r in rows)]


def markdown_table(rows: list[dict]) -> str:
    """The rows of ``compare`` as a markdown table, each metric as ``value ± spread``; options are the
    sweep's own (every resolved option is in the JSON and CSV)."""
    keys = _metric_keys(rows)
    head = ["sampler", "options", "steps", "NFE"] + keys + ["wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        opts = SWEEPS[r["sampler"]].options if r["sampler"] in SWEEPS else r["options"]
        opts = ", ".join(f"{k}={v}" for k, v in opts.items())
        steps = _fmt(r["steps"]) if r.get("tol") is None else f"tol {r['tol']:g}"
        cells = [r["sampler"], opts, steps, _fmt(r["nfe"])]
        cells += [_fmt(r.get(k)) + (f" ± {r[k + '_std']:.2g}" if r.get(k + "_std") is not None else "")
                  for k in keys]
        lines.append("| " + " | ".join(cells + [_fmt(r["wall_s"])]) + " |")
    return "\n".join(lines) + "\n"


def _csv(rows: list[dict]) -> bytes:
    keys = _metric_keys(rows)
    head = ["sampler", "method", "options", "steps", "tol", "nfe", "n"]
    head += [c for k in keys for c in (k, f"{k}_std") if any(c in r for r in rows)] + ["wall_s", "device"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, head, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({**r, "options": json.dumps(r["options"], sort_keys=True)})
    return buf.getvalue().encode()


def _plot(rows: list[dict], title: str) -> bytes:
    """quality_vs_nfe.png: one panel per headline metric, NFE on a log axis, one line per sampler (one point
    for the VAE), the data floor dashed; error bars are the spreads."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in PLOTTED["image"] + PLOTTED["vector"] + PLOTTED["oracle"] if any(k in r for r in rows)]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.8), squeeze=False)
    floor_row = next(r for r in rows if r["sampler"] == FLOOR)
    for ax, key in zip(axes[0], keys):
        for label in dict.fromkeys(r["sampler"] for r in rows if r["sampler"] != FLOOR):
            rs = sorted((r for r in rows if r["sampler"] == label), key=lambda r: r["nfe"])
            ax.errorbar([r["nfe"] for r in rs], [r[key] for r in rs], yerr=[r.get(key + "_std", 0) for r in rs],
                        marker="*" if label == "vae" else "o", ms=10 if label == "vae" else 4,
                        ls="-" if len(rs) > 1 else "none", capsize=2, label=label)
        ax.axhline(floor_row[key], ls="--", c="k", lw=1, label=FLOOR)
        ax.set_xscale("log")
        if key in LOG_SCALE and all(r[key] > 0 for r in rows):
            ax.set_yscale("log")
        ax.set_xlabel("NFE (network calls per sample)")
        ax.set_title(key)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


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
def _sample_rows(rows: list[_Row], models: dict, data, n: int, device: torch.device, seed: int, grid: str,
                 batch_size: int, evaluate, progress: bool) -> dict:
    """Fill each row's fields; return ``{label: samples}`` kept for the grid pictures (the first 64 images
    or 2000 points of every row)."""
    from tqdm.auto import tqdm

    kept = {}
    for row in tqdm(rows, desc="compare", disable=not progress, dynamic_ncols=True):
        sweep = row.sweep
        model, sde = models["vae" if sweep.method == "vae" else "eps"]
        options = dict(sweep.options, **({"rtol": row.value, "atol": row.value} if sweep.adaptive else {}))
        g = torch.Generator(device).manual_seed(seed)
        xs, nfes = [], []
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for i in range(0, n, batch_size):
            res = sample(model, sde, (min(batch_size, n - i), *data.shape), sweep.method,
                         None if sweep.adaptive else int(row.value), grid=grid, generator=g, **options)
            xs.append(res.x)
            nfes.append(res.nfe)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - start
        x, clipped = _clip(torch.cat(xs), data)
        resolved = {k: v for k, v in res.options.items() if k not in ("method", "steps", "rtol", "atol")}
        row.fields = dict(sampler=row.label, method=sweep.method, options=resolved,
                          steps=None if sweep.adaptive else int(row.value), tol=row.value if sweep.adaptive else None,
                          nfe=sum(nfes) / len(nfes) if sweep.adaptive else nfes[0], n=n, **evaluate(x),
                          **clipped, wall_s=wall, device=str(device))
        kept[id(row)] = x[:64 if data.is_image else 2000].cpu()
    return kept


def compare(dataset: str = "digits", *, samplers=None, steps=None, tols=None, n: int | None = None,
            device=None, seed: int = 0, out=None, quick: bool = False, checkpoint=None, vae_checkpoint=None,
            dataset_options: dict | None = None, grid: str = "uniform", grid_nfe: float = 100,
            batch_size: int | None = None, cache_dir=None, threads: int | None = None,
            inception_path=None, progress: bool = True) -> list[dict]:
    """Sweep samplers over step counts on ``dataset`` and write the table, plot and sample grids to ``out``.

    Args:
        dataset: a ``load_dataset`` name ('digits', 'gmm', 'toy', 'cartoon', 'folder', 'npz');
            ``dataset_options`` go to its loader (e.g. ``{"mixture": "ring8"}``, ``{"path": ...}``).
        samplers: keys of ``SWEEPS`` (default: all; 'vae' for image data only).
        steps: step counts for every fixed-step sampler, or a dict sampler -> step counts (tolerances
            for an adaptive one); tols: tolerances (rtol = atol) for every adaptive sampler.
            Defaults: each ``Sweep``'s values (``quick``: its quick values).
        n: samples per row (default 500 for images, 2000 otherwise; ``quick``: a fifth).
        device: 'cpu', 'cuda' or 'cuda:N' (default: CUDA if available); seed: prior draws of every row.
        out: output folder (default ``results/<data set name>``).
        checkpoint, vae_checkpoint: model files (default: shipped, else cached, else trained and cached).
        grid: the time grid of every sampler (``samplers.GRIDS``); grid_nfe: each sampler's sample picture
            shows its row with the NFE closest to this; batch_size: samples drawn per sampler call.
        cache_dir: where trained models and feature networks are cached (default ``~/.cache/scoregen``).
        threads: torch's CPU threads during the run (default: unchanged); on a busy machine 1 is fastest.
        inception_path: Inception weights on disk (``features.InceptionFeatures``): image rows are then
            scored in its pool3 space, i.e. standard FID and KID, instead of the package's feature network.

    Returns the rows (dicts; see ``compare.csv``), the data floor first. Everything is validated
    before any model is trained, any sample drawn or any file written.
    """
    dataset_options = dict(dataset_options or {})
    if not isinstance(dataset, str):
        raise ValueError(f"dataset must be a data set name; got {dataset!r}")
    _check_samplers(samplers)
    if grid not in GRIDS:
        raise ValueError(f"unknown grid {grid!r}; valid: {', '.join(GRIDS)}")
    device = resolve_device(device)
    for name, value, low in (("n", n, 2), ("batch_size", batch_size, 2), ("threads", threads, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    data = load_dataset(dataset, **dataset_options)
    is_image = data.is_image
    rows = _plan(samplers, steps, tols, quick, is_image)
    n = n or DEFAULT_N["image" if is_image else "vector"] // (5 if quick else 1)
    if is_image and n > data.train.shape[0]:
        raise ValueError(f"n must be at most {data.train.shape[0]} for {data.name}: the data floor compares "
                         f"n training items with the held-out split; got {n}")
    out = check_writable(Path(out) if out is not None else Path("results") / data.name, folder=True)
    if vae_checkpoint is not None and not any(r.sweep.method == "vae" for r in rows):
        raise ValueError("vae_checkpoint given but 'vae' is not in the sweep")
    if not (isinstance(grid_nfe, (int, float)) and grid_nfe > 0):
        raise ValueError(f"grid_nfe must be a positive number; got {grid_nfe!r}")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir().parent
    if inception_path is not None and not is_image:
        raise ValueError(f"inception_path scores images; {data.name} samples have shape {data.shape}")
    inception = None if inception_path is None else InceptionFeatures(inception_path, device=device)

    with _num_threads(threads):
        start = time.perf_counter()
        models, paths = {}, {}
        for kind in ("eps", "vae") if any(r.sweep.method == "vae" for r in rows) else ("eps",):
            # the eps-network first: a checkpoint that does not fit fails before any VAE is trained
            model, sde, paths[kind] = _load_model(kind, checkpoint if kind == "eps" else vae_checkpoint, data,
                                                  dataset, dataset_options, device, cache_dir, progress)
            models[kind] = (model, sde)
        extractor = None if not is_image else inception.with_reference(data) if inception is not None else \
            FeatureNet.for_dataset(data, cache_dir=cache_dir / "features", device=device)
        evaluate = _evaluator(data, extractor, n, seed)
        kept = _sample_rows(rows, models, data, n, device, seed, grid, batch_size or n, evaluate, progress)
        source = "oracle draws" if data.oracle is not None else "training items"
        floor_row = dict(sampler=FLOOR, method=None, options={"source": source}, steps=None, tol=None, nfe=None,
                         n=n, **floor(evaluate, data, n, generator=torch.Generator().manual_seed(seed + 2)),
                         wall_s=None, device=str(device))
        table = [floor_row] + [r.fields for r in rows]
        summary = dict(dataset=data.name, dataset_options=dataset_options, n=n, seed=seed, device=str(device),
                       grid=grid, checkpoint=paths.get("eps"), vae_checkpoint=paths.get("vae"),
                       feature_net=None if extractor is None else extractor.info,
                       wall_s_total=time.perf_counter() - start, rows=table)
        _write_outputs(out, summary, rows, kept, grid_nfe, progress)
    return table


def _write_outputs(out: Path, summary: dict, rows: list[_Row], kept: dict, grid_nfe: float, progress: bool):
    """Every file of ``compare``, rendered in memory first, then each written whole (``outputs.write_atomic``)."""
    table = summary["rows"]
    title = f"{summary['dataset']}: n = {summary['n']} samples per row, seed {summary['seed']}, {summary['device']}"
    files = {"compare.json": json.dumps(summary, indent=2).encode() + b"\n", "compare.csv": _csv(table),
             "compare.md": f"# {title}\n\n{markdown_table(table)}".encode(), "quality_vs_nfe.png": _plot(table, title)}
    for label in dict.fromkeys(r.label for r in rows):
        best = min((r for r in rows if r.label == label), key=lambda r: abs(math.log(r.fields["nfe"] / grid_nfe)))
        files[f"samples_{label}.png"] = sample_png(kept[id(best)])
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        write_atomic(out / name, content)
    for stale in set(out.glob("samples_*.png")) - {out / name for name in files}:  # an earlier run's samplers
        stale.unlink()
    if progress:
        print(f"wrote {', '.join(files)} to {out} ({summary['wall_s_total']:.0f} s)", file=sys.stderr)


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


__all__ = ["compare", "markdown_table", "parse_steps", "SWEEPS", "Sweep"]
