"""scoregen.control against closed forms: the HJB (log Fokker-Planck) residual of the exact log p_t, the
score as optimal control, the control-cost / KL bound for Gaussian data, and path-space log Z."""
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

import scoregen as sg
from scoregen.evaluation.control import (
    control_cost,
    gaussian_endpoint,
    hjb_residual,
    log_normalizer,
    log_path_weights,
    optimal_control,
    prior_control,
    simulate,
)
from scoregen.data import GaussianMixture, gaussian, preset
from scoregen.evaluation.metrics import gaussian_kl, sliced_wasserstein

F64 = torch.float64
E1 = torch.tensor([1.0, 0.0], dtype=F64)
ROOT = Path(__file__).resolve().parents[1]


def _normal(n, g, d=2):
    return torch.randn(n, d, generator=g, dtype=F64)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_hjb_residual_is_round_off_for_log_p_t_and_not_for_a_translated_one(schedule):
    sde, mix = sg.VPSDE(schedule=schedule), preset("gmm2d")
    xs = torch.linspace(-3, 3, 11, dtype=F64)
    grid = torch.cartesian_prod(xs, xs)
    ts = torch.linspace(0.01, 1, 6, dtype=F64)
    x, t = grid.repeat(6, 1), ts.repeat_interleave(len(grid))

    def rel(log_p):
        residual, scale = hjb_residual(log_p, sde, x, t)
        return (residual.abs() / scale).max().item()

    assert rel(lambda x, t: mix.log_prob(x, t, sde)) < 1e-8
    # another data set diffused by the same SDE solves the same PDE: the PDE fixes the dynamics only
    moved = GaussianMixture(mix.weights, mix.means + 0.2, mix.covs)
    assert rel(lambda x, t: moved.log_prob(x, t, sde)) < 1e-8
    # p_t translated by a fixed vector is no solution: the drift would have shrunk the shift by alpha(t)
    assert rel(lambda x, t: mix.log_prob(x - 0.1 * E1, t, sde)) > 1e-3


def test_optimal_control_is_g_times_the_score_and_prior_control_the_gaussian_one():
    sde, mix, g = sg.VPSDE(), preset("gmm2d"), torch.Generator().manual_seed(0)
    x, t = _normal(50, g), torch.rand(50, generator=g, dtype=F64) * 0.99 + 0.01
    g_t = sde.diffusion(t)[:, None]
    assert torch.allclose(optimal_control(mix.eps_model(sde), sde)(x, t), g_t * mix.score(x, t, sde), atol=1e-10)
    standard = gaussian([0.0, 0.0], torch.eye(2, dtype=F64))  # N(0, I) is its own marginal at every t
    assert torch.allclose(prior_control(sde)(x, t), g_t * standard.score(x, t, sde), atol=1e-12)


def test_controlled_end_points_are_the_mixture_with_u_star_and_not_with_u_zero():
    sde, mix, g, n = sg.VPSDE(), preset("gmm2d"), torch.Generator().manual_seed(0), 2000
    reference = mix.sample(n, generator=g)

    def sw(x):
        return sliced_wasserstein(x, reference, generator=torch.Generator().manual_seed(1))

    floor = sum(sw(mix.sample(n, generator=g)) for _ in range(3)) / 3
    u_star = optimal_control(mix.eps_model(sde), sde)
    for x1 in (mix.sample(n, generator=g, t=1.0, sde=sde), _normal(n, g)):
        x0 = simulate(u_star, sde, x1, 200, generator=g).x[-1]
        assert sw(x0) < 3 * floor
        assert (x0.mean(0) - mix.mean()).abs().max() < 0.06
        assert (torch.cov(x0.T) - mix.covariance()).abs().max() < 0.06
        assert (mix.responsibilities(x0).mean(0) - mix.weights).abs().max() < 0.03  # E_p r_k = w_k
    x0 = simulate(lambda x, t: torch.zeros_like(x), sde, _normal(n, g), 200, generator=g).x[-1]
    assert sw(x0) > 100 * floor


def _shifted_score_push(sde, data, eps):
    """u = g grad log q_t with q_0 = data shifted by eps e1, and its x-independent difference to u*."""
    u_star = optimal_control(data.eps_model(sde), sde)
    u = optimal_control(gaussian(data.means[0] + eps * E1, data.covs[0]).eps_model(sde), sde)
    zero = torch.zeros(1, 2, dtype=F64)
    return u, lambda t: u(zero.expand(len(t), 2), t) - u_star(zero.expand(len(t), 2), t)


