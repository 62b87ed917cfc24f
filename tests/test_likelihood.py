"""PF-ODE likelihood, DDPM bound and the bits/dim convention against closed forms (Gaussian oracles, scipy)."""
import json
import math
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import norm

import scoregen as sg
from scoregen.data import GaussianMixture, gaussian, preset
from scoregen.evaluation.likelihood import bits_per_dim, ddpm_bound, dequantize, likelihood_table, log_likelihood

SDE = sg.VPSDE()
T_MIN = 1e-3  # log_likelihood's default


def _draw(mix, n, seed=0):
    return mix.sample(n, generator=torch.Generator().manual_seed(seed))


def _ode_error(mix, x, res, t_min=T_MIN):
    """|log p_1(x_1) + int div - log p_{t_min}(x)|: the solver's error alone (exact p_1, not N(0, I))."""
    return (mix.log_prob(res.x1, 1.0, SDE) + res.delta_logp - mix.log_prob(x, t_min, SDE)).abs().max().item()


# --- bits/dim convention -------------------------------------------------------------------------
@pytest.mark.parametrize("levels", [2, 17, 256])
def test_uniform_density_on_the_bins_has_log2_levels_bits_per_dim(levels):
    dim, delta = 64, 2 / (levels - 1)
    logp = torch.full((3,), -dim * math.log(levels * delta), dtype=torch.float64)  # U[-1 - D/2, 1 + D/2]^D
    assert torch.allclose(bits_per_dim(logp, dim, levels), torch.full((3,), math.log2(levels), dtype=torch.float64),
                          rtol=0, atol=1e-12)
    # a discrete log-probability (uniform over L^D bins) takes no Delta term
    assert math.isclose(bits_per_dim(torch.tensor(-dim * math.log(levels)), dim), math.log2(levels), rel_tol=1e-6)


def test_dequantize_stays_in_the_bin_and_is_uniform():
    levels = 17
    k = torch.randint(0, levels, (20000, 4), generator=torch.Generator().manual_seed(0))
    x = (2 * k / (levels - 1) - 1).double()
    u = (dequantize(x, levels, generator=torch.Generator().manual_seed(1)) - x) * (levels - 1) / 2 + 0.5
    assert bool(((u >= 0) & (u < 1)).all())
    assert abs(u.mean().item() - 0.5) < 0.005 and abs(u.var().item() - 1 / 12) < 0.002


def test_dequantised_density_lower_bounds_the_discrete_log_probability():
    """E_u log p(x + Delta (u - 1/2)) + log Delta <= log P(k) = log int_bin p (Jensen), per bin, and close."""
    levels, m, s = 17, 0.1, 0.3
    mix = gaussian([m], [[s * s]])
    centres = torch.linspace(-1, 1, levels, dtype=torch.float64)
    x = centres.repeat_interleave(4000)[:, None]
    logp = mix.log_prob(dequantize(x, levels, generator=torch.Generator().manual_seed(0))).view(levels, -1)
    bpd_deq = bits_per_dim(logp.mean(1), 1, levels)
    edges = np.concatenate([[-np.inf], centres.numpy()[:-1] + 1 / (levels - 1), [np.inf]])
    bpd_exact = -np.log(np.diff(norm.cdf(edges, m, s))) / math.log(2)
    gap = (bpd_deq.numpy() - bpd_exact) * math.log(2)                      # nats
    assert (gap > -2e-3).all()                        # a bound, up to Monte Carlo error in u
    # interior bins: the Jensen gap is Var_u[log p] / 2 = (d log p / dx)^2 Delta^2 / 24 to second order
    jensen = ((centres.numpy() - m) / s ** 2) ** 2 * (2 / (levels - 1)) ** 2 / 24
    assert np.allclose(gap[1:-1], jensen[1:-1], rtol=0.2, atol=2e-3)


