"""The VAE baseline against closed forms: probabilistic PCA (exact marginal), the discretised Gaussian."""
import math

import pytest
import torch

import scoregen as sg
from scoregen.data import gaussian
from scoregen.models.nets.vae import PRESETS, build_vae, discretized_gaussian_log_prob, linear_vae

D, Q, S = 5, 2, 0.3  # pPCA: x = W z + mu + S noise in R^D, z in R^Q


@pytest.fixture(scope="module")
def ppca():
    """W with orthogonal columns (so the exact posterior is diagonal), the truth N(mu, W W^T + S^2 I), data."""
    g = torch.Generator().manual_seed(0)
    w = torch.linalg.qr(torch.randn(D, Q, generator=g, dtype=torch.float64))[0] * torch.tensor([2.0, 1.0])
    mu = 0.5 * torch.randn(D, generator=g, dtype=torch.float64)
    truth = gaussian(mu, w @ w.T + S ** 2 * torch.eye(D, dtype=torch.float64))
    x = truth.sample(3000, generator=g)
    return w, mu, truth, x[:2000], x[2000:]


def model_marginal(vae):
    """The linear VAE's own exact marginal N(b, W W^T + diag s^2)."""
    w, b = vae.decoder.weight.detach(), vae.decoder.bias.detach()
    return gaussian(b, w @ w.T + torch.diag(torch.exp(2 * vae.log_scale.detach())))


def test_discretized_gaussian_is_a_distribution_on_the_grid():
    levels = 17
    x = 2 * torch.arange(levels, dtype=torch.float64) / (levels - 1) - 1
    for mean, scale in [(0.3, 0.05), (-3.0, 0.1), (0.0, 10.0), (0.999, 1e-3)]:
        logp = discretized_gaussian_log_prob(x, torch.tensor(mean, dtype=torch.float64),
                                             torch.tensor(math.log(scale), dtype=torch.float64), levels)
        assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-12)
        # open edge bins: P(level 0) = Phi((-1 + 1/(L-1) - mean) / scale)
        edge = torch.special.log_ndtr(torch.tensor((-1 + 1 / (levels - 1) - mean) / scale, dtype=torch.float64))
        assert logp[0].item() == pytest.approx(edge.item(), rel=1e-10)
    # a fine grid: bin probability -> density * bin width 2/(L-1)
    x = 2 * torch.arange(256.0) / 255 - 1
    logp = discretized_gaussian_log_prob(x[1:-1], torch.tensor(0.3), torch.tensor(math.log(0.7)), 256)
    density = torch.distributions.Normal(0.3, 0.7).log_prob(x[1:-1]) + math.log(2 / 255)
    torch.testing.assert_close(logp, density, atol=1e-4, rtol=0)
    # far tail in float32 stays finite and matches float64
    far = discretized_gaussian_log_prob(torch.tensor([0.5]), torch.tensor(-0.9), torch.tensor(math.log(0.05)), 256)
    far64 = discretized_gaussian_log_prob(torch.tensor([0.5], dtype=torch.float64), torch.tensor(-0.9, dtype=torch.float64),
                                          torch.tensor(math.log(0.05), dtype=torch.float64), 256)
    assert far.item() == pytest.approx(far64.item(), rel=1e-5) and far.item() < -380
    # finite gradients everywhere at the decoder's scale floor, edge bins and far tails included (float32)
    mean = torch.tensor([-30.0, -1.0, 0.37, 1.0, 30.0])[:, None].requires_grad_(True)
    log_scale = torch.full((5, 1), -7.0, requires_grad=True)
    discretized_gaussian_log_prob(x, mean, log_scale, 256).sum().backward()
    assert bool(torch.isfinite(mean.grad).all() & torch.isfinite(log_scale.grad).all())


def test_elbo_is_exact_at_the_analytic_optimum(ppca):
    """Decoder = the truth, encoder = the exact posterior N(M^-1 W^T (x - mu), S^2 M^-1), M = W^T W + S^2 I:
    log p(x, z) - log q(z | x) = log p(x) for every z, so IWAE_k equals the exact log-likelihood for any
    draw and k; the ELBO (analytic KL, one draw of log p(x | z)) equals it in expectation."""
    w, mu, truth, _, x = ppca
    vae = linear_vae(D, Q).double()
    m_inv = torch.linalg.inv(w.T @ w + S ** 2 * torch.eye(Q, dtype=torch.float64))
    with torch.no_grad():
        vae.decoder.weight.copy_(w), vae.decoder.bias.copy_(mu), vae.log_scale.fill_(math.log(S))
        vae.encoder.weight.zero_()
        vae.encoder.weight[:Q] = m_inv @ w.T
        vae.encoder.bias[:Q] = -m_inv @ w.T @ mu
        vae.encoder.bias[Q:] = torch.log(S ** 2 * torch.diagonal(m_inv))
        exact = truth.log_prob(x)
        g = torch.Generator().manual_seed(1)
        for k in (1, 7):
            torch.testing.assert_close(vae.iwae(x, k, generator=g), exact, atol=1e-10, rtol=0)
        assert vae.elbo(x, generator=g).mean().item() == pytest.approx(exact.mean().item(), abs=0.03)


