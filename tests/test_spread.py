"""Sampling errors from the samples themselves: half-sampling against the known error of a mean, the n-bias removed
by extrapolation (exactly for the plug-in variance, within its spread for the Frechet distance of Gaussians), and
paired differences."""
import math

import pytest
import torch

from scoregen.evaluation.metrics import FrechetReference, frechet_distance, frechet_distance_inf, kid, mmd
from scoregen.evaluation.spread import (Z95, extrapolated, half_sampling_std, half_samples, over_halves, paired,
                                        samples_to_resolve, spread)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_half_samples_are_pairs_of_complementary_halves():
    h = half_samples(11, 6, generator=_gen(0))
    assert h.shape == (6, 5)
    for a, b in zip(h[0::2], h[1::2]):
        assert len(set(a.tolist()) | set(b.tolist())) == 10 and not set(a.tolist()) & set(b.tolist())
    for bad in (3, 5, True):
        with pytest.raises(ValueError, match="halves"):
            half_samples(10, bad)


def test_the_spread_over_halves_is_the_error_at_n_not_a_root_two_less():
    """The mean of n = 500 N(0, 1) draws has error 1/sqrt(500) = 0.0447; the old estimate (divided by sqrt(2))
    gave 0.0316 on average."""
    n, reps = 500, 200
    reported = torch.tensor([half_sampling_std(lambda x: {"mean": x.mean()}, torch.randn(n, 1, generator=_gen(s)),
                                               generator=_gen(10_000 + s))["mean_std"] for s in range(reps)])
    assert reported.mean().item() == pytest.approx(1 / math.sqrt(n), rel=0.04)
    assert reported.std().item() / reported.mean().item() < 0.15      # 50 halves: about 10% uncertain itself


def test_extrapolation_removes_a_bias_linear_in_one_over_n_exactly():
    """The plug-in variance has mean sigma^2 (1 - 1/N): 2 v_n - mean v_{n/2} has mean sigma^2 exactly."""
    n, reps = 40, 3000
    plug_in = lambda x: x.var(unbiased=False)  # noqa: E731
    out = torch.tensor([extrapolated(plug_in, torch.randn(n, generator=_gen(s)) * 2,
                                     half_samples(n, 10, generator=_gen(s + 1)))[:2] for s in range(reps)])
    se = out.std(0) / math.sqrt(reps)
    assert abs(out[:, 0].mean() - 4 * (1 - 1 / n)) < 3 * se[0]          # the plain value is biased
    assert out[:, 0].mean() < 4 - 3 * se[0]
    assert abs(out[:, 1].mean() - 4) < 3 * se[1]                         # the extrapolated one is not


def test_fd_inf_of_gaussian_samples_is_the_exact_distance_where_fd_is_biased():
    d, n, reps = 16, 300, 40
    a = torch.randn(d, d, generator=_gen(0), dtype=torch.float64)
    cov = a @ a.T / d + 0.5 * torch.eye(d, dtype=torch.float64)
    mean = torch.full((d,), 0.2, dtype=torch.float64)
    chol = torch.linalg.cholesky(cov)
    eye = torch.eye(d, dtype=torch.float64)
    exact = frechet_distance((mean, cov), (torch.zeros(d, dtype=torch.float64), eye))
    draws = [mean + torch.randn(n, d, generator=_gen(s), dtype=torch.float64) @ chol.T for s in range(reps)]
    fd = torch.tensor([frechet_distance(x, (0 * mean, eye)) for x in draws])
    fd_inf = torch.tensor([frechet_distance_inf(x, (0 * mean, eye), generator=_gen(s)) for s, x in enumerate(draws)])
    se = math.sqrt(reps)
    assert fd.mean() - exact > 10 * fd.std() / se                       # FD at n = 300 in 16-d: biased upwards
    assert abs(fd_inf.mean() - exact) < 3 * fd_inf.std() / se
    ref = FrechetReference((0 * mean, eye))
    value, value_inf, on_halves = extrapolated(ref.distance, draws[0], half_samples(n, generator=_gen(1)))
    assert value == pytest.approx(fd[0].item()) and value_inf == pytest.approx(2 * value - on_halves.mean().item())
    assert fd_inf.std().item() == pytest.approx(fd.std().item(), rel=0.1)     # its error is fd's
    assert spread(on_halves) == pytest.approx(fd_inf.std().item(), rel=0.35)


def test_kernel_metrics_on_halves_equal_the_metric_of_each_half():
    x = torch.randn(60, 3, generator=_gen(0), dtype=torch.float64)
    y = torch.randn(45, 3, generator=_gen(1), dtype=torch.float64) + 0.3
    halves = half_samples(60, 4, generator=_gen(2))
    for metric in (mmd, kid):
        value, on_halves = metric(x, y, subsets=halves)
        assert value == pytest.approx(metric(x, y), rel=1e-12)
        assert on_halves.tolist() == pytest.approx([metric(x[h], y) for h in halves], rel=1e-10)
    assert over_halves(lambda z: {"m": z.mean()}, x, halves)["m"].tolist() == pytest.approx(
        [x[h].mean().item() for h in halves])


def test_paired_differences_are_sharp_when_rows_share_their_draws():
    """Two rows that differ by a small shift of the same draws: the paired spread is the shift's, far below each
    row's own spread; a 95% interval and the samples that would resolve a tie."""
    n = 400
    x = torch.randn(n, generator=_gen(0), dtype=torch.float64)
    halves = half_samples(n, generator=_gen(1))
    mean = lambda z: {"m": z.mean()}  # noqa: E731
    a, b = over_halves(mean, x + 0.01, halves)["m"], over_halves(mean, x + 0.01 * x.abs(), halves)["m"]
    out = paired((x + 0.01).mean().item(), (x + 0.01 * x.abs()).mean().item(), a, b)
    assert out["diff_std"] < 0.05 * spread(a)
    assert out["ci95"] == pytest.approx([out["diff"] - Z95 * out["diff_std"], out["diff"] + Z95 * out["diff_std"]])
    assert out["resolved"] == (abs(out["diff"]) > Z95 * out["diff_std"])
    assert samples_to_resolve(100, 0.1, 0.1) == math.ceil(100 * Z95 ** 2)
    assert samples_to_resolve(100, 0.0, 0.1) is None
