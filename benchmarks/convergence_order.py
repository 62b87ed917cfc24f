"""Order of convergence of every deterministic sampler against the exact PF-ODE map of a Gaussian.

Data N(mu, Sigma) in 2-D with its exact eps (``GaussianMixture.eps_model``), float64, 200 prior draws; RMS error
of each sampler's end point against ``GaussianMixture.pf_ode_map``. The exponential integrators run on grids
uniform in log-SNR from t = 1 to t = 0.3 with ``lower_order_final=False`` (the setting of
``tests/test_dpmpp_unipc.py``: near the data x0_hat flattens and the Gaussian becomes a special case); EDM's Heun
and the torchdiffeq solvers on the quadratic grid onto t = 0 and to t_min, as in ``tests/test_heun_pc.py`` and
``tests/test_samplers.py``. Slopes are of log error against log steps; order-3 methods also at 80-320 steps,
where their first-order warm-up step has faded.

    python benchmarks/convergence_order.py      # a few seconds; writes results/convergence_order.json (or --out)
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

import scoregen as sg
from scoregen.data import gaussian
from scoregen.samplers.grids import time_grid

from harness import machine, save_json, shared_options

HERE = Path(__file__).resolve().parent
F64 = torch.float64
SDE = sg.VPSDE()
GAUSS = gaussian([0.5, -0.3], [[0.5, 0.2], [0.2, 0.3]])
T_END = 0.3
STEPS, FINE = (10, 20, 40, 80), (80, 160, 320)
# label -> (method, options, how the grid is made)
ROWS = {
    "ddim": ("ddim", {}, "log_snr"),
    "dpmpp 1M": ("dpmpp", {"order": 1}, "log_snr"),
    "dpmpp 2M": ("dpmpp", {"order": 2}, "log_snr"),
    "dpmpp 3M": ("dpmpp", {"order": 3}, "log_snr"),
    "dpmpp 2S": ("dpmpp", {"order": 2, "variant": "singlestep"}, "log_snr"),
    "dpmpp 3S": ("dpmpp", {"order": 3, "variant": "singlestep"}, "log_snr"),
    "unipc 1 + UniC": ("unipc", {"order": 1}, "log_snr"),
    "unipc 2 + UniC": ("unipc", {"order": 2}, "log_snr"),
    "unipc 3 + UniC": ("unipc", {"order": 3}, "log_snr"),
    "unipc 3, no corrector": ("unipc", {"order": 3, "corrector": False}, "log_snr"),
    "heun (EDM)": ("heun", {}, "quadratic"),
}
ORDER_3 = ("dpmpp 3M", "dpmpp 3S", "unipc 2 + UniC", "unipc 3 + UniC", "unipc 3, no corrector")


def error(method: str, options: dict, grid: str, steps: int, x1: torch.Tensor) -> float:
    eps = GAUSS.eps_model(SDE)
    if grid == "log_snr":
        extra = {"lower_order_final": False} if "lower_order_final" in sg.samplers.method_options(method) else {}
        x = sg.sample(eps, SDE, x1.shape, method, grid=time_grid(SDE, "log_snr", steps, T_END), x1=x1, dtype=F64,
                      **extra, **options).x
        end = T_END
    else:
        x = sg.sample(eps, SDE, x1.shape, method, steps, grid=grid, x1=x1, dtype=F64, **options).x
        end = 0.0
    return (x - GAUSS.pf_ode_map(x1, end, SDE)).pow(2).sum(1).mean().sqrt().item()


def slope(errs, steps) -> float:
    return math.log(errs[-1] / errs[0]) / math.log(steps[-1] / steps[0])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], parents=[
        shared_options(HERE / "results" / "convergence_order.json", device=False)])
    args = p.parse_args(argv)
    info = machine()
    x1 = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    rows = []
    for label, (method, options, grid) in ROWS.items():
        errs = [error(method, options, grid, k, x1) for k in STEPS]
        row = dict(label=label, method=method, options=options, grid=grid, steps=STEPS, errors=errs,
                   slope=slope(errs, STEPS))
        if label in ORDER_3:
            fine = [error(method, options, grid, k, x1) for k in FINE]
            row.update(fine_steps=FINE, fine_errors=fine, fine_slope=slope(fine, FINE))
        rows.append(row)
        print(f"{label:24s} " + ", ".join(f"{e:.1e}" for e in errs) + f"  slope {row['slope']:+.2f}"
              + (f"  (80-320: {row['fine_slope']:+.2f})" if "fine_slope" in row else ""))
    out = save_json(args.out, dict(machine=info, t_end=T_END, n=200, rows=rows))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