def test_iwae_rises_towards_the_exact_log_likelihood(ppca):
    """A linear VAE with a random encoder: ELBO < log p(x) and IWAE_k rises to log p(x), k = 1, 10, 100, 1000."""
    *_, x = ppca
    torch.manual_seed(0)
    vae = linear_vae(D, Q).double()
    with torch.no_grad():
        exact = model_marginal(vae).log_prob(x).mean().item()
        g = torch.Generator().manual_seed(2)
        elbo_gap = exact - vae.elbo(x, generator=g).mean().item()
        gaps = [exact - vae.iwae(x, k, generator=g).mean().item() for k in (1, 10, 100, 1000)]
    assert elbo_gap > 1.5 and gaps[0] > 1.5  # k = 1 is the ELBO with a Monte Carlo KL
    assert gaps[0] > gaps[1] > gaps[2] > gaps[3]
    assert abs(gaps[3]) < 0.05 * gaps[0]


def test_training_closes_the_gap_to_the_exact_log_likelihood(ppca):
    """pPCA lies in the linear VAE's family and its ELBO is tight there: Adam drives the held-out gap to ~0."""
    _, _, truth, x_train, x_test = ppca
    torch.manual_seed(0)
    vae = linear_vae(D, Q).double()
    g = torch.Generator().manual_seed(3)

    def gap():
        with torch.no_grad():
            return (truth.log_prob(x_test) - vae.elbo(x_test, generator=torch.Generator().manual_seed(4))).mean().item()

    gap_before, steps = gap(), 1500
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        loss = vae.loss(x_train[torch.randint(0, len(x_train), (256,), generator=g)], generator=g)
        opt.zero_grad(), loss.backward(), opt.step(), sched.step()
    gap_after = gap()
    assert gap_before > 4.0
    assert abs(gap_after) < 0.05  # nats per sample, D = 5; was > 4
    with torch.no_grad():  # the ELBO stays below the model's own exact log-likelihood
        own_gap = (model_marginal(vae).log_prob(x_test) - vae.elbo(x_test, generator=g)).mean().item()
    assert 0 < own_gap < 0.05


def test_fixed_scale_is_mse_and_kl_weight_changes_only_the_loss():
    """scale^2 = 1/2: -log p(x|z) = ||x - mean||^2 + D/2 log pi; loss = that + kl_weight KL; ELBO ignores kl_weight."""
    torch.manual_seed(0)
    x = torch.randn(8, D, dtype=torch.float64)
    vaes = [linear_vae(D, Q, scale=0.5 ** 0.5, kl_weight=w).double() for w in (1.0, 0.1)]
    vaes[1].load_state_dict(vaes[0].state_dict())
    with torch.no_grad():
        mu, log_var = vaes[0].encode(x)
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(5), dtype=mu.dtype)
        sse = ((x - vaes[0].decode(mu + torch.exp(0.5 * log_var) * eps)) ** 2).sum(1)
        kl = 0.5 * (mu ** 2 + log_var.exp() - 1 - log_var).sum(1)
        for vae, w in zip(vaes, (1.0, 0.1)):
            loss = vae.loss(x, generator=torch.Generator().manual_seed(5))
            assert loss.item() == pytest.approx((sse + D / 2 * math.log(math.pi) + w * kl).mean().item(), rel=1e-7)
            elbo = vae.elbo(x, generator=torch.Generator().manual_seed(5))
            torch.testing.assert_close(elbo, -(sse + D / 2 * math.log(math.pi) + kl))
    assert "log_scale" not in dict(vaes[0].named_parameters())


def conv_params(c_in, c_out):
    return c_in * c_out * 16 + c_out


