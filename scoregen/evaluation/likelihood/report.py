"""The likelihood table: bits/dim of held-out data under every model given, in one convention (``bpd``), as
the ``scoregen likelihood`` command computes it (``table(LikelihoodSettings(...))``: checkpoints and data loaded,
chunks of points shared by torchrun's processes, JSON written) or of models in memory (``likelihood_table``).

One estimator per model kind, each ``(x, model, settings, generator, levels=)`` -> the parts of its rows, the
per-point values before the mean over the points, so that the parts of several chunks join into one table
(``likelihood_rows``):

    diffusion_points  an eps-network (``Diffusion``): the PF-ODE likelihood and the DDPM bound
    vae_points        a VAE (``nets.vae.VAE``): its ELBO and IWAE bounds
    latent_points     a latent diffusion model (``Diffusion``): its VAE with the diffusion prior (``latent_elbo``)

They draw from one generator in the table's order (diffusion, VAE, prior): a chunk's numbers are a function of
its seed alone.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple

import torch

from ...core.checks import check_choice, check_sizes, check_tolerances
from ...core.sde import T_MIN, VPSDE
from ...core.settings import (count, data_path_setting, dataset_options_setting, device_setting, progress_setting,
                              setting)
from ...data import load_dataset, with_data_path
from ...models.loading import load_checked
from ...runtime import distributed
from ...runtime.outputs import check_writable, write_atomic
from .bound import ddpm_bound
from .bpd import bits_per_dim, dequantize
from .latent import latent_elbo
from .pf_ode import DIVERGENCES, _counted_model, log_likelihood

NAMES = {"eps": "--ckpt", "vae": "--vae-ckpt"}  # the setting each kind of checkpoint is given as (errors name it)


def _paths(items) -> list[Path]:
    return [Path(item) for item in items]


@dataclass(frozen=True)
class LikelihoodSettings:
    """What ``table`` computes: the models, the held-out data, the estimators' settings and where the rows go.
    Each field is a flag of ``scoregen likelihood`` (its help below), but ``rtol`` and ``atol``, the PF-ODE
    solves' tolerances in (0, 1) (Python only). ``progress``: tqdm bars of the chunks and of each estimator's
    solves, on stderr (rank 0). ``ckpt``: a path or a list of up to two (one eps-network, one latent
    diffusion model); ``dataset_options``: the loader's options, ``data_path`` its ``path``."""
    ckpt: list | None = setting(
        None, "eps-network: a checkpoint (e.g. scoregen/checkpoints/digits.pt) or a diffusers folder; or a latent "
              "diffusion model (e.g. scoregen/checkpoints/cartoon.pt): its VAE with the diffusion prior, and its VAE "
              "alone unless --vae-ckpt is given. Give it twice for one of each", aliases=("--model",), repeat=True,
        parse=_paths)
    vae_ckpt: Path | None = setting(None, "VAE checkpoint, e.g. scoregen/checkpoints/digits-vae.pt")
    dataset: str = setting("digits", "data set name")
    dataset_options: dict | None = dataset_options_setting()
    data_path: str | None = data_path_setting()
    n: int | None = setting(None, "held-out points (default: all)", flag="-n", parse=count(1))
    divergence: str = setting("hutchinson", "the PF-ODE's divergence: exact (D backward passes per call) or "
                                            "hutchinson (--probes)", choices=DIVERGENCES)
    probes: int = setting(1, "Hutchinson probes per point", parse=count(1))
    t_min: float | None = setting(None, "where the PF-ODE starts (default: the checkpoint's training t_min)")
    bound_steps: int = setting(1000, "K of the DDPM bound", parse=count(2))
    sample_steps: int | None = setting(None, "importance-sample this many of the K steps (default: all)",
                                       parse=count(1))
    iwae_k: int = setting(100, "samples of the IWAE bound", parse=count(1))
    prior_k: int = setting(16, "samples of the IWAE bound with the diffusion prior, one PF-ODE solve each",
                           parse=count(1))
    prior_divergence: str = setting("exact", "the diffusion prior's divergence: exact (a bound) or hutchinson (an "
                                             "estimate)", choices=DIVERGENCES)
    batch_size: int = setting(512, "points per solve or model call, each chunk of them seeded from --seed and its "
                                   "index: the unit that torchrun's processes share", parse=count(1))
    seed: int = setting(0)
    device: str | None = device_setting()
    out: Path | None = setting(None, "write the rows as JSON here")
    progress: bool = progress_setting()
    rtol: float = setting(1e-5, cli=False)
    atol: float = setting(1e-5, cli=False)

    def __post_init__(self):
        check_sizes(batch_size=self.batch_size, iwae_k=self.iwae_k, prior_k=self.prior_k)
        check_choice("prior_divergence", self.prior_divergence, DIVERGENCES)
        check_tolerances(rtol=self.rtol, atol=self.atol)


