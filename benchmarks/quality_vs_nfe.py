"""Quality per network call of the fast samplers on the digits U-Net, beside diffusers' schedulers (issue 13).

Every row starts from the same n prior draws x_1 (seeded). Two measures:

    ode_err   RMS distance per coordinate to the PF-ODE's own map of the same x_1 (dopri5, rtol = atol =
              1e-5, ``sg.pf_ode_solution``): the error of a deterministic sampler itself
    fd        Frechet distance to the held-out digits in the package's feature network (as ``scoregen
              compare``), of the samples clamped to [-1, 1], with its half-sampling spread

Rows: DDIM, DPM-Solver++(2M) and (3M), UniPC (bh2, orders 2 and 3), DEIS (tAB3), iPNDM (4), EDM's Heun (K steps,
2K - 1 NFE), the solver learned for the model (``tune_solver.solver_for``, where one is shipped at that NFE),
DPM-Solver++(2M) and UniPC on the model's tuned grids, and diffusers' ``DPMSolverMultistepScheduler`` (dpmsolver++,
order 2) and ``UniPCMultistepScheduler`` (bh2, order 2) driving the same network on their own default
timesteps (``scoregen.reference``); at 5, 10 and 20 NFE. Stochastic rows (DPM-Solver++(2M) SDE, EDM with
churn) have an FD only. References: the converged PF-ODE (dopri5 at 1e-4) and 1000-step ancestral DDPM.

    python benchmarks/quality_vs_nfe.py                       # 2-core CPU: 13 minutes, 5.4 of them DDPM-1000
    python benchmarks/quality_vs_nfe.py --ddpm-steps 0        # without the DDPM reference: about 8 minutes
    python benchmarks/quality_vs_nfe.py --replot              # redraw the plot of the saved JSON
    python benchmarks/quality_vs_nfe.py --device cuda --out results/gpu/quality_vs_nfe.json
    python benchmarks/quality_vs_nfe.py --nfes 5 --rows ddim dpmpp-2m unipc-2 deis ipndm learned --ddpm-steps 0 \
        --out benchmarks/results/quality_at_5_nfe.json     # the learned solver at 5 NFE beside its peers

Writes results/quality_vs_nfe.json and .png beside this file (or ``--out``), and prints the table.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import scoregen as sg
from scoregen.samplers import reference
from scoregen.data import load_dataset
from scoregen.evaluation.features import FeatureNet, default_cache_dir
from scoregen.evaluation.metrics import frechet_distance, ode_err
from scoregen.evaluation.spread import half_sampling_std
from scoregen.models.loading import load_checked
from scoregen.models.zoo import shipped_checkpoint
from scoregen.evaluation.tune import grid_for
from scoregen.evaluation.tune_solver import solver_for

from harness import clock, machine, save_json, shared_options

HERE = Path(__file__).resolve().parent
NFES = (5, 10, 20)
# label -> (method, options, steps at a given NFE); deterministic rows get an ode_err
ROWS = {
    "ddim": ("ddim", {}, lambda nfe: nfe),
    "dpmpp-2m": ("dpmpp", {"order": 2}, lambda nfe: nfe),
    "dpmpp-3m": ("dpmpp", {"order": 3}, lambda nfe: nfe),
    "unipc-2": ("unipc", {"order": 2}, lambda nfe: nfe),
    "unipc-3": ("unipc", {"order": 3}, lambda nfe: nfe),
    "heun": ("heun", {}, lambda nfe: (nfe + 1) // 2),
    "deis": ("deis", {}, lambda nfe: nfe),
    "ipndm": ("ipndm", {}, lambda nfe: nfe),
    "dpmpp-2m-sde": ("dpmpp", {"order": 2, "eta": 1.0}, lambda nfe: nfe),
    "heun-churn": ("heun", {"s_churn": 40.0, "s_tmin": 0.05, "s_tmax": 50.0, "s_noise": 1.003},
                   lambda nfe: (nfe + 1) // 2),
}
PEERS = {"diffusers-dpmpp-2m": ("dpmpp", {}), "diffusers-unipc-2": ("unipc", {})}
TUNED = [("dpmpp", {"order": 2}, 10), ("unipc", {"order": 2}, 10)]  # on the model's tuned 10-step grids


def fd_with_spread(features: torch.Tensor, ref: torch.Tensor, seed: int = 1) -> tuple:
    """FD and its half-sampling spread (``metrics.half_sampling_std``), as ``scoregen compare``."""
    fd = lambda f: {"fd": frechet_distance(f, ref)}  # noqa: E731
    return fd(features)["fd"], half_sampling_std(fd, features, generator=torch.Generator().manual_seed(seed))["fd_std"]


def main(argv=None):
    shared = shared_options(HERE / "results" / "quality_vs_nfe.json",
                            "JSON path; the plot goes beside it (default: %(default)s)")
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], parents=[shared])
    p.add_argument("--replot", action="store_true", help="redraw the plot of the saved --out JSON, run nothing")
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ddpm-steps", type=int, default=1000, help="steps of the ancestral DDPM reference (0: none)")
    p.add_argument("--nfes", type=int, nargs="+", default=list(NFES), help="NFE of the rows (default: %(default)s)")
    p.add_argument("--rows", nargs="+", default=[*ROWS, *PEERS, "tuned", "learned"],
                   help="rows to run (default: all; 'learned': the shipped solvers learned for the model)")
    args = p.parse_args(argv)
    if args.replot:
        saved = json.loads(args.out.read_text())
        plot(saved["rows"], args.out.with_suffix(".png"), f"digits U-Net, n = {saved['n']}, {saved['device']}")
        return
    device = torch.device(args.device)
    machine_info = machine(device)
    loaded = load_checked(shipped_checkpoint("digits.pt"), "eps", device=device)
    net, sde, t_min = loaded.model, loaded.sde, loaded.info.t_min
    data = load_dataset("digits")
    feats = FeatureNet.for_dataset(data, cache_dir=default_cache_dir(), device=device)
    x1 = sde.prior_sample((args.n, *data.shape), generator=torch.Generator(device).manual_seed(args.seed),
                          device=device)
    rows = []

    def measure(label, run, nfe_target=None, **info):
        wall, (x, nfe) = clock(run, device)
        fd, fd_std = fd_with_spread(feats.features(x.clamp(-1, 1)), feats.reference)
        row = dict(label=label, nfe=nfe, nfe_target=nfe_target, fd=fd, fd_std=fd_std, wall_s=wall, **info)
        if info.get("deterministic"):
            row["ode_err"] = ode_err(x, exact)
        rows.append(row)
        print(" | ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
        return x

    res = sg.pf_ode_solution(net, sde, x1, t_min=t_min)
    exact, exact_nfe = res.x, res.nfe
    measure("pf-ode dopri5 1e-5", lambda: (exact, exact_nfe), deterministic=True)
    measure("pf-ode dopri5 1e-4", lambda: (lambda r: (r.x, r.nfe))(sg.pf_ode_solution(net, sde, x1, t_min=t_min,
                                                                                     tol=1e-4)), deterministic=True)
    gen = lambda: torch.Generator(device).manual_seed(args.seed + 1)  # noqa: E731 (the stochastic rows' noise)
    for nfe in args.nfes:
        for label, (method, options, steps) in ROWS.items():
            if label not in args.rows:
                continue
            det = sg.samplers.is_deterministic(method, options)

            def run(method=method, options=options, steps=steps):
                r = sg.sample(net, sde, x1.shape, method, steps(nfe), x1=x1, generator=gen(), t_min=t_min, **options)
                return r.x, r.nfe
            measure(label, run, nfe, deterministic=det, method=method, options=options, steps=steps(nfe))
        for label, (name, config) in PEERS.items():
            if label not in args.rows:
                continue
            sched = reference.scheduler(name, sde, nfe, **config)
            measure(label, lambda sched=sched: reference.run(sched, net, x1), nfe, deterministic=True,
                    timesteps=[int(k) for k in sched.timesteps])
        solver = solver_for(loaded, nfe) if "learned" in args.rows else None
        if solver is not None:
            measure("learned", lambda solver=solver: (lambda r: (r.x, r.nfe))(solver.sample(net, sde, x1.shape, x1=x1)),
                    nfe, deterministic=True, method="learned", steps=nfe, grid=solver.t.tolist())
    for method, options, steps in TUNED if "tuned" in args.rows else ():
        grid = grid_for(loaded, method, steps, options, progress=True)
        measure(f"{method}-tuned", lambda: (lambda r: (r.x, r.nfe))(sg.sample(net, sde, x1.shape, method, grid=grid,
                                                                            x1=x1, **options)),
                steps, deterministic=True, method=method, options=options, steps=steps, grid=grid.tolist())
    if args.ddpm_steps:
        measure(f"ddpm-{args.ddpm_steps}", lambda: (lambda r: (r.x, r.nfe))(sg.sample(
            net, sde, x1.shape, "ddpm", args.ddpm_steps, x1=x1, generator=gen())), deterministic=False,
            method="ddpm", steps=args.ddpm_steps)

    summary = dict(machine=machine_info, checkpoint=loaded.info.path, n=args.n, seed=args.seed, device=str(device),
                   torch=torch.__version__, threads=torch.get_num_threads(), rows=rows)
    save_json(args.out, summary)
    plot(rows, args.out.with_suffix(".png"), f"digits U-Net, n = {args.n}, {device}")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def plot(rows, path: Path, title: str) -> None:
    """ode_err and FD against NFE, one line per sampler (the same colour in both panels); the references as
    horizontal lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    lines = [r for r in rows if r["nfe_target"] is not None]
    labels = list(dict.fromkeys(r["label"] for r in lines))
    palette = plt.get_cmap("tab20")
    colour = {label: palette(i % palette.N) for i, label in enumerate(labels)}
    for ax, key in zip(axes, ("ode_err", "fd")):
        for label in labels:
            rs = [r for r in lines if r["label"] == label and key in r]
            if rs:
                ax.errorbar([r["nfe"] for r in rs], [r[key] for r in rs], yerr=[r.get(key + "_std", 0) for r in rs],
                            marker="*" if "tuned" in label else "o", ls="-" if len(rs) > 1 else "none",
                            ms=10 if "tuned" in label else 4, capsize=2, label=label, color=colour[label],
                            alpha=0.6 if label.startswith("diffusers") else 1.0)
        for r in rows:
            if r["nfe_target"] is None and key in r and r["label"] != "pf-ode dopri5 1e-5":
                ax.axhline(r[key], ls="--" if "pf-ode" in r["label"] else ":", lw=1,
                           c="k" if "pf-ode" in r["label"] else "r",
                           label=f"{r['label']} ({r['nfe']:g} NFE)")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_title(key)
    for ax in axes:
        ax.legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