def test_seed64_preset_builds_and_trains_one_step():
    vae = build_vae("seed64")
    chans = (3, 32, 64, 128, 256)
    convs = sum(conv_params(a, b) for a, b in zip(chans, chans[1:]))
    deconvs = sum(b * a * 16 + a for a, b in zip(chans, chans[1:]))
    heads, dec_in = 256 * 4 * 4 * 1024 + 1024, 512 * 256 * 4 * 4 + 256 * 4 * 4
    assert sum(p.numel() for p in vae.parameters()) == convs + heads + dec_in + deconvs == 7_676_611
    assert (vae.levels, vae.kl_weight, vae.dim) == (256, 1.0, 3 * 64 * 64)
    g = torch.Generator().manual_seed(0)
    x = 2 * torch.randint(0, 256, (4, 3, 64, 64), generator=g) / 255.0 - 1
    mu, log_var = vae.encode(x)
    assert mu.shape == log_var.shape == (4, 512)
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        loss = vae.loss(x, generator=torch.Generator().manual_seed(1))
        opt.zero_grad(), loss.backward(), opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[2] < losses[0]
    # fixed scale s^2 = 1/2 on 256 levels: loss ~ SSE + KL + D/2 log pi - D log(2/255) (bins << scale)
    assert losses[0] == pytest.approx(vae.dim * (0.5 * math.log(math.pi) - math.log(2 / 255)), rel=0.3)


@pytest.mark.parametrize("preset", ["digits", "small32"])
def test_presets_shapes_and_discrete_bound(preset):
    torch.manual_seed(0)
    vae = build_vae(preset)
    shape, levels = PRESETS[preset]["shape"], PRESETS[preset]["levels"]
    x = 2 * torch.randint(0, levels, (3,) + shape, generator=torch.Generator().manual_seed(0)) / (levels - 1) - 1
    with torch.no_grad():
        elbo = vae.elbo(x)
        draws = vae.sample(3, mean=False, generator=torch.Generator().manual_seed(0))
    assert elbo.shape == (3,) and bool((elbo < 0).all())  # a bound on a discrete log-probability
    assert draws.shape == (3,) + shape
    torch.testing.assert_close(draws, torch.round((draws + 1) * (levels - 1) / 2) * 2 / (levels - 1) - 1)


def test_sampling_is_one_seeded_decoder_call_on_the_models_device():
    """The VAE is a model kind, not a VP-SDE sampler: ``vae.sample(n, generator=)`` is its one-call sampling,
    and ``sg.sample`` names it when given a VAE."""
    vae = build_vae("digits")
    calls = []
    vae.decoder.register_forward_hook(lambda *_: calls.append(1))
    device = vae.log_scale.device

    def draw(seed, **options):
        with torch.no_grad():
            return vae.sample(5, generator=torch.Generator(device).manual_seed(seed), **options)

    a, b, c = draw(0), draw(0), draw(1)
    assert len(calls) == 3
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (5, 1, 8, 8) and a.device == device and bool((a.abs() <= 1).all())
    g = torch.Generator(device).manual_seed(0)
    with torch.no_grad():  # it decodes z ~ N(0, I), drawn from the generator
        torch.testing.assert_close(a, vae.decode(torch.randn(5, 16, generator=g, device=device)))
    draws = draw(0, mean=False)  # a draw of p(x | z): on the 17-level grid
    torch.testing.assert_close(draws, torch.round((draws + 1) * 8) / 8 - 1)
    with pytest.raises(ValueError, match=r"eps_model is a VAE: sample it with its own one decoder call, vae.sample"):
        sg.sample(vae, sg.VPSDE(), (5, 1, 8, 8), method="ddim")


def test_bad_input_raises():
    with pytest.raises(ValueError, match="preset"):
        build_vae("mnist")
    with pytest.raises(ValueError, match="z_dimm"):
        build_vae("digits", z_dimm=3)
    with pytest.raises(ValueError, match="divisible"):
        build_vae("digits", channels=(8, 8, 8, 8))
    with pytest.raises(ValueError, match="levels"):
        linear_vae(D, Q, levels=1)
    with pytest.raises(ValueError, match="scale"):
        linear_vae(D, Q, scale=0.0)
    vae = build_vae("digits")
    with pytest.raises(ValueError, match="grid"):
        vae.elbo(torch.full((2, 1, 8, 8), 0.01))
    with pytest.raises(ValueError, match="shape"):
        vae.elbo(torch.zeros(2, 1, 8, 9))
    with pytest.raises(ValueError, match="k must"):
        vae.iwae(torch.zeros(2, 1, 8, 8), 0)


def test_sample_refuses_a_count_that_is_not_a_positive_integer():
    vae = linear_vae(2, 1)
    for n in (0, -1, 2.5):
        with pytest.raises(ValueError, match=rf"n must be a positive integer; got {n}"):
            vae.sample(n)
    assert vae.sample(3).shape == (3, 2)
