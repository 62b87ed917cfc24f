"""The bound of a VAE with a diffusion prior (``latent_elbo``) against closed forms: probabilistic PCA with the
exact eps of its prior, N(0, I) or a Gaussian of another mean and covariance, with an approximate or the exact
posterior."""
import math

import pytest
import torch
from oracle import SDE, gen

import scoregen as sg
from scoregen.data.gmm import gaussian
from scoregen.models.nets.vae import linear_vae

W = torch.tensor([[1.0, 0.5], [2.0, -0.25], [0.0, 1.5]], dtype=torch.float64)   # orthogonal columns
B, S = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64), 0.4                  # x = W z + B + S noise
X = torch.tensor([[0.5, 1.0, -0.4], [-1.2, 0.3, 0.8], [2.0, -1.5, 0.2], [0.0, 0.0, 0.0]], dtype=torch.float64)


def ppca(m, c, exact=True):
    """The linear VAE of x = W z + B + S noise, decoder fixed; the encoder is the exact posterior under the prior
    N(m, diag c) (diagonal since W^T W is), or a fixed approximate one."""
    vae = linear_vae(3, 2, scale=S).double()
    prec = 1 / c + (W ** 2).sum(0) / S ** 2                                     # posterior precision, diagonal
    with torch.no_grad():
        vae.decoder.weight.copy_(W)
        vae.decoder.bias.copy_(B)
        enc_w = torch.cat([W.T / S ** 2 / prec[:, None], torch.zeros(2, 3, dtype=torch.float64)])
        enc_b = torch.cat([(m / c - W.T @ B / S ** 2) / prec, -prec.log()])
        if not exact:
            enc_w, enc_b = 0.8 * enc_w, enc_b + 0.3
        vae.encoder.weight.copy_(enc_w)
        vae.encoder.bias.copy_(enc_b)
    return vae


def log_px(m, c):
    """log N(x; W m + B, W diag(c) W^T + S^2 I), the model's exact marginal."""
    return gaussian(W @ m, W @ torch.diag(c) @ W.T + S ** 2 * torch.eye(3, dtype=torch.float64)).log_prob(X - B)


ZERO, ONE = torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)


@pytest.mark.parametrize("k", [1, 3])
def test_the_exact_eps_of_a_standard_normal_prior_gives_the_vaes_own_bound(k):
    """N(0, I) is invariant under the VP-SDE, so the PF-ODE prior is N(0, I) itself: the bound equals vae.iwae
    on the same draws to solver tolerance."""
    vae, eps = ppca(ZERO, ONE, exact=False), gaussian(ZERO, torch.eye(2)).eps_model(SDE)
    res = sg.latent_elbo(vae, eps, SDE, X, k=k, generator=gen())
    torch.testing.assert_close(res.logp, vae.iwae(X, k, gen()), atol=1e-4, rtol=0)
    assert res.k == k and res.nfe > 10 * k


def test_with_the_exact_posterior_every_draw_is_the_exact_log_likelihood():
    vae, eps = ppca(ZERO, ONE), gaussian(ZERO, torch.eye(2)).eps_model(SDE)
    for seed in range(3):
        torch.testing.assert_close(sg.latent_elbo(vae, eps, SDE, X, generator=gen(seed)).logp, log_px(ZERO, ONE),
                                   atol=1e-4, rtol=0)


M, C = torch.tensor([0.7, -0.4], dtype=torch.float64), torch.tensor([0.5, 2.0], dtype=torch.float64)
SHIFT, SCALE = torch.tensor([0.5, -0.2], dtype=torch.float64), torch.tensor([0.8, 1.6], dtype=torch.float64)


def gaussian_prior_eps():
    """The exact eps of the standardised codes u = (z - SHIFT) / SCALE of z ~ N(M, diag C)."""
    return gaussian((M - SHIFT) / SCALE, torch.diag(C / SCALE ** 2)).eps_model(SDE)