# the settings of the estimators (likelihood_table's keywords); the others say which models and data
ESTIMATION = ("divergence", "probes", "rtol", "atol", "bound_steps", "sample_steps", "iwae_k", "prior_k",
              "prior_divergence", "batch_size")


class Diffusion(NamedTuple):
    """A diffusion model of the table: its eps-network (or latent diffusion model), the sde it was trained with
    and the time its PF-ODE starts at (its training t_min)."""
    net: object
    sde: VPSDE
    t_min: float = T_MIN


# --- one estimator per model kind ----------------------------------------------------------------
def diffusion_points(x: torch.Tensor, model: Diffusion, settings: LikelihoodSettings, generator, *,
                     levels: int | None = None) -> list[dict]:
    """The PF-ODE likelihood of x, dequantised when ``levels`` is given (a bound on the discrete likelihood;
    exact for continuous data), and the DDPM bound on ``bound_steps`` uniform steps (all, or ``sample_steps``
    importance-sampled ones; discretised decoder)."""
    s, dim = settings, x[0].numel()
    start, logp, nfe = time.perf_counter(), [], []
    for xb in x.split(s.batch_size):
        xb = xb if levels is None else dequantize(xb, levels, generator=generator)
        res = log_likelihood(model.net, model.sde, xb, divergence=s.divergence, probes=s.probes, t_min=model.t_min,
                             rtol=s.rtol, atol=s.atol, generator=generator, progress=s.progress)
        logp.append(res.logp_probes if res.logp_probes is not None else res.logp[None])
        nfe.append(res.nfe)
    how = "exact div." if s.divergence == "exact" else f"Hutchinson x{s.probes}"
    parts = [dict(model="diffusion", quantity=f"PF-ODE ({how}, t_min={model.t_min:g})",
                  kind="exact" if levels is None else "bound", logp=torch.cat(logp, 1).cpu(), dim=dim, levels=levels,
                  nfe=sum(nfe) / len(nfe), seconds=time.perf_counter() - start)]
    start = time.perf_counter()
    res = ddpm_bound(model.net, model.sde, x, levels=levels, steps=s.bound_steps, sample_steps=s.sample_steps,
                     batch_size=s.batch_size, generator=generator, progress=s.progress)
    steps = f"K={s.bound_steps}" + ("" if s.sample_steps is None else f", {s.sample_steps} sampled")
    parts.append(dict(model="diffusion", quantity=f"DDPM bound ({steps})", kind="bound", bpd=res.bpd.cpu(),
                      nfe=res.nfe, seconds=time.perf_counter() - start))
    return parts


def vae_points(x: torch.Tensor, vae, settings: LikelihoodSettings, generator, *,
               levels: int | None = None) -> list[dict]:
    """The VAE's ELBO and IWAE-``iwae_k`` bounds, of dequantised x when its decoder is continuous and the data
    are quantised."""
    s, dim, parts = settings, x[0].numel(), []
    deq = levels if vae.levels is None else None                        # a density needs dequantised data
    for quantity, k in (("ELBO", 1), (f"IWAE (k={s.iwae_k})", s.iwae_k)):
        start, logp = time.perf_counter(), []
        with torch.no_grad():
            for xb in x.split(s.batch_size):
                xb = xb.to(vae.log_scale.device)
                xb = xb if deq is None else dequantize(xb, deq, generator=generator)
                logp.append(vae.elbo(xb, generator) if k == 1 else vae.iwae(xb, k, generator))
        parts.append(dict(model="VAE", quantity=quantity, kind="bound",
                          bpd=bits_per_dim(torch.cat(logp), dim, deq).cpu(), nfe=k,
                          seconds=time.perf_counter() - start))
    return parts