def _constant_push(u_star, eps):
    """u = u* + eps e1: a constant push, the score of no marginal path."""
    return (lambda x, t: u_star(x, t) + eps * E1), (lambda t: (eps * E1).expand(len(t), 2))


def _p1(sde, data):
    one = torch.ones(1, dtype=F64)
    eye = torch.eye(2, dtype=F64)
    return sde.alpha(one) * data.means[0], sde.alpha(one) ** 2 * data.covs[0] + sde.sigma(one) ** 2 * eye


def test_gaussian_endpoint_closed_forms_and_simulation():
    sde, data = sg.VPSDE(), preset("gauss2d")
    m, s = data.means[0], data.covs[0]
    # u* from the exact p_1 ends at p_0
    end = gaussian_endpoint(data, sde, *_p1(sde, data))
    assert torch.allclose(end.mean, m, atol=1e-12) and torch.allclose(end.cov, s, atol=1e-12)
    # the score of the shifted path from its own q_1 ends at q_0; its cost is KL(p_0||q_0) - KL(p_1||q_1)
    q = gaussian(m + 0.7 * E1, s)
    _, push = _shifted_score_push(sde, data, 0.7)
    end = gaussian_endpoint(data, sde, *_p1(sde, q), push)
    assert torch.allclose(end.mean, m + 0.7 * E1, atol=1e-12) and torch.allclose(end.cov, s, atol=1e-12)
    expected = gaussian_kl(m, s, m + 0.7 * E1, s) - gaussian_kl(*_p1(sde, data), *_p1(sde, q))
    assert end.push_cost.item() == pytest.approx(expected, rel=1e-10)
    # a constant push from N(0, I): the closed form is the law of the simulated process
    g = torch.Generator().manual_seed(0)
    u, push = _constant_push(optimal_control(data.eps_model(sde), sde), 1.0)
    end = gaussian_endpoint(data, sde, torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64), push)
    x0 = simulate(u, sde, _normal(4000, g), 200, generator=g).x[-1]
    assert (x0.mean(0) - end.mean).abs().max() < 0.04
    assert (torch.cov(x0.T) - end.cov).abs().max() < 0.04
    assert (end.mean - m).norm() > 0.5  # the push moved the end point


def test_control_cost_bounds_the_kl_tightly_for_a_score_and_loosely_for_a_constant_push():
    sde, data = sg.VPSDE(), preset("gauss2d")
    m, s = data.means[0], data.covs[0]
    start = (torch.zeros(2, dtype=F64), torch.eye(2, dtype=F64))
    prior_kl = gaussian_kl(*_p1(sde, data), *start)
    u_star = optimal_control(data.eps_model(sde), sde)
    g = torch.Generator().manual_seed(0)
    paths = {k: simulate(u_star, sde, data.sample(8, generator=g, t=1.0, sde=sde), k, generator=g)
             for k in (50, 100, 200)}
    for family in ("score", "push"):
        per_eps2 = []
        for eps in (0.1, 0.5, 1.0, 2.0):
            u, push = _shifted_score_push(sde, data, eps) if family == "score" else _constant_push(u_star, eps)
            end = gaussian_endpoint(data, sde, *start, push)
            kl, cost = gaussian_kl(m, s, end.mean, end.cov), end.push_cost.item()
            assert kl <= prior_kl + cost
            ratio = kl / (prior_kl + cost)
            assert ratio > 0.999 if family == "score" else 0.55 < ratio < 0.62
            per_eps2.append(cost / eps ** 2)
            # the cost along Euler-Maruyama paths of u* converges to it at first order in the step
            errs = [abs(control_cost(paths[k], u).mean().item() - cost) / cost for k in (50, 100, 200)]
            assert errs[2] < 0.03 and 1.6 < errs[0] / errs[1] < 2.4 and 1.6 < errs[1] / errs[2] < 2.4
        assert max(per_eps2) - min(per_eps2) < 1e-9 * max(per_eps2)  # cost is quadratic in the size