# --- PF-ODE log-likelihood -----------------------------------------------------------------------
def test_ode_likelihood_of_a_gaussian_matches_its_density():
    mix, x = preset("gauss2d"), _draw(preset("gauss2d"), 8)
    res = log_likelihood(mix.eps_model(SDE), SDE, x)
    exact = mix.log_prob(x)
    assert (res.logp - exact).abs().max() < 0.01 * exact.abs().mean()           # within 1 %
    assert _ode_error(mix, x, res) < 1e-3                                       # the rest is p_1 != N(0, I)
    assert res.logp.shape == (8,) and res.nvjp == 2 * res.nfe and res.logp_probes is None
    # t_min sets the density evaluated: p_{t_min}, not p_0
    late = log_likelihood(mix.eps_model(SDE), SDE, x, t_min=0.05)
    assert _ode_error(mix, x, late, t_min=0.05) < 1e-3
    assert (late.logp - exact).abs().max() > 0.02


def test_ode_likelihood_of_the_mixture_converges_with_tolerance():
    mix = preset("gmm2d")
    x = _draw(mix, 8, seed=1)
    loose, tight = (log_likelihood(mix.eps_model(SDE), SDE, x, rtol=tol, atol=tol) for tol in (1e-3, 1e-6))
    assert _ode_error(mix, x, loose) > 100 * _ode_error(mix, x, tight) and _ode_error(mix, x, tight) < 1e-5
    assert loose.nfe < tight.nfe
    assert (tight.logp - mix.log_prob(x)).abs().max() < 0.01
    # fixed steps: RK4's error falls with the step size
    errors = [_ode_error(mix, x, log_likelihood(mix.eps_model(SDE), SDE, x, solver="rk4", options={"step_size": h}))
              for h in (1 / 8, 1 / 16, 1 / 32)]
    assert errors[0] > errors[1] > errors[2] and errors[0] > 10 * errors[2], errors


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_for_the_exact_divergence(probe):
    """On a fixed-step solver the trajectory is the exact run's, so the probes are the only noise."""
    mix, x = preset("gauss2d"), _draw(preset("gauss2d"), 256, seed=2)
    kw = dict(solver="rk4", options={"step_size": 1 / 8})
    exact = log_likelihood(mix.eps_model(SDE), SDE, x, **kw)
    hutch = log_likelihood(mix.eps_model(SDE), SDE, x, divergence="hutchinson", probes=8, probe=probe,
                           generator=torch.Generator().manual_seed(3), **kw)
    assert hutch.logp_probes.shape == (8, 256) and hutch.nvjp == 8 * hutch.nfe
    assert torch.allclose(hutch.logp, hutch.logp_probes.mean(0))
    se = (hutch.logp_probes.var(0) / 8).mean().sqrt() / math.sqrt(256)         # of the mean over points
    assert se > 1e-3                                                            # the estimator is noisy...
    assert (hutch.logp - exact.logp).mean().abs() < 4 * se                      # ...and centred on the exact value


def test_module_model_runs_in_its_own_dtype():
    mix = preset("gauss2d")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones((), dtype=torch.float32))

        def forward(self, x, t):
            assert x.dtype == t.dtype == torch.float32 and t.shape == x.shape[:1] and bool((t <= 1).all())
            return self.scale * mix.eps(x, t, SDE)

    x = _draw(mix, 8, seed=4)
    res = log_likelihood(Net(), SDE, x, rtol=1e-4, atol=1e-4)
    assert res.logp.dtype == torch.float32
    assert (res.logp.double() - mix.log_prob(x)).abs().max() < 0.02