def latent_points(x: torch.Tensor, model: Diffusion, settings: LikelihoodSettings, generator, *,
                  levels: int | None = None) -> list[dict]:
    """A latent diffusion model's VAE with the diffusion prior (``latent_elbo``): the ELBO and the
    IWAE-``prior_k`` bound, the prior's divergence ``prior_divergence``."""
    s, latent, dim, parts = settings, model.net, x[0].numel(), []
    deq = levels if latent.vae.levels is None else None
    how = "exact div." if s.prior_divergence == "exact" else "Hutchinson"
    for quantity, k in (("ELBO", 1), (f"IWAE (k={s.prior_k})", s.prior_k)):
        start, logp, nfe = time.perf_counter(), [], []
        for xb in x.split(s.batch_size):
            xb = xb.to(latent.shift.device)
            xb = xb if deq is None else dequantize(xb, deq, generator=generator)
            res = latent_elbo(latent.vae, latent, model.sde, xb, k=k, divergence=s.prior_divergence, rtol=s.rtol,
                              atol=s.atol, t_min=model.t_min, generator=generator, progress=s.progress)
            logp.append(res.logp)
            nfe.append(res.nfe * xb.shape[0])
        parts.append(dict(model="VAE + diffusion prior", quantity=f"{quantity}, PF-ODE prior ({how})",
                          kind="bound", bpd=bits_per_dim(torch.cat(logp), dim, deq).cpu(),
                          nfe=sum(nfe) / x.shape[0], seconds=time.perf_counter() - start))
    return parts


def _points(x: torch.Tensor, settings: LikelihoodSettings, generator, *, levels: int | None = None,
            diffusion: Diffusion | None = None, vae=None, latent: Diffusion | None = None, device=None) -> list[dict]:
    """The parts of one chunk of points: x checked and moved to the first model's device and dtype (a plain
    function's: ``device``, default x's), then each given model's estimator, in the table's order."""
    first = next(m for m in (diffusion and diffusion.net, vae, latent and latent.net) if m is not None)
    _, x = _counted_model(first, None, x, device)
    parts = []
    if diffusion is not None:
        parts += diffusion_points(x, diffusion, settings, generator, levels=levels)
    if vae is not None:
        parts += vae_points(x, vae, settings, generator, levels=levels)
    if latent is not None:
        parts += latent_points(x, latent, settings, generator, levels=levels)
    return parts


# --- the table -----------------------------------------------------------------------------------
def table(settings: LikelihoodSettings) -> list[dict] | None:
    """The ``scoregen likelihood`` command but its printing: the checkpoints of ``settings`` loaded and sorted
    by kind (an eps-network, a latent diffusion model, a VAE; a latent model's own VAE is the VAE row unless
    ``vae_ckpt`` is given), the held-out split of the data set in chunks of ``batch_size`` points, each seeded
    from ``seed`` and its index and shared by torchrun's processes (``distributed.map_chunks``), the rows
    written as JSON to ``out`` (checked first). Returns the rows (``likelihood_table``'s) on rank 0, None on the
    other ranks."""
    s = settings
    if not isinstance(s, LikelihoodSettings):
        raise ValueError(f"table takes a LikelihoodSettings; got {s!r}")
    ckpts = [s.ckpt] if isinstance(s.ckpt, (str, Path)) else list(s.ckpt or ())
    if not (ckpts or s.vae_ckpt):
        raise ValueError("give --ckpt and/or --vae-ckpt")
    if s.out:
        check_writable(s.out)
    data = load_dataset(s.dataset, **with_data_path(s.dataset_options, s.data_path))
    eps = latent = None
    for path in ckpts:
        loaded = load_checked(path, "eps", device=s.device, names=NAMES)
        kind = "latent diffusion" if loaded.kind == "latent" else "pixel-space"
        if (latent if kind == "latent diffusion" else eps) is not None:
            raise ValueError(f"--ckpt is given two {kind} models (the second: {path}); give at most one of each")
        eps, latent = (eps, loaded) if kind == "latent diffusion" else (loaded, latent)
    vae = load_checked(s.vae_ckpt, "vae", device=s.device, names=NAMES).model if s.vae_ckpt else \
        latent.model.vae if latent else None
    diffusion = None if eps is None else Diffusion(eps.model, eps.sde, eps.info.t_min if s.t_min is None else s.t_min)
    prior = None if latent is None else Diffusion(latent.model, latent.sde, latent.info.t_min)
    first = (eps or latent).model if eps or latent else vae
    x, s = data.test[:s.n], replace(s, progress=s.progress and distributed.is_main())
    parts = distributed.map_chunks(
        lambda start, size, g: _points(x[start:start + size], s, g, levels=data.levels, diffusion=diffusion, vae=vae,
                                       latent=prior),
        x.shape[0], s.batch_size, seed=s.seed, device=next(first.parameters()).device, what="likelihoods",
        progress=s.progress)
    if parts is None:  # a rank other than 0 of a torchrun
        return None
    rows = likelihood_rows(parts)
    if s.out:
        write_atomic(s.out, json.dumps(rows, indent=1).encode())
    return rows


