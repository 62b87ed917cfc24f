"""Sample quality of every sampler with the exact eps of the 'gmm2d' mixture: the README's z table.

    z = (mean log p_oracle of the samples - E_p log p) / (std of the samples' log p / sqrt(n))

E_p log p from 200,000 exact draws; n = 4000 samples per row, seed 0. |z| ~ 1 for exact draws,
positive when the samples are too concentrated, negative when too spread out.

    python benchmarks/oracle_z_scores.py        # about 1 minute on one CPU core; prints the table
Writes results/oracle_z_scores.json next to this file (or --out).
"""
import argparse
from pathlib import Path

import torch

import scoregen as sg

from harness import machine, save_json, shared_options

ROWS = [("ddpm (posterior variance)", "ddpm", (30, 100, 1000), {}),
        ("ddpm (beta variance)", "ddpm", (30, 100, 1000), {"variance": "beta"}),
        ("ddim, uniform grid", "ddim", (5, 20, 100), {}),
        ("ddim, quadratic grid", "ddim", (5, 20, 100), {"grid": "quadratic"}),
        ("sde euler", "sde", (30, 100, 1000), {"solver": "euler"}),
        ("sde srk", "sde", (10, 30, 100), {"solver": "srk"}),
        ("ode euler", "ode", (10, 30, 100), {"solver": "euler"}),
        ("ode rk4", "ode", (5, 10, 20), {"solver": "rk4"}),
        ("ode dopri5 (rtol 1e-3 / 1e-5)", "ode", (None, None), {"solver": "dopri5"})]
TOLS = (1e-3, 1e-5)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], parents=[
        shared_options(Path(__file__).resolve().parent / "results" / "oracle_z_scores.json", device=False)])
    p.add_argument("--n", type=int, default=4000, help="samples per row (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    n, seed = args.n, args.seed
    torch.set_num_threads(1)
    info = machine()
    mix, sde = sg.data.preset("gmm2d"), sg.VPSDE()
    eps_model = mix.eps_model(sde)
    e_logp = mix.log_prob(mix.sample(200_000, generator=torch.Generator().manual_seed(123)).double()).mean().item()

    def z(x):
        logp = mix.log_prob(x.double())
        return (logp.mean().item() - e_logp) / (logp.std().item() / n ** 0.5)

    table = []
    for name, method, steps, options in ROWS:
        cells = []
        for i, k in enumerate(steps):
            tol = {"rtol": TOLS[i], "atol": TOLS[i]} if k is None else {}
            res = sg.sample(eps_model, sde, (n, 2), method, k, generator=torch.Generator().manual_seed(seed),
                            **options, **tol)
            cells.append({"steps": k, "nfe": res.nfe, "z": z(res.x), **tol})
        table.append({"sampler": name, "method": method, "options": options, "cells": cells})
        steps_cell = "-" if steps[0] is None else " / ".join(str(c["steps"]) for c in cells)
        nfe_cell, z_cell = (" / ".join(f.format(c[key]) for c in cells) for key, f in (("nfe", "{}"), ("z", "{:+.1f}")))
        print(f"| {name} | {steps_cell} | {nfe_cell} | {z_cell} |")
    save_json(args.out, {"machine": info, "n": n, "seed": seed, "e_logp": e_logp, "rows": table})


if __name__ == "__main__":
    main()