def test_bad_arguments_name_the_allowed_values():
    mix, x = preset("gauss2d"), torch.zeros(2, 2)
    with pytest.raises(ValueError, match="divergence must be one of 'exact', 'hutchinson'"):
        log_likelihood(mix.eps_model(SDE), SDE, x, divergence="trace")
    with pytest.raises(ValueError, match="probe must be one of"):
        log_likelihood(mix.eps_model(SDE), SDE, x, divergence="hutchinson", probe="sphere")
    with pytest.raises(ValueError, match="t_min"):
        log_likelihood(mix.eps_model(SDE), SDE, x, t_min=0)
    with pytest.raises(ValueError, match="variance must be one of 'posterior', 'beta'"):
        ddpm_bound(mix.eps_model(SDE), SDE, x, variance="learned")
    with pytest.raises(ValueError, match="17-level grid"):
        ddpm_bound(mix.eps_model(SDE), SDE, x + 0.01, levels=17)
    with pytest.raises(ValueError, match="levels"):
        bits_per_dim(torch.zeros(1), 4, levels=1)


# --- DDPM variational bound ----------------------------------------------------------------------
def _expected_bound(x0, m, v, alpha_bar, variance, levels=None):
    """E_q[DDPM bound] per dimension for N(m, v) data and its exact eps, Ho et al. 2020 eqs. 5-7, 12-13;
    the discretised decoder by Gauss-Hermite quadrature over x_{t_1}."""
    a, s2 = np.sqrt(alpha_bar), 1 - alpha_bar

    def x0_hat(i):  # x0_hat = A x_t + B, linear for Gaussian data; x_t = a x0 + sqrt(s2) z
        A, B = a[i] * v / (alpha_bar[i] * v + s2[i]), s2[i] * m / (alpha_bar[i] * v + s2[i])
        return A * a[i] * x0 + B, A * np.sqrt(s2[i])                           # mean, slope in z

    def mse(i):  # E (x0 - x0_hat(x_t))^2
        mean, slope = x0_hat(i)
        return (x0 - mean) ** 2 + slope ** 2

    out = 0.5 * (alpha_bar[-1] * x0 ** 2 + s2[-1] - 1 - np.log(s2[-1]))       # L_T
    if levels is None:                                                          # L_0: N(x0_hat, beta_1)
        out = out + 0.5 * mse(1) / s2[1] + 0.5 * np.log(2 * np.pi * s2[1])
    else:
        z, w = np.polynomial.hermite_e.hermegauss(30)
        mean, slope = x0_hat(1)
        mu, half = mean[:, None] + slope * z, 1 / (levels - 1)
        lo = np.where(x0[:, None] < -1 + half, -np.inf, x0[:, None] - half)
        hi = np.where(x0[:, None] > 1 - half, np.inf, x0[:, None] + half)
        sd = np.sqrt(s2[1])
        p = np.where(mu < x0[:, None], norm.sf(lo, mu, sd) - norm.sf(hi, mu, sd),   # no cancellation
                     norm.cdf(hi, mu, sd) - norm.cdf(lo, mu, sd))
        out = out - np.log(p) @ w / np.sqrt(2 * np.pi)
    for i in range(2, len(alpha_bar)):                                          # L_{i-1}
        beta = 1 - alpha_bar[i] / alpha_bar[i - 1]
        beta_tilde = s2[i - 1] * beta / s2[i]
        var = beta_tilde if variance == "posterior" else beta
        out = out + 0.5 * (np.log(var / beta_tilde) + beta_tilde / var - 1) \
            + 0.5 * (a[i - 1] * beta / s2[i]) ** 2 * mse(i) / var
    return out


M, V = np.array([0.5, -0.3]), np.array([0.5, 0.3])
DIAG = gaussian(M, np.diag(V))


def _expected(x, k, variance, sde=SDE, levels=None, grid=None):
    """The closed-form expected bound [n] of DIAG on the uniform K-step grid of ``sde`` (or on ``grid``)."""
    grid = torch.linspace(0, 1, k + 1, dtype=torch.float64) if grid is None else grid
    alpha_bar = sde.alpha(grid).numpy() ** 2
    return sum(_expected_bound(x[:, d].numpy(), M[d], V[d], alpha_bar, variance, levels) for d in range(2))


@pytest.mark.parametrize("variance, sde", [("posterior", SDE), ("beta", SDE), ("beta", sg.VPSDE(beta_max=3.0))],
                         ids=["posterior", "beta", "beta-short-schedule"])
