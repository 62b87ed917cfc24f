"""The sampler sweep: step count against sample quality, for every sampler of one eps-network and the VAE.

``compare(CompareSettings("digits"))`` runs in three stages with plain data between them:

    plan    ``plan.plan(settings, facts) -> Plan``: the rows (a ``Sweep`` per sampler at its step counts or
            tolerances), samples per row, the model kinds they need; pure, checked before anything is loaded
    run     ``run.run(plan, models, ...) -> Results``: the data set's eps-network and VAE, found beforehand by
            ``models.zoo`` (shipped, cached, or trained once into the cache), sampled ``n`` times per row from
            the same seed (the eps-network's rows from the same prior draws, common random numbers: they
            differ by their sampler only; the VAE's by its own ``sample``, one decoder call), shared by the
            ranks of a torchrun, and measured against the held-out split (``measure``)
    report  ``report.report(results, out)``: the table with each row's verdict, the paragraph of what the run
            can tell apart, CSV, plot and sample pictures

The metrics (``scoregen.evaluation.metrics``, ``scoregen.evaluation.manifold``):

    images         Frechet distance ``fd``, the same extrapolated to infinitely many samples ``fd_inf``
                   (Chong & Forsyth 2020) and ``kid`` in the feature network's space, of the samples
                   clamped to [-1, 1] (the pictures; ``clipped`` is the share of pixels that needed it)
    other data     sliced Wasserstein ``swd`` and ``mmd`` (unbiased MMD^2)
    both           ``precision``, ``recall`` (Kynkaanniemi et al. 2019), ``density`` and ``coverage`` (Naeem
                   et al. 2020): fidelity and diversity apart, in the same space
    mixture oracle ``logp`` (exact mean log-density of the samples), ``logp_data`` (the data's),
                   ``logp_gap``, ``moment_kl`` (exact KL between moment-matched Gaussians)
    deterministic  ``ode_err``: RMS distance per coordinate to the PF-ODE's own map of the same prior draws
    samplers       (``samplers.pf_ode_solution``: dopri5 at 1e-5, computed once), the sampler's own
                   error, free of the sampling noise of the distances above

Every metric carries a spread ``<metric>_std``, the sampling error of its value at n with the reference held
fixed: its standard deviation over ``halves`` random halves of the row's samples (``evaluation.spread``; the
delete-d jackknife with d = n/2, variance ~ 1/n). Every row is measured on the same halves, so the difference
between two rows has a paired spread (``rank``): each row is compared with the best row by ``rank_by`` (or the
``baseline``) and called resolved or tied at 95%, and rows at equal NFE with each other. ``repeats`` draws every
row from more seeds and adds the spread over them (``<metric>_rerun_std``). The ``data floor`` row is the same
metrics on n real points independent of the held-out split (training items, or fresh draws for synthetic data):
the best a sampler can score.

NFE is counted, not assumed: adaptive solvers report what they used. Wall time is sampling alone. A latent
diffusion model (kind "latent", ``nets.latent``) is sampled on its latents and decoded: its rows add
``decoder_calls`` (1, not NFE), its ``ode_err`` is measured on the decoded samples, and its own VAE is the
VAE row unless another is given (``zoo.vae_of``). The output folder and the cache are checked to be writable
folders before any work, and the output written only after every row is measured (``report``).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

from . import plan, report, run
from ...core.devices import resolve_device
from ...data import dataset_source, load_dataset, with_data_path
from ...models import zoo
from ...models.loading import load_checked, with_dtype
from ...runtime import distributed, outputs
from ...runtime.cache import cache_dir as runtime_cache_dir
from ...samplers.grids import resolve_grid
from ...samplers.learned import load_solver
from ..features import InceptionFeatures, load_reference_stats
from .plan import SWEEPS, Facts, Plan, Sweep
from .report import markdown_table
from .run import Results
from .settings import CHECKPOINTS, CompareSettings, parse_steps


def compare(settings: CompareSettings) -> list[dict] | None:
    """Sweep samplers over step counts (``settings``) and write the table, plot and sample grids.

    Returns the rows (dicts; see ``compare.csv``), the data floor first. Everything is validated
    before any model is trained, any sample drawn or any file written. Under torchrun every rank runs
    it: the ranks share each row's chunks (and the training of a missing model), rank 0 alone measures,
    writes and returns the rows, the others return None.
    """
    s = settings
    plan.check(s, SWEEPS)
    cache_dir = outputs.check_writable(runtime_cache_dir(s.cache_dir), folder=True)
    dataset_options = with_data_path(s.dataset_options, s.data_path)
    grid = resolve_grid(s.grid)
    device = resolve_device(s.device)
    # a given eps-network first: its sample size is a folder's image size, and it fits or fails before any training
    given = None if s.checkpoint is None else load_checked(s.checkpoint, "eps", device=device, names=CHECKPOINTS)
    shape = None if given is None else given.model.data_shape if given.kind == "latent" else given.info.shape
    dataset, dataset_options = dataset_source(s.dataset, dataset_options, size=shape[-1] if shape else None)
    data = load_dataset(dataset, **dataset_options)
    facts = Facts(data.name, tuple(data.shape), data.is_image, data.train.shape[0],
                  grid_steps=len(grid) - 1 if isinstance(grid, torch.Tensor) else None,
                  foreign=given is not None and given.info.config is None,
                  solver_steps=None if s.solver is None else load_solver(s.solver).steps)
    p = plan.plan(s, facts, SWEEPS)
    out = outputs.check_writable(p.out, folder=True)
    main = distributed.is_main()
    inception = None if s.inception_path is None or not main else InceptionFeatures(s.inception_path, device=device)
    ref_stats = None if s.ref_stats is None else load_reference_stats(s.ref_stats)
    if s.save_ref_stats is not None:
        outputs.check_writable(Path(s.save_ref_stats))

    started = time.perf_counter()
    models = _models(p, data, dataset, dataset_options, given, s, device, cache_dir)
    results = run.run(p, models, data, s, grid=grid, device=device, dataset_options=dataset_options,
                      cache_dir=cache_dir, inception=inception, ref_stats=ref_stats, started=started)
    if results is None:  # a rank other than 0
        return None
    report.report(results, out, grid_nfe=s.grid_nfe, progress=s.progress and main)
    return results.summary["rows"]


def _models(p: Plan, data, dataset: str, dataset_options: dict, given, s: CompareSettings, device,
            cache_dir) -> dict:
    """The models of the plan's kinds (``models.zoo.model_for``), the eps-network first: a checkpoint that does
    not fit fails before any VAE is trained (by every rank); a latent diffusion model's VAE row is its own VAE
    unless another is given. The eps-network computes in ``s.dtype``."""
    progress = s.progress and distributed.is_main()
    models = {}
    for kind in p.kinds:
        own = zoo.vae_of(models["eps"]) if kind == "vae" and s.vae_checkpoint is None else None
        models[kind] = own or zoo.model_for(kind, data, dataset, dataset_options, names=CHECKPOINTS, device=device,
                                            checkpoint=given if kind == "eps" else s.vae_checkpoint,
                                            cache_dir=cache_dir, progress=progress)
    models["eps"] = with_dtype(models["eps"], s.dtype)
    return models


__all__ = ["compare", "CompareSettings", "markdown_table", "parse_steps", "SWEEPS", "Sweep", "Facts", "Plan",
           "Results"]
