"""Are compare's spreads the real error? Calibration over seeds on the 'gmm2d' mixture with its exact eps.

For a deterministic row (DDIM, 10 steps), a stochastic one (DDPM, 20 steps) and a third (DDIM, 20 steps), each
from ``--seeds`` independent seeds of n samples, measured exactly as ``scoregen compare`` measures them
(``compare.measure.Evaluator``: the same reference set, halves and metrics):

- calibration: the RMS of the reported spread of each metric against the standard deviation of its value across
  seeds (ratio 1 is calibrated; the seeds' own sd is uncertain by about 1 / sqrt(2 (seeds - 1)));
- paired intervals: the 95% interval of each difference between rows (``spread.paired``) against the true
  difference, from a run of ``--big`` samples per row for the metrics whose value does not depend on n (``logp``,
  exact under the oracle, and ``mmd``, unbiased with the reference held fixed), and against the mean over seeds
  for the others; the share of seeds whose interval covers it (0.95 is calibrated);
- the n-bias: ``fd`` and ``fd_inf`` (in the data's own coordinates) at n against fd at ``--big`` samples;
- the digits main job's image metrics (the shipped U-Net, DDIM at 20 steps, n = 500): spreads against the sd
  over ``--digits-seeds`` seeds, and fd_inf at n = 500 against fd of all the seeds' samples pooled.

    python benchmarks/spread_calibration.py     # about 15 minutes on one CPU core
Writes results/spread_calibration.json next to this file (or --out).
"""
import argparse
import itertools
import math
from pathlib import Path

import torch

import scoregen as sg
from scoregen.evaluation.compare.measure import Evaluator
from scoregen.evaluation.metrics import FrechetReference, mmd
from scoregen.evaluation.spread import Z95, extrapolated, paired, spread

from harness import machine, save_json, shared_options

ROWS = {"ddim@10": ("ddim", 10), "ddpm@20": ("ddpm", 20), "ddim@20": ("ddim", 20)}
TRUTH = ("logp", "mmd")  # metrics whose expectation does not depend on n: their truth from the big run


def _draw(eps_model, sde, method: str, steps: int, n: int, seed: int) -> torch.Tensor:
    return sg.sample(eps_model, sde, (n, 2), method, steps, generator=torch.Generator().manual_seed(seed)).x