def test_ddpm_bound_matches_its_closed_form_and_tightens_with_steps(variance, sde):
    """A schedule that ends far from N(0, I) (beta_max = 3: alpha_bar(1) = 0.21) exercises the prior term."""
    x = _draw(DIAG, 1000, seed=5)
    nll = -DIAG.log_prob(x).numpy()
    gaps = {}
    for k in (2, 10, 50):
        res = ddpm_bound(DIAG.eps_model(sde), sde, x, steps=k, variance=variance,
                         generator=torch.Generator().manual_seed(k))
        diff = res.nll.numpy() - _expected(x, k, variance, sde)
        assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(len(x)), (k, diff.mean())
        gap = res.nll.numpy() - nll
        gaps[k] = gap.mean()
        assert gap.mean() > -3 * gap.std() / math.sqrt(len(x))                  # a bound, in expectation
        assert res.nfe == k and torch.equal(res.nll, res.prior + res.diffusion + res.decoder)
    if variance == "beta" and sde is SDE:      # the true reverse variance of smooth data: tight as K grows
        assert gaps[2] > gaps[10] + 0.1
        expected_gaps = [(_expected(x, k, "beta") - nll).mean() for k in (10, 100, 1000)]
        assert expected_gaps[0] > expected_gaps[1] > expected_gaps[2] > 0 and expected_gaps[2] < 2e-3  # O(1/K)


def test_ddpm_bound_on_a_non_uniform_grid_given_in_any_order():
    x = _draw(DIAG, 1000, seed=11)
    grid = torch.linspace(0, 1, 21, dtype=torch.float64) ** 2                    # quadratic: fine near t = 0
    res = ddpm_bound(DIAG.eps_model(SDE), SDE, x, grid=grid.flip(0), generator=torch.Generator().manual_seed(0))
    diff = res.nll.numpy() - _expected(x, 20, "posterior", grid=grid)
    assert res.nfe == 20 and abs(diff.mean()) < 4 * diff.std() / math.sqrt(len(x)), diff.mean()


def test_sampled_steps_are_an_unbiased_estimate_of_all_steps():
    x = _draw(DIAG, 4000, seed=6)
    part = ddpm_bound(DIAG.eps_model(SDE), SDE, x, steps=100, sample_steps=8,
                      generator=torch.Generator().manual_seed(1))
    assert part.nfe == 9 and bool((part.diffusion_se > 0).all())
    diff = part.nll.numpy() - _expected(x, 100, "posterior")
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(len(x)), diff.mean()
    # the reported per-sample standard error matches the spread of the estimate around the exact sum
    full = ddpm_bound(DIAG.eps_model(SDE), SDE, x[:1000], steps=100, generator=torch.Generator().manual_seed(0))
    ratio = ((part.diffusion[:1000] - full.diffusion).var() / (part.diffusion_se[:1000] ** 2).mean()).item()
    assert 0.7 < ratio < 1.5, ratio


def test_discretised_decoder_matches_its_closed_form():
    levels = 9
    x = _draw(DIAG, 2000, seed=9)
    x = 2 * torch.round((x.clamp(-1, 1) + 1) * (levels - 1) / 2) / (levels - 1) - 1   # quantised draws
    res = ddpm_bound(DIAG.eps_model(SDE), SDE, x, levels=levels, steps=10, generator=torch.Generator().manual_seed(2))
    diff = res.nll.numpy() - _expected(x, 10, "posterior", levels=levels)
    assert abs(diff.mean()) < 4 * diff.std() / math.sqrt(len(x)), diff.mean()