def likelihood_table(x: torch.Tensor, *, levels: int | None = None, eps_model=None, sde: VPSDE | None = None,
                     vae=None, latent=None, latent_sde: VPSDE | None = None, t_min: float = T_MIN,
                     latent_t_min: float = T_MIN, generator: torch.Generator | None = None, device=None,
                     progress: bool = False, **settings) -> list[dict]:
    """Bits/dim of held-out data ``x`` under every model given, in memory, one convention (``bpd``):

    - ``eps_model`` and ``sde``: the PF-ODE likelihood from ``t_min`` and the DDPM bound (``diffusion_points``);
    - ``vae`` (``scoregen.nets.vae.VAE``): its ELBO and IWAE bounds (``vae_points``);
    - ``latent`` (a ``nets.LatentDiffusion``) and ``latent_sde``: its VAE with the diffusion prior from
      ``latent_t_min`` (``latent_points``).

    ``levels``: the data's quantisation levels (None: continuous data); ``device``: where a plain-function
    ``eps_model`` runs (default x's); ``progress``: tqdm bars of the estimators' solves; ``settings``: the
    estimators' settings, ``LikelihoodSettings`` fields (``ESTIMATION``: divergence, probes, rtol, atol,
    bound_steps, sample_steps, iwae_k, prior_k, prior_divergence, batch_size, the points per ODE solve and VAE
    call and the (point, step) pairs per call of the DDPM bound).

    Returns rows ``{model, quantity, kind ("exact" | "bound"), bpd (mean over points), se (its standard error
    over the points), se_probes (over Hutchinson probes, when probes > 1), nfe (network forward calls per
    datapoint), seconds (wall clock, on a loaded machine a rough figure), n}``.
    """
    other = sorted(set(settings) - set(ESTIMATION))
    if other:
        raise TypeError(f"likelihood_table takes the estimators' settings ({', '.join(ESTIMATION)}); got "
                        f"{', '.join(other)}")
    s = LikelihoodSettings(**settings, progress=progress)
    if eps_model is None and vae is None and latent is None:
        raise ValueError("likelihood_table needs a model: eps_model (with sde), vae or latent (with latent_sde)")
    if eps_model is not None and sde is None:
        raise ValueError("likelihood_table needs the sde of eps_model")
    if latent is not None and latent_sde is None:
        raise ValueError("likelihood_table needs latent_sde, the sde of the latent diffusion model")
    parts = _points(x, s, generator, levels=levels, device=device, vae=vae,
                    diffusion=None if eps_model is None else Diffusion(eps_model, sde, t_min),
                    latent=None if latent is None else Diffusion(latent, latent_sde, latent_t_min))
    return likelihood_rows([parts])


def likelihood_rows(chunks: list[list[dict]]) -> list[dict]:
    """The table rows of the parts (``*_points``) of one or more chunks of points: means and standard errors
    over all their points, ``nfe`` averaged over the points, ``seconds`` summed over the chunks."""
    rows = []
    for parts in zip(*chunks):
        n = [p["logp"].shape[1] if "logp" in p else p["bpd"].numel() for p in parts]
        nfe, seconds, se_probes, first = sum(p["nfe"] * k for p, k in zip(parts, n)) / sum(n), \
            sum(p["seconds"] for p in parts), None, parts[0]
        if "logp" in first:
            logp, dim, levels = torch.cat([p["logp"] for p in parts], 1), first["dim"], first["levels"]  # [probes, n]
            if logp.shape[0] > 1:
                se_probes = (bits_per_dim(logp.mean(1), dim, levels).std() / math.sqrt(logp.shape[0])).item()
            bpd = bits_per_dim(logp.mean(0), dim, levels)
        else:
            bpd = torch.cat([p["bpd"] for p in parts])
        bpd = bpd.double()
        rows.append({"model": first["model"], "quantity": first["quantity"], "kind": first["kind"],
                     "bpd": bpd.mean().item(),
                     "se": (bpd.std() / math.sqrt(bpd.numel())).item() if bpd.numel() > 1 else math.nan,
                     "se_probes": se_probes, "nfe": nfe, "seconds": seconds, "n": bpd.numel()})
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The rows of ``likelihood_table`` as markdown: bits/dim as mean ± standard error over the points
    (and over the Hutchinson probes, when there are several)."""
    lines = ["| model | quantity | kind | bits/dim | NFE / point | wall s |", "|---|---|---|---|---|---|"]
    for r in rows:
        probes = "" if r["se_probes"] is None else f" (probes ± {r['se_probes']:.3f})"
        lines.append(f"| {r['model']} | {r['quantity']} | {r['kind']} | {r['bpd']:.3f} ± {r['se']:.3f}{probes} "
                     f"| {r['nfe']:.0f} | {r['seconds']:.1f} |")
    return "\n".join(lines) + "\n"