def _digits(seeds: int, n: int = 500) -> dict:
    """The main job's image metrics on the shipped digits U-Net (DDIM, 20 steps; n = 500 per seed, as compare):
    their spread against the sd over seeds, and fd_inf at n against fd of all seeds' samples pooled."""
    data = sg.data.load_dataset("digits")
    loaded = sg.load_model(Path(sg.__file__).parent / "checkpoints" / "digits.pt")
    from scoregen.evaluation.features import FeatureNet
    evaluate = Evaluator(data, FeatureNet.for_dataset(data), n, seed=0)
    runs, pooled = [], []
    for seed in range(seeds):
        x = sg.sample(loaded.model, loaded.sde, (n, 1, 8, 8), "ddim", 20, t_min=loaded.info.t_min,
                      generator=torch.Generator().manual_seed(100 + seed)).x.clamp(-1, 1)
        runs.append(evaluate(x).fields)
        pooled.append(evaluate.extractor.features(x))
    out = {"n": n, "seeds": seeds, "fd_pooled": evaluate.fd.distance(torch.cat(pooled)), "pooled_n": n * seeds}
    for key in ("fd", "fd_inf", "kid", "precision", "recall", "density", "coverage", "attr_tv"):
        values = torch.tensor([r[key] for r in runs], dtype=torch.float64)
        reported = torch.tensor([r[key + "_std"] for r in runs], dtype=torch.float64).pow(2).mean().sqrt().item()
        out[key] = dict(mean=values.mean().item(), mean_se=values.std().item() / math.sqrt(seeds),
                        sd_over_seeds=values.std().item(), rms_reported=reported, ratio=reported / values.std().item())
        print(f"  digits {key:10s} mean {out[key]['mean']:.4g} sd {out[key]['sd_over_seeds']:.4g} reported "
              f"{reported:.4g} ratio {out[key]['ratio']:.2f}")
    print(f"  digits fd of all {n * seeds} samples {out['fd_pooled']:.4g}")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], parents=[
        shared_options(Path(__file__).resolve().parent / "results" / "spread_calibration.json", device=False)])
    p.add_argument("--n", type=int, default=1000, help="samples per row (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=60, help="independent seeds (default: %(default)s)")
    p.add_argument("--big", type=int, default=200_000, help="samples of the runs that give the truth")
    p.add_argument("--digits-seeds", type=int, default=30, help="seeds of the digits part (default: %(default)s)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    info = machine()
    data = sg.data.load_dataset("gmm")
    mix, sde = data.oracle, sg.VPSDE()
    eps_model = mix.eps_model(sde)
    evaluate = Evaluator(data, None, args.n, seed=0)
    reference = evaluate.real

    from tqdm.auto import tqdm
    runs = {name: [] for name in ROWS}  # per row, per seed: (fields, draws)
    for seed in tqdm(range(args.seeds), desc="seeds"):
        for name, (method, steps) in ROWS.items():
            x = _draw(eps_model, sde, method, steps, args.n, 1000 + seed)
            measured = evaluate(x)
            fd = FrechetReference(reference)
            value, value_inf, fd_draws = extrapolated(fd.distance, x.double(), evaluate.halves)
            measured.fields.update(fd=value, fd_inf=value_inf, fd_std=spread(fd_draws), fd_inf_std=spread(fd_draws))
            measured.draws.update(fd=fd_draws, fd_inf=fd_draws)
            runs[name].append(measured)
    metrics = [k for k in runs["ddim@10"][0].draws]

    truth = {}
    for name, (method, steps) in ROWS.items():
        x = torch.cat([_draw(eps_model, sde, method, steps, 20_000, 10 ** 6 + k) for k in range(args.big // 20_000)])
        chunks = x[:len(x) // args.n * args.n].reshape(-1, args.n, 2)  # mmd is unbiased at n: its mean over chunks
        truth[name] = dict(logp=mix.log_prob(x.double()).mean().item(),
                           mmd=sum(mmd(c, reference) for c in chunks) / len(chunks),
                           fd=FrechetReference(reference).distance(x.double()))

    calibration = []
    for name, metric in itertools.product(ROWS, metrics):
        values = torch.tensor([m.fields[metric] for m in runs[name]], dtype=torch.float64)
        reported = torch.tensor([m.fields[metric + "_std"] for m in runs[name]], dtype=torch.float64)
        sd = values.std().item()
        calibration.append(dict(row=name, metric=metric, mean=values.mean().item(), sd_over_seeds=sd,
                                rms_reported=reported.pow(2).mean().sqrt().item(),
                                ratio=reported.pow(2).mean().sqrt().item() / sd if sd > 0 else None))

    coverage = []
    for (a, b), metric in itertools.product(itertools.combinations(ROWS, 2), metrics):
        pairs = [paired(ma.fields[metric], mb.fields[metric], ma.draws[metric], mb.draws[metric])
                 for ma, mb in zip(runs[a], runs[b])]
        diffs = torch.tensor([q["diff"] for q in pairs], dtype=torch.float64)
        target, source = (truth[a][metric] - truth[b][metric], "big run") if metric in TRUTH else \
            (diffs.mean().item(), "mean over seeds")
        covered = sum(q["ci95"][0] <= target <= q["ci95"][1] for q in pairs) / len(pairs)
        reported = torch.tensor([q["diff_std"] for q in pairs], dtype=torch.float64).pow(2).mean().sqrt().item()
        coverage.append(dict(a=a, b=b, metric=metric, true_diff=target, truth_from=source,
                             mean_diff=diffs.mean().item(), sd_over_seeds=diffs.std().item(),
                             rms_reported=reported, coverage95=covered))

    bias = []
    for name in ROWS:
        fd = torch.tensor([m.fields["fd"] for m in runs[name]], dtype=torch.float64)
        fd_inf = torch.tensor([m.fields["fd_inf"] for m in runs[name]], dtype=torch.float64)
        se = math.sqrt(args.seeds)
        bias.append(dict(row=name, fd_big=truth[name]["fd"], fd_mean=fd.mean().item(),
                         fd_mean_se=fd.std().item() / se, fd_inf_mean=fd_inf.mean().item(),
                         fd_inf_mean_se=fd_inf.std().item() / se,
                         fd_inf_sd=fd_inf.std().item(),
                         fd_inf_off_in_spreads=(fd_inf.mean().item() - truth[name]["fd"]) / fd_inf.std().item()))

    print(f"calibration over {args.seeds} seeds, n = {args.n}: reported spread (RMS) / sd over seeds")
    for c in calibration:
        print(f"  {c['row']:8s} {c['metric']:10s} sd {c['sd_over_seeds']:.4g}  reported {c['rms_reported']:.4g}  "
              f"ratio {c['ratio']:.2f}" if c["ratio"] else f"  {c['row']} {c['metric']}: constant")
    print(f"paired 95% intervals: share of {args.seeds} seeds covering the true difference")
    for c in coverage:
        print(f"  {c['a']} - {c['b']} {c['metric']:10s} coverage {c['coverage95']:.2f}  sd {c['sd_over_seeds']:.3g} "
              f"reported {c['rms_reported']:.3g} ({c['truth_from']})")
    print(f"fd at n = {args.n} and fd_inf against fd at {args.big}")
    for c in bias:
        print(f"  {c['row']:8s} fd_big {c['fd_big']:.4g}  fd {c['fd_mean']:.4g} ± {c['fd_mean_se']:.2g}  "
              f"fd_inf {c['fd_inf_mean']:.4g} ± {c['fd_inf_mean_se']:.2g}")
    digits = _digits(args.digits_seeds)
    out = save_json(args.out, dict(machine=info, n=args.n, seeds=args.seeds, big=args.big, halves=len(evaluate.halves),
                                   z95=Z95, calibration=calibration, coverage=coverage, fd_bias=bias, digits=digits))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