def test_ddpm_bound_with_discretised_decoder_bounds_the_exact_discrete_likelihood():
    """Quantised data: the oracle is the mixture of point masses on the L-level grid (what a perfect eps-net
    of quantised data learns); its exact -log P(k) is the reference, the bound carries no dequantisation."""
    levels = 5
    centres = np.linspace(-1, 1, levels)
    edges = np.concatenate([[-np.inf], centres[:-1] + 1 / (levels - 1), [np.inf]])
    p = np.outer(np.diff(norm.cdf(edges, 0.2, 0.5)), np.diff(norm.cdf(edges, -0.3, 0.4)))
    i, j = np.meshgrid(np.arange(levels), np.arange(levels), indexing="ij")
    dirac = GaussianMixture(p.ravel(), np.stack([centres[i.ravel()], centres[j.ravel()]], 1), torch.zeros(levels ** 2))
    x, k = dirac.sample(1000, generator=torch.Generator().manual_seed(7), return_labels=True)
    nll = -dirac.weights.log()[k]
    res = ddpm_bound(dirac.eps_model(SDE), SDE, x, levels=levels, steps=20, generator=torch.Generator().manual_seed(8))
    gap = (res.nll - nll).numpy()
    assert gap.mean() > 3 * gap.std() / math.sqrt(len(x)) and gap.mean() < 1.5
    assert torch.allclose(res.bpd, res.nll / (2 * math.log(2)))


def test_likelihood_table_rows_agree_with_the_oracle():
    from scoregen.evaluation.likelihood import likelihood_table, markdown_table
    from scoregen.models.nets.vae import linear_vae

    mix = preset("gauss2d")
    x = _draw(mix, 64, seed=10)
    vae = linear_vae(2, 1).double()
    rows = likelihood_table(x, eps_model=mix.eps_model(SDE), sde=SDE, vae=vae, divergence="exact", bound_steps=10,
                            iwae_k=8, generator=torch.Generator().manual_seed(0))
    assert [(r["model"], r["kind"]) for r in rows] == [("diffusion", "exact"), ("diffusion", "bound"),
                                                        ("VAE", "bound"), ("VAE", "bound")]
    exact = bits_per_dim(mix.log_prob(x), 2)
    assert abs(rows[0]["bpd"] - exact.mean().item()) < 2e-3 and rows[0]["nfe"] > 10
    assert math.isclose(rows[0]["se"], exact.std().item() / 8, rel_tol=0.05)
    assert rows[1]["nfe"] == 10 and rows[1]["bpd"] > exact.mean().item()
    assert rows[2]["bpd"] > rows[3]["bpd"] and rows[3]["nfe"] == 8          # IWAE tighter than the ELBO
    assert markdown_table(rows).count("\n") == 6


# --- bad input: x, non-finite models, quantised data ---------------------------------------------
def _nan_eps(x, t):
    return torch.full_like(x, math.nan)


def test_x_must_be_finite_non_empty_floats():
    mix = preset("gauss2d")
    model = mix.eps_model(SDE)

    class Net(torch.nn.Module):        # a module would cast integer x to its own dtype
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.ones(()))

        def forward(self, x, t):
            return self.scale * mix.eps(x, t, SDE)

    for fn in (log_likelihood, ddpm_bound):
        with pytest.raises(ValueError, match=r"x must be a floating tensor; got dtype torch.int64 \(integer levels"):
            fn(Net(), SDE, torch.zeros(3, 2, dtype=torch.long))
        with pytest.raises(ValueError, match=r"x is empty \(shape \(0, 2\)\): give at least one point"):
            fn(model, SDE, torch.zeros(0, 2))
        with pytest.raises(ValueError, match=r"x must have shape \[n, ...\] with a batch dimension; got \(2,\)"):
            fn(model, SDE, torch.zeros(2))
        for bad in (math.nan, math.inf):
            with pytest.raises(ValueError, match=r"x has NaN/inf values \(1 of 4 values, the first at "
                                                 r"index \(1, 0\)\)"):
                fn(model, SDE, torch.tensor([[0.1, 0.2], [bad, 0.3]]))
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match=f"batch_size must be a positive integer; got {bad}"):
            ddpm_bound(model, SDE, torch.zeros(3, 2), batch_size=bad)
        with pytest.raises(ValueError, match=f"batch_size must be a positive integer; got {bad}"):
            likelihood_table(torch.zeros(3, 2), eps_model=model, sde=SDE, batch_size=bad)


