"""The Gaussian-mixture oracle against independent computations (scipy, autograd, Monte Carlo)."""
import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

import scoregen as sg
from scoregen.data import gaussian, preset


def _scipy_logp(mix, x, alpha, sigma):
    dens = sum(w * multivariate_normal(alpha * m, alpha ** 2 * c + sigma ** 2 * np.eye(mix.dim)).pdf(x)
               for w, m, c in zip(mix.weights.numpy(), mix.means.numpy(), mix.covs.numpy()))
    return np.log(dens)


@pytest.mark.parametrize("name", ["gmm2d", "ring8", "gauss2d"])
def test_marginal_log_prob_matches_scipy(name):
    mix, sde = preset(name), sg.VPSDE()
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1.5
    for t in (0.0, 0.05, 0.4, 1.0):
        ours = mix.log_prob(x, torch.full((50,), t, dtype=torch.float64), sde) if t else mix.log_prob(x)
        ref = _scipy_logp(mix, x.numpy(), sde.alpha(t).item(), sde.sigma(t).item())
        assert np.allclose(ours.numpy(), ref, atol=1e-10)


def test_score_is_gradient_of_log_prob_and_eps_is_minus_sigma_score():
    mix, sde = preset("gmm2d"), sg.VPSDE()
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64).requires_grad_()
    t = torch.rand(64, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.99 + 0.01
    (grad,) = torch.autograd.grad(mix.log_prob(x, t, sde).sum(), x)
    assert torch.allclose(mix.score(x, t, sde), grad, atol=1e-10)
    assert torch.allclose(mix.eps(x, t, sde), -sde.sigma(t)[:, None] * grad, atol=1e-10)


def test_samples_have_the_mixture_moments_and_marginal_samples_the_marginal_moments():
    mix, sde = preset("gmm2d"), sg.VPSDE()
    g = torch.Generator().manual_seed(0)
    x = mix.sample(200_000, generator=g)
    assert torch.allclose(x.mean(0), mix.mean(), atol=0.01)
    assert torch.allclose(torch.cov(x.T), mix.covariance(), atol=0.01)
    xt = mix.sample(200_000, generator=g, t=0.5, sde=sde)
    a, s = sde.alpha(0.5).item(), sde.sigma(0.5).item()
    assert torch.allclose(xt.mean(0), a * mix.mean(), atol=0.01)
    assert torch.allclose(torch.cov(xt.T), a ** 2 * mix.covariance() + s ** 2 * torch.eye(2, dtype=x.dtype), atol=0.01)


def test_tweedie_eps_is_the_posterior_mean_of_the_noise():
    """E[eps | x_t] from the oracle equals a Monte Carlo regression of eps on x_t near a point."""
    mix, sde = gaussian([1.0, -1.0], [[0.3, 0.1], [0.1, 0.2]]), sg.VPSDE()
    t = 0.3
    a, s = sde.alpha(t).item(), sde.sigma(t).item()
    # for one Gaussian E[eps | x_t] = s C^{-1} (x_t - a mu), C = a^2 Sigma + s^2 I
    x = torch.tensor([[0.5, 0.2], [-0.4, 0.9]], dtype=torch.float64)
    c = a ** 2 * mix.covs[0] + s ** 2 * torch.eye(2, dtype=x.dtype)
    expected = s * torch.linalg.solve(c, (x - a * mix.means[0]).T).T
    assert torch.allclose(mix.eps(x, t, sde), expected, atol=1e-12)


def test_gmm_dataset_and_errors():
    ds = sg.load_dataset("gmm", n_train=100, n_test=50)
    assert ds.train.shape == (100, 2) and ds.test.shape == (50, 2) and ds.oracle is not None
    with pytest.raises(ValueError, match="unknown dataset 'nope'; valid: .*gmm"):
        sg.load_dataset("nope")
    with pytest.raises(ValueError, match="unknown mixture preset"):
        preset("nope")
    with pytest.raises(ValueError, match="weights"):
        sg.GaussianMixture([1.0, -1.0], [[0.0], [1.0]])


def test_pf_ode_map_of_a_gaussian_is_the_solved_flow_and_pushes_the_marginals():
    """The closed-form map agrees with dopri5 on the exact eps, and carries N(0, I) at t = 1 onto p_t."""
    g, sde = gaussian([0.5, -0.3], [[0.5, 0.2], [0.2, 0.3]]), sg.VPSDE()
    x1 = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    solved = sg.sample(g.eps_model(sde), sde, x1.shape, "ode", grid=torch.tensor([1.0, 0.2], dtype=torch.float64),
                       x1=x1, dtype=torch.float64, solver="dopri5", rtol=1e-10, atol=1e-10, final_denoise=False).x
    assert (g.pf_ode_map(x1, 0.2, sde) - solved).abs().max() < 1e-7
    x0 = g.pf_ode_map(x1, 0.0, sde)
    assert torch.allclose(x0.mean(0), g.means[0], atol=0.05) and torch.allclose(torch.cov(x0.T), g.covs[0], atol=0.03)
    with pytest.raises(ValueError, match="pf_ode_map needs a single Gaussian .*has 3 components"):
        preset("gmm2d").pf_ode_map(x1, 0.5, sde)
