"""The sampling error of a metric, from the samples themselves, and paired differences between rows.

Half-sampling: a metric is recomputed on ``H`` random halves of its n samples, drawn as ``H / 2`` random
partitions into two halves. For a half drawn without replacement, the finite-population factor ``1 - m / n = 1/2``
exactly offsets the half's size ``m = n / 2``, so the spread over halves is the sampling error at n itself: the
delete-d jackknife with d = n / 2 (Shao & Wu 1989), whose variance factor ``(n - d) / d`` is 1. Its own relative
error is about ``1 / sqrt(2 (H - 1))``: 10% at H = 50.

Paired differences: rows measured on samples that correspond one to one (the same prior draws) are resampled with
the same index sets, so the spread of their difference over halves keeps the correlation that shared draws give.

Extrapolation to infinite n: a metric whose bias is linear in 1/N (the Frechet distance; Chong & Forsyth 2020,
"Effectively Unbiased FID") is ``m_N = m_inf + c / N``; the line through m at n and the mean of m over halves
(N = n / 2) gives ``m_inf = 2 m_n - mean m_{n/2}`` (Richardson; Quenouille's jackknife bias correction). Its
sampling error is m's own: the term it removes is of order 1/n and fluctuates at a higher order.

Calibration (``benchmarks/spread_calibration.py``, ``docs/metrics.md``): for statistics that are means over
samples (``logp``, precision, recall, density) the spread matches the error over fresh seeds to about 20%; for
statistics near a boundary, whose fluctuation is mostly quadratic in the samples (fd, mmd, kid, moment_kl, attr_tv,
coverage near 1), it is 15-70% wide, the upward bias of jackknife variances (Efron & Stein 1981), so intervals err
on the side of "tied".
"""
from __future__ import annotations

import math

import torch

HALVES = 50  # resamples: the spread's own relative error is about 1 / sqrt(2 (HALVES - 1)) = 10%
Z95 = 1.959963984540054  # two-sided 95% quantile of the normal


def half_samples(n: int, halves: int = HALVES, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Index sets [halves, n // 2] of ``halves / 2`` random partitions of range(n) into two halves, the two halves
    of a partition in consecutive rows (over a pair, the linear part of any statistic averages to its value on
    all n). ``generator``: a CPU one."""
    if isinstance(halves, bool) or not isinstance(halves, int) or halves < 4 or halves % 2:
        raise ValueError(f"halves must be an even integer >= 4; got {halves!r}")
    if n < 4:
        raise ValueError(f"half-sampling needs n >= 4 samples; got {n}")
    m = n // 2
    perms = [torch.randperm(n, generator=generator) for _ in range(halves // 2)]
    return torch.stack([p[s] for p in perms for s in (slice(0, m), slice(m, 2 * m))])


def over_halves(metric, x: torch.Tensor, halves: torch.Tensor) -> dict[str, torch.Tensor]:
    """``metric(x[h])`` for each row h of ``halves``: each key's values as a float64 tensor [H] on the CPU.
    ``metric`` maps samples to a dict of floats (or 0-d tensors)."""
    draws = [metric(x[h.to(x.device)]) for h in halves]
    return {k: torch.tensor([float(d[k]) for d in draws], dtype=torch.float64) for k in draws[0]}


def spread(draws: torch.Tensor) -> float:
    """The sampling error at n from a metric's values on halves (module docstring): their standard deviation."""
    return draws.std().item()


def half_sampling_std(metric, x: torch.Tensor, *, halves: int = HALVES,
                      generator: torch.Generator | None = None) -> dict:
    """``{key + "_std": spread}`` for each key of the dict ``metric(x)``: the half-sampling estimate of the
    sampling error at n (module docstring). ``generator`` (a CPU one) draws the halves."""
    draws = over_halves(metric, x, half_samples(x.shape[0], halves, generator=generator))
    return {f"{k}_std": spread(v) for k, v in draws.items()}


def extrapolated(metric, x: torch.Tensor, halves: torch.Tensor) -> tuple[float, float, torch.Tensor]:
    """``(m_n, m_inf, draws)`` of a scalar ``metric(samples) -> float`` whose bias is linear in 1/N (module
    docstring): ``m_inf = 2 m_n - mean_h m(x[h])``, and ``draws``, m on each half: the spread and the pairing of
    ``m_inf`` too, whose sampling error is m's (the bias it removes fluctuates at a higher order in 1/n; measured
    in ``benchmarks/spread_calibration.py``)."""
    value = float(metric(x))
    on_halves = torch.tensor([float(metric(x[h.to(x.device)])) for h in halves], dtype=torch.float64)
    return value, 2 * value - on_halves.mean().item(), on_halves


def paired(value_a: float, value_b: float, draws_a: torch.Tensor, draws_b: torch.Tensor) -> dict:
    """The difference ``a - b`` of two rows measured on corresponding samples, with its half-sampling spread
    (``draws_*``: their values on the same halves), its 95% interval ``diff +- Z95 spread`` and whether that
    interval excludes 0 (``resolved``)."""
    diff, diff_std = value_a - value_b, spread(draws_a - draws_b)
    low, high = diff - Z95 * diff_std, diff + Z95 * diff_std
    return dict(diff=diff, diff_std=diff_std, ci95=[low, high], resolved=bool(low > 0 or high < 0))


def samples_to_resolve(n: int, diff: float, diff_std: float) -> int | None:
    """The samples per row at which a difference ``diff`` with spread ``diff_std`` at n would lie ``Z95`` spreads
    from 0 (variance ~ 1/n); None for a zero difference."""
    if diff == 0:
        return None
    return math.ceil(n * (Z95 * diff_std / diff) ** 2)


__all__ = ["HALVES", "Z95", "half_samples", "over_halves", "spread", "half_sampling_std", "extrapolated", "paired",
           "samples_to_resolve"]