def test_tolerances_and_the_model_are_checked_at_the_entry():
    """A negative rtol used to run (gmm2d: -37.79 nats against -41.37), a NaN one to blame the network, a string
    model to fail with "'str' object is not callable"."""
    mix = preset("gmm2d")
    x, model = _draw(mix, 4), mix.eps_model(SDE)
    for name in ("rtol", "atol"):
        for bad in (-1e-5, 0.0, math.nan, math.inf, 1.5):
            with pytest.raises(ValueError, match=rf"{name} must be a number in \(0.0, 1.0\); got {bad}"):
                log_likelihood(model, SDE, x, **{name: bad})
            with pytest.raises(ValueError, match=rf"{name} must be a number in \(0.0, 1.0\); got {bad}"):
                likelihood_table(x, eps_model=model, sde=SDE, **{name: bad})
    with pytest.raises(ValueError, match="solver must be one of .*; got 'rk45'"):
        log_likelihood(model, SDE, x, solver="rk45")
    for fn in (log_likelihood, ddpm_bound):
        with pytest.raises(ValueError, match="eps_model must be a torch module or a callable eps\\(x, t\\); got str"):
            fn("digits.pt", SDE, x)


def test_adaptive_solves_name_a_non_finite_model_instead_of_underflow_in_dt():
    """torchdiffeq shrinks the step to 0 on NaN and asserts "underflow in dt": the package says what went wrong."""
    from scoregen.core.flow import Model
    from scoregen.samplers.ode import odeint_pf

    mix = preset("gauss2d")
    x = _draw(mix, 4)
    with pytest.raises(ValueError, match=r"eps_model returned NaN/inf at t=0.001 during the adaptive ODE solve "
                                         r"\(8 of 8 values, the first at index \(0, 0\)\)"):
        log_likelihood(_nan_eps, SDE, x)

    def nan_late(x, t):                # finite for t > 1/2 only
        return torch.where(t[:, None] < 0.5, math.nan, mix.eps(x, t, SDE))
    for solver in ("dopri5", "bosh3"):
        with pytest.raises(ValueError, match=r"eps_model returned NaN/inf at t=0\.[1-4]\d* during the "
                                             r"adaptive ODE solve"):
            sg.sample(nan_late, SDE, (4, 2), "ode", solver=solver, dtype=torch.float64)

    def runaway(x, t):                 # eps = c x with c >> sigma: the forward drift grows x until it overflows
        return 1e4 * x
    with pytest.raises(ValueError, match=r"its input x_t had NaN/inf .*: the solve diverged where the network "
                                         r"extrapolates"):
        log_likelihood(runaway, SDE, torch.randn(2, 2, generator=torch.Generator().manual_seed(0)))

    def kink(x, t):                    # finite values, NaN gradient: the divergence is NaN
        return mix.eps(x, t, SDE) + (x - x.detach()).abs().sqrt()
    with pytest.raises(ValueError, match="the divergence of the PF-ODE drift is non-finite at t=0.001: eps_model's "
                                         "gradient with respect to x is NaN/inf there"):
        log_likelihood(kink, SDE, x)
    model = Model(mix.eps_model(SDE), SDE, torch.device("cpu"), torch.float64)
    for bad in (torch.zeros(0, 2, dtype=torch.float64), x.clone().fill_(math.inf)):
        with pytest.raises(ValueError, match="x is empty|x has NaN/inf values"):
            odeint_pf(model, bad, torch.tensor([T_MIN, 1.0]), solver="dopri5", variable="t", rtol=1e-5, atol=1e-5)


