"""Solvers learned for the shipped models (``scoregen.evaluation.tune_solver``), measured on held-out draws.

For each checkpoint and each K in ``--steps``: learn the K-call solver on n tuning draws (seed 12345, the seed
``tune.grid_for`` tunes on, so that a sweep's own draws stay held out), write it where ``solver_for`` finds
it (``--ship``: scoregen/checkpoints/solvers, else the cache) and measure its ode_err and every fixed solver's
on every named grid at the same K on n_held fresh draws (seed 1). Writes results/learned_solvers.json.

    python benchmarks/learned_solvers.py --checkpoint scoregen/checkpoints/digits.pt --steps 3 4 5 6 8 10 --ship
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from scoregen.evaluation.tune import TUNING_SEED
from scoregen.evaluation.tune_solver import best_fixed, learn_solver, solver_path
from scoregen.models import load_model
from scoregen.runtime.outputs import write_atomic
from scoregen.samplers.learned import save_solver

OUT = Path(__file__).parent / "results" / "learned_solvers.json"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", nargs="+", default=["scoregen/checkpoints/digits.pt"])
    p.add_argument("--steps", type=int, nargs="+", default=[3, 4, 5, 6, 8, 10])
    p.add_argument("-n", type=int, default=1024, help="tuning draws")
    p.add_argument("--n-held", type=int, default=512, help="held-out draws (seed 1)")
    p.add_argument("--iters", type=int, default=250)
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--ship", action="store_true", help="write into scoregen/checkpoints/solvers")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=OUT)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    results = json.loads(a.out.read_text()) if a.out.is_file() else {}
    for ckpt in a.checkpoint:
        loaded = load_model(ckpt)
        info, shape, references = loaded.info, tuple(loaded.info.shape), {}
        for k in a.steps:
            start = time.perf_counter()
            solver = learn_solver(loaded.model, loaded.sde, k, shape, n=a.n, seed=TUNING_SEED, held_out_seed=1,
                                  n_held=a.n_held, t_min=info.t_min, iters=a.iters, lr=a.lr, progress=True,
                                  references=references)
            held = solver.info["errors"]["held_out"]
            shipped, cached = solver_path(info, k)
            path = save_solver(shipped if a.ship else cached, solver)
            name, err = best_fixed(held)
            row = {"steps": k, "learned": held["learned"], "best_fixed": name, "best_fixed_err": err,
                   "ratio": held["learned"] / err, "tuning": solver.info["errors"]["tuning"]["learned"],
                   "minutes": (time.perf_counter() - start) / 60, "calls": solver.info["calls"],
                   "file_bytes": path.stat().st_size, "file": str(path), "held_out": held}
            results.setdefault(Path(ckpt).stem, {})[str(k)] = row
            print(f"{Path(ckpt).stem} K={k}: held-out ode_err {held['learned']:.4f} vs best fixed {err:.4f} "
                  f"({name}), {row['minutes']:.1f} min, {row['file_bytes']} bytes -> {path}", flush=True)
            write_atomic(a.out, (json.dumps(results, indent=1) + "\n").encode())


if __name__ == "__main__":
    main()
