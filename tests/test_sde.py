"""VPSDE against its closed forms: DDPM discretisation, beta = -d/dt log alpha_bar, inverses, marginals."""
import math

import pytest
import torch

import scoregen as sg

SDES = [sg.VPSDE(), sg.VPSDE(schedule="cosine"),
        sg.VPSDE.from_ddpm_betas(torch.linspace(1e-4, 0.02, 1000))]


def test_ddpm_betas_are_ddpms_linspace_to_first_order():
    sde = sg.VPSDE()
    errs = []
    for n in (250, 1000, 4000):
        ref = torch.linspace(0.1 / n, 20.0 / n, n, dtype=torch.float64)
        errs.append(((sde.ddpm_betas(n) - ref).abs().max() * n).item())  # relative to beta ~ 1/N
    assert errs[1] < 0.25 and errs[2] < errs[1] / 3            # O(1/N) in units of 1/N
    ddpm = sde.ddpm_betas(1000)
    assert torch.allclose(ddpm, torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), atol=2.1e-4)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    exact = torch.exp(-(0.1 * t + 0.5 * 19.9 * t ** 2))       # exp(-int_0^t beta)
    assert (torch.cumprod(1 - ddpm, 0) - exact).abs().max() < 1e-12
    # DDPM's own linspace betas: alpha_bar within 1e-3 of the continuous schedule everywhere
    ab = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    assert (ab - exact).abs().max() < 1e-3


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.schedule)
def test_beta_is_minus_derivative_of_log_alpha_bar(sde):
    t = torch.linspace(0.0123, 0.987, 57, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(sde.log_alpha_bar(t).sum(), t)
    assert torch.allclose(-grad, sde.beta(t), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.schedule)
def test_log_snr_inverse_round_trips(sde):
    t = torch.linspace(1e-3, 1.0, 201, dtype=torch.float64)
    assert (sde.t_from_log_snr(sde.log_snr(t)) - t).abs().max() < 1e-9
    lam = sde.log_snr(t)
    assert bool((lam[1:] < lam[:-1]).all())                     # strictly decreasing
    assert torch.allclose(sde.alpha(t) ** 2 + sde.sigma(t) ** 2, torch.ones_like(t), atol=1e-12)
    assert torch.allclose(lam, torch.log(sde.alpha(t) / sde.sigma(t)), atol=1e-9)


def test_discrete_schedule_converges_to_continuous():
    sde = sg.VPSDE()
    t = torch.rand(1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errs = [(sg.VPSDE.from_ddpm_betas(sde.ddpm_betas(n)).log_alpha_bar(t) - sde.log_alpha_bar(t)).abs().max().item()
            for n in (10, 100, 1000)]
    assert errs[0] < 0.04 and errs[1] < errs[0] / 50 and errs[2] < errs[1] / 50   # O(1/N^2) between knots
    grid = torch.arange(0, 101, dtype=torch.float64) / 100
    disc = sg.VPSDE.from_ddpm_betas(sde.ddpm_betas(100))
    assert (disc.log_alpha_bar(grid) - sde.log_alpha_bar(grid)).abs().max() < 1e-12   # exact at t_i


def test_cosine_matches_nichol_and_ends_like_linear():
    sde = sg.VPSDE(schedule="cosine")
    s = 0.008
    t = torch.linspace(0, 0.9, 10, dtype=torch.float64)
    scale = sde._phi1 / (math.pi / 2) * (1 + s) - s  # time rescaling of the stopped schedule (~0.99)
    nichol = torch.cos(((t * scale + s) / (1 + s)) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
    assert torch.allclose(sde.alpha(t) ** 2, nichol, atol=1e-12)
    assert 0.99 < scale < 1
    assert sde.log_alpha_bar(torch.tensor(1.0, dtype=torch.float64)).item() == pytest.approx(-10.05, abs=1e-12)


def test_perturb_marginal_mean_and_variance():
    sde = sg.VPSDE()
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.full((n, 1), 2.0)
    t = torch.full((n,), 0.3)
    xt = sde.perturb(x0, t, torch.randn(n, 1, generator=g))
    a, s = sde.alpha(0.3).item(), sde.sigma(0.3).item()
    assert xt.mean().item() == pytest.approx(2 * a, abs=4 * s / n ** 0.5)
    assert xt.var().item() == pytest.approx(s ** 2, rel=0.02)


def test_any_shape_dtype_and_batch_broadcast():
    sde = sg.VPSDE()
    for dtype in (torch.float32, torch.float64):
        t = torch.rand(3, 4, dtype=dtype)
        for f in (sde.alpha, sde.sigma, sde.beta, sde.log_snr, sde.diffusion):
            out = f(t)
            assert out.shape == (3, 4) and out.dtype == dtype
    x = torch.randn(5, 1, 8, 8)
    t = torch.linspace(0.1, 0.9, 5)
    assert torch.allclose(sde.drift(x, t)[2], -0.5 * sde.beta(t[2]) * x[2])
    assert sde.perturb(x, t, torch.zeros_like(x))[4].sub(sde.alpha(t[4]) * x[4]).abs().max() < 1e-6
    assert sde.prior_logp(torch.zeros(2, 3)).tolist() == pytest.approx([-1.5 * math.log(2 * math.pi)] * 2)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="schedule must be one of"):
        sg.VPSDE(schedule="quadratic")
    with pytest.raises(ValueError, match="betas"):
        sg.VPSDE.from_ddpm_betas([0.1, 1.5])
    with pytest.raises(ValueError, match="n must be a positive integer"):
        sg.VPSDE().ddpm_betas(0)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.schedule)
def test_transition_kernels_compose_to_the_marginal(sde):
    """q(x_t | x_s) after q(x_s | x_0) is q(x_t | x_0): alpha_{t|s} alpha_s = alpha_t and
    alpha_{t|s}^2 sigma_s^2 + sigma_{t|s}^2 = sigma_t^2, also for t - s at round-off scale."""
    s = torch.linspace(0.01, 0.9, 37, dtype=torch.float64)
    for t in (s + 0.05, s + 1e-9):
        a_ts, v_ts = sde.transition(t, s)
        assert torch.allclose(a_ts * sde.alpha(s), sde.alpha(t), rtol=1e-12)
        assert torch.allclose(a_ts ** 2 * sde.sigma(s) ** 2 + v_ts, sde.sigma(t) ** 2, rtol=1e-10)
        assert bool((v_ts > 0).all())
    a_ts, v_ts = sde.transition(s + 1e-9, s)
    assert torch.allclose(v_ts / 1e-9, sde.beta(s), rtol=1e-5)     # sigma_{t|s}^2 ~ beta dt