def test_fixed_step_likelihood_and_the_bound_refuse_a_non_finite_result():
    x = _draw(preset("gauss2d"), 4)
    with pytest.raises(ValueError, match=r"log_likelihood is non-finite for 4 of 4 points \(the first: point 0\): "
                                         "eps_model returned NaN/inf"):
        log_likelihood(_nan_eps, SDE, x, solver="rk4", options={"step_size": 0.25})
    with pytest.raises(ValueError, match="ddpm_bound is non-finite for 4 of 4 points"):
        ddpm_bound(_nan_eps, SDE, x, steps=4)


def test_grid_levels_finds_quantised_data_and_only_those():
    from scoregen.core.quantization import grid_levels

    digits = sg.load_dataset("digits").test
    assert grid_levels(digits) == 17 and grid_levels(digits[:1]) == 17                       # one image: 64 values
    assert grid_levels(sg.load_dataset("cartoon", n=8, size=32).test) == 256
    assert grid_levels(dequantize(digits, 17, generator=torch.Generator().manual_seed(0))) is None
    g = torch.Generator().manual_seed(0)
    for n, d in ((1, 1), (2, 2), (3, 2), (8, 2), (256, 64), (5000, 2)):
        for dtype in (torch.float16, torch.float32, torch.float64):
            for _ in range(10):       # Gaussian draws, clamped to [-1, 1] (ties at the ends)
                assert grid_levels(torch.randn(n, d, generator=g).clamp(-1, 1).to(dtype)) is None
    assert grid_levels(torch.zeros(8, 2)) is None                                            # one value: no grid
    assert grid_levels(torch.randint(0, 5, (100, 2), generator=g).double() / 2 - 1) == 5


def test_quantised_x_warns_with_the_fix():
    """A density of undequantised data (log_likelihood, a levels=None bound, a density-decoder VAE) is meaningless."""
    from scoregen.core.quantization import QuantizedDataWarning
    from scoregen.models.nets.vae import linear_vae

    levels = 17
    x = _draw(DIAG, 200, seed=12)
    xq = 2 * torch.round((x.clamp(-1, 1) + 1) * (levels - 1) / 2) / (levels - 1) - 1
    model = DIAG.eps_model(SDE)
    with pytest.warns(QuantizedDataWarning, match=r"x lies on the 17-level grid .*log_likelihood returns a density, "
                                                  r"which needs dequantised data; use dequantize\(x, 17\)"):
        log_likelihood(model, SDE, xq, solver="rk4", options={"step_size": 0.25})
    with pytest.warns(QuantizedDataWarning, match=r"levels=None makes the decoder a density.*pass levels=17"):
        ddpm_bound(model, SDE, xq, steps=4)
    with pytest.warns(QuantizedDataWarning, match=r"this VAE's decoder is a density \(levels=None\)"):
        linear_vae(2, 1).double().elbo(xq)
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuantizedDataWarning)
        log_likelihood(model, SDE, dequantize(xq, levels, generator=torch.Generator().manual_seed(0)),
                       solver="rk4", options={"step_size": 0.25})
        log_likelihood(model, SDE, x, solver="rk4", options={"step_size": 0.25})
        ddpm_bound(model, SDE, xq, levels=levels, steps=4)
        ddpm_bound(model, SDE, x, steps=4)


def test_quantised_data_are_told_from_min_repeats_entries_per_distinct_value():
    """Few values lie on some grid of up to 256 levels by chance: x counts as quantised only with MIN_REPEATS
    entries per distinct value. 4 points of 17-level data in 2-D (8 entries) pass silently; 50 (100) warn."""
    from scoregen.core.quantization import MIN_REPEATS, grid_levels

    values = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])                       # the 5-level grid
    x = values.repeat(MIN_REPEATS)[:, None]
    assert grid_levels(x) == 5 and grid_levels(x[1:]) is None                # at the threshold and one entry below
    digits = 2 * torch.randint(0, 17, (50, 2), generator=torch.Generator().manual_seed(0)) / 16 - 1
    assert grid_levels(digits[:4]) is None and grid_levels(digits) == 17