def test_log_z_from_path_weights_with_the_exact_and_a_worse_control():
    sde, mix, g, n, log_z = sg.VPSDE(), preset("gmm2d"), torch.Generator().manual_seed(0), 1000, 1.5
    moved = GaussianMixture(mix.weights, mix.means + torch.tensor([0.15, -0.1], dtype=F64), mix.covs)

    def estimate(mixture, steps):
        paths = simulate(optimal_control(mixture.eps_model(sde), sde), sde, _normal(n, g), steps, generator=g)
        return log_normalizer(log_path_weights(paths, sde, lambda x: mix.log_prob(x) + log_z))

    best, worse = estimate(mix, 2000), estimate(moved, 2000)
    assert best.ess > 0.9 * n and abs(best.log_z - log_z) < 0.03
    assert best.lower_bound < log_z and best.log_variance < 0.05
    assert worse.ess < 0.6 * n and worse.lower_bound < best.lower_bound - 0.3
    # with u* the weights' spread is discretisation only: Var log w halves when the steps double
    assert 1.6 < estimate(mix, 250).log_variance / estimate(mix, 500).log_variance < 2.5


def test_path_weights_are_unbiased_at_any_step_count():
    """E w = Z exactly, even on 10 steps and with a poor control: Z within 3 standard errors."""
    sde, g, n, log_z = sg.VPSDE(), torch.Generator().manual_seed(0), 20000, -0.7
    data = gaussian([0.6], [[0.2]])
    poor = gaussian([0.2], [[0.4]])
    for control in (optimal_control(data.eps_model(sde), sde), optimal_control(poor.eps_model(sde), sde)):
        paths = simulate(control, sde, _normal(n, g, d=1), 10, generator=g)
        log_w = log_path_weights(paths, sde, lambda x: data.log_prob(x) + log_z)
        w = torch.exp(log_w - log_z)
        assert abs(w.mean().item() - 1) < 3 * w.std().item() / math.sqrt(n)
        assert log_normalizer(log_w).lower_bound < log_z - 0.01


def test_bad_input_raises():
    sde, mix = sg.VPSDE(), preset("gmm2d")
    control = optimal_control(mix.eps_model(sde), sde)
    with pytest.raises(ValueError, match="steps"):
        simulate(control, sde, torch.zeros(3, 2, dtype=F64), 0)
    with pytest.raises(ValueError, match="x1"):
        simulate(control, sde, torch.zeros(3, dtype=F64), 10)
    with pytest.raises(ValueError, match="x must be"):
        hjb_residual(lambda x, t: mix.log_prob(x, t, sde), sde, torch.zeros(3, 2), torch.ones(2))
    with pytest.raises(ValueError, match="log_w"):
        log_normalizer(torch.zeros(1))
    with pytest.raises(ValueError, match="single Gaussian"):
        gaussian_endpoint(mix, sde, torch.zeros(2), torch.eye(2))


def _example():
    path = ROOT / "examples" / "optimal_control_view.py"
    spec = importlib.util.spec_from_file_location("optimal_control_view", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_pf_ode_check_runs_at_the_t_min_it_prints(capsys):
    """The example's likelihood step starts the PF-ODE at the t_min it reports: with the exact p_1 the error
    left is log p_{t_min} - log p_0 = O(sigma(t_min)^2), below 3e-4 nats at t_min = 1e-5 (about 2e-5 here)
    and above 1e-3 at the package default 1e-3 (about 2e-3)."""
    example, sde, mix = _example(), sg.VPSDE(), preset("gmm2d")
    assert example.T_MIN == 1e-5
    errors = {}
    for t_min in (example.T_MIN, 1e-3):
        out = example.pf_ode(sde, mix, torch.Generator().manual_seed(0), t_min=t_min, tol=1e-7)
        assert out["t_min"] == t_min and f"t_min = {t_min:g}," in capsys.readouterr().out
        errors[t_min] = out["max_abs_err_exact_p1"]
    assert errors[example.T_MIN] < 3e-4 < 1e-3 < errors[1e-3]


def test_saved_example_json_is_a_full_run_at_the_example_t_min():
    """docs/figures/optimal_control.json (the README's numbers) comes from a full run of the current example."""
    example = _example()
    saved = json.loads((ROOT / "docs" / "figures" / "optimal_control.json").read_text())
    assert saved["quick"] is False and saved["n"] == 4000 and saved["steps"] == 500
    assert saved["pf_ode"]["t_min"] == example.T_MIN and saved["pf_ode"]["max_abs_err_exact_p1"] < 3e-4