def test_a_gaussian_prior_of_another_mean_and_covariance_gives_that_models_bound():
    """Per draw, the bound is log p(x | z) + log N(z; M, diag C) - log q(z | x), the standardisation's Jacobian
    included; with that model's exact posterior it is log p(x) for every draw; a wrong scale is far off."""
    vae = ppca(M, C, exact=False)
    res = sg.latent_elbo(vae, gaussian_prior_eps(), SDE, X, shift=SHIFT, scale=SCALE, t_min=1e-5, generator=gen())
    eps = torch.randn((1, 4, 2), generator=gen(), dtype=torch.float64)[0]          # the draw latent_elbo made
    mu, log_var = vae.encode(X)
    z = mu + (0.5 * log_var).exp() * eps
    log_q = -0.5 * (eps ** 2 + log_var + math.log(2 * math.pi)).sum(1)
    closed = vae.log_px_given_z(X, vae.decode(z)) + gaussian(M, torch.diag(C)).log_prob(z) - log_q
    torch.testing.assert_close(res.logp, closed.detach(), atol=5e-3, rtol=0)   # p_1 is not N(0, I) quite
    exact = sg.latent_elbo(ppca(M, C), gaussian_prior_eps(), SDE, X, shift=SHIFT, scale=SCALE, t_min=1e-5, k=2,
                           generator=gen(1))
    torch.testing.assert_close(exact.logp, log_px(M, C), atol=5e-3, rtol=0)
    off = sg.latent_elbo(ppca(M, C), gaussian_prior_eps(), SDE, X, shift=SHIFT, scale=2 * SCALE, t_min=1e-5,
                         generator=gen(2))
    assert bool(((off.logp - log_px(M, C)).abs() > 0.5).all())


def test_bad_arguments_are_named():
    vae, eps = ppca(ZERO, ONE), gaussian(ZERO, torch.eye(2)).eps_model(SDE)
    with pytest.raises(ValueError, match="scale must be positive in every dimension"):
        sg.latent_elbo(vae, eps, SDE, X, scale=torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="k must be a positive integer; got 0"):
        sg.latent_elbo(vae, eps, SDE, X, k=0)
    with pytest.raises(ValueError, match="divergence must be one of"):
        sg.latent_elbo(vae, eps, SDE, X, divergence="trace")


def test_bad_x_tolerances_and_models_are_named_before_the_vae_runs(capsys):
    """NaN, integer or wrongly shaped x, a tolerance out of (0, 1) or a model that is not one name the real cause
    (they used to surface as the prior's NaN codes, a dtype clash in the encoder or a wrong bound)."""
    vae, eps = ppca(ZERO, ONE), gaussian(ZERO, torch.eye(2)).eps_model(SDE)
    nan = X.clone()
    nan[1, 0] = math.nan
    with pytest.raises(ValueError, match=r"x has NaN/inf values \(1 of 12 values, the first at index \(1, 0\)\)"):
        sg.latent_elbo(vae, eps, SDE, nan)
    with pytest.raises(ValueError, match="x must be a floating tensor; got dtype torch.int64"):
        sg.latent_elbo(vae, eps, SDE, X.long())
    for shape in ((4, 1, 3), (4, 1, 8, 8)):
        with pytest.raises(ValueError, match=rf"x has shape \({shape[0]}, {shape[1]}.*\) but the VAE takes shape "
                                             r"\[n, 3\]"):
            sg.latent_elbo(vae, eps, SDE, torch.zeros(shape, dtype=torch.float64))
    for name in ("rtol", "atol"):
        for bad in (-1e-5, math.nan):
            with pytest.raises(ValueError, match=rf"{name} must be a number in \(0.0, 1.0\); got {bad}"):
                sg.latent_elbo(vae, eps, SDE, X, **{name: bad})
    with pytest.raises(ValueError, match=r"prior_eps_model must be a torch module or a callable eps\(x, t\); got str"):
        sg.latent_elbo(vae, "prior.pt", SDE, X)
    with pytest.raises(ValueError, match=r"vae must be a VAE \(nets.vae.VAE\); got function"):
        sg.latent_elbo(eps, eps, SDE, X)
    sg.latent_elbo(vae, eps, SDE, X, progress=True)
    assert "PF-ODE likelihood" in capsys.readouterr().err


def test_the_shipped_digits_prior_is_on_the_shipped_digits_vae_and_beats_its_standard_normal():
    from scoregen.data import load_dataset
    from scoregen.models.loading import load_model
    from scoregen.models.zoo import shipped_checkpoint

    latent, sde, info = load_model(shipped_checkpoint("digits-latent.pt"), device="cpu")
    vae = load_model(shipped_checkpoint("digits-vae.pt"), device="cpu").model
    assert all(torch.equal(v, vae.state_dict()[k]) for k, v in latent.vae.state_dict().items())
    x = load_dataset("digits").test[:32]
    prior = sg.latent_elbo(latent.vae, latent, sde, x, divergence="hutchinson", rtol=1e-3, atol=1e-3,
                           t_min=info.t_min, generator=gen())
    with torch.no_grad():
        plain = sg.bits_per_dim(vae.iwae(x, 1, gen()), 64)
    assert (plain - prior.bpd).mean() > 0.02, (plain.mean(), prior.bpd.mean())