# --- the table: LikelihoodSettings from Python and the command line ------------------------------
def test_the_table_from_python_is_the_commands_json(tmp_path):
    """``table(LikelihoodSettings(...))`` returns the rows that ``scoregen likelihood`` prints and writes (the VAE
    rows of 8 held-out digits in chunks of 4): the command is a thin call of the library."""
    from importlib import resources
    from pathlib import Path

    from scoregen.app.cli import main
    from scoregen.evaluation.likelihood import LikelihoodSettings, table

    vae = Path(str(resources.files("scoregen") / "checkpoints" / "digits-vae.pt"))
    main(["likelihood", "--vae-ckpt", str(vae), "-n", "8", "--iwae-k", "4", "--batch-size", "4", "--seed", "3",
          "--device", "cpu", "--out", str(tmp_path / "ll.json")])
    rows = table(LikelihoodSettings(vae_ckpt=vae, n=8, iwae_k=4, batch_size=4, seed=3, device="cpu"))
    cli = json.loads((tmp_path / "ll.json").read_text())
    assert [r["quantity"] for r in rows] == ["ELBO", "IWAE (k=4)"] and all(r["n"] == 8 for r in rows)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in rows] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in cli]
    with pytest.raises(ValueError, match="give --ckpt and/or --vae-ckpt"):
        table(LikelihoodSettings())
    with pytest.raises(ValueError, match="prior_k must be a positive integer; got 0"):
        LikelihoodSettings(vae_ckpt=vae, prior_k=0)


def test_the_likelihoods_import_no_sampler():
    """The likelihoods share the PF-ODE's right-hand side with the samplers through ``core.flow``: nothing under
    ``scoregen/evaluation/likelihood`` imports ``scoregen.samplers`` (read from the source files' imports)."""
    import ast
    from pathlib import Path

    import scoregen.evaluation.likelihood as package

    root = Path(package.__file__).parent
    files = sorted(root.rglob("*.py"))
    assert {f.name for f in files} >= {"__init__.py", "bpd.py", "pf_ode.py", "bound.py", "latent.py", "report.py"}
    for f in files:
        parts = ["scoregen", "evaluation", "likelihood"] + list(f.relative_to(root).parent.parts)
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = parts[:len(parts) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                names = [module] + [f"{module}.{a.name}" for a in node.names]
            else:
                continue
            assert not any(n == "scoregen.samplers" or n.startswith("scoregen.samplers.") for n in names), \
                f"{f.relative_to(root)}:{node.lineno} imports the samplers"


def test_progress_bars_are_asked_for(capsys):
    """The estimators are quiet by default and show a tqdm bar with progress=True; ``scoregen likelihood`` shows
    bars (of its chunks and of each estimator) unless --no-progress."""
    from importlib import resources

    from scoregen.app.cli import main

    mix = preset("gauss2d")
    x, model = _draw(mix, 4), mix.eps_model(SDE)
    log_likelihood(model, SDE, x)
    ddpm_bound(model, SDE, x, steps=4)
    likelihood_table(x, eps_model=model, sde=SDE, bound_steps=4)
    assert capsys.readouterr().err == ""
    log_likelihood(model, SDE, x, progress=True)
    assert "PF-ODE likelihood" in capsys.readouterr().err
    ddpm_bound(model, SDE, x, steps=4, progress=True)
    assert "DDPM bound" in capsys.readouterr().err
    likelihood_table(x, eps_model=model, sde=SDE, bound_steps=4, progress=True)
    err = capsys.readouterr().err
    assert "PF-ODE likelihood" in err and "DDPM bound" in err
    with pytest.raises(SystemExit):
        main(["likelihood", "--help"])
    assert "--no-progress" in capsys.readouterr().out
    argv = ["likelihood", "--vae-ckpt", str(resources.files("scoregen") / "checkpoints" / "digits-vae.pt"), "-n", "4",
            "--iwae-k", "2", "--batch-size", "2", "--device", "cpu"]
    main(argv)
    assert "likelihoods" in capsys.readouterr().err
    main(argv + ["--no-progress"])
    assert capsys.readouterr().err == ""
