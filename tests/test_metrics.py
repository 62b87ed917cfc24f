"""Sample-quality metrics against closed forms: Gaussians, shifts, exact oracles, a recorded accuracy."""
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy import integrate
from scipy.stats import multivariate_normal

from scoregen.data import Dataset, load_dataset, preset
from scoregen.evaluation.features import FeatureNet, InceptionFeatures
from scoregen.evaluation.metrics import (attribute_tv, floor, frechet_distance, gaussian_kl, kid, kid_subsets,
                                         label_frequencies, mmd, oracle_metrics, sample_metrics, sliced_wasserstein)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randn(seed, *shape):
    return torch.randn(*shape, generator=_gen(seed), dtype=torch.float64)


def _spd(seed, d):
    a = _randn(seed, d, d)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


# --- Frechet distance -------------------------------------------------------------------------
def test_frechet_distance_of_gaussian_statistics_is_the_closed_form():
    d, m = 5, _randn(0, 5)
    eye = torch.eye(d, dtype=torch.float64)
    assert frechet_distance((torch.zeros(d), eye), (m, eye)) == pytest.approx(m.pow(2).sum().item(), rel=1e-12)
    lam_a, lam_b = _randn(1, d).exp(), _randn(2, d).exp()
    diagonal = (lam_a.sqrt() - lam_b.sqrt()).pow(2).sum() + m.pow(2).sum()   # commuting covariances
    assert frechet_distance((m, torch.diag(lam_a)), (0 * m, torch.diag(lam_b))) == pytest.approx(diagonal.item(),
                                                                                                   rel=1e-10)
    cov_a, cov_b = _spd(3, d), _spd(4, d)                                       # pytorch-fid's direct formula
    ca, cb = cov_a.numpy(), cov_b.numpy()
    direct = m.pow(2).sum().item() + np.trace(ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real)
    assert frechet_distance((m, cov_a), (0 * m, cov_b)) == pytest.approx(direct, rel=1e-9)
    assert frechet_distance((m, cov_a), (m, cov_a)) == pytest.approx(0, abs=1e-12)
    x = _randn(5, 300, d)                                                       # a sample and its shift
    assert frechet_distance(x, x + m) == pytest.approx(m.pow(2).sum().item(), rel=1e-10)


def test_frechet_distance_is_robust_to_singular_covariances():
    x = _randn(5, 10, 50)                     # 10 samples in 50-D: covariance of rank 9
    assert abs(frechet_distance(x, x)) < 1e-10
    assert frechet_distance(x, x + 1) == pytest.approx(50, rel=1e-10)


def test_frechet_distance_of_two_draws_of_one_gaussian_has_its_small_sample_bias():
    """E FD = d (d + 5) / (2 n) + O(n^-2) for two samples of size n of N(0, I_d): 2 d / n from the means,
    d (d + 1) / (2 n) from the covariances (the Bures metric near I is |C_a - C_b|_F^2 / 4)."""
    d = 8
    for n in (1000, 4000):
        fd = torch.tensor([frechet_distance(_randn(s, n, d), _randn(100 + s, n, d)) for s in range(20)])
        assert fd.mean().item() == pytest.approx(d * (d + 5) / (2 * n), rel=0.2)


# --- KID ----------------------------------------------------------------------------------------
def _poly_mmd2(mean_a, cov_a, mean_b, cov_b):
    """Population MMD^2 of k = (x.y/d + 1)^3 between Gaussians: sum_j C(3, j) d^-j |E X^(x)j - E Y^(x)j|^2,
    with Gaussian moments E x_i x_j = C_ij + m_i m_j, E x_i x_j x_k = m_i m_j m_k + m_i C_jk + m_j C_ik + m_k C_ij."""
    def moments(m, c):
        m3 = (torch.einsum("i,j,k->ijk", m, m, m) + torch.einsum("i,jk->ijk", m, c)
              + torch.einsum("j,ik->ijk", m, c) + torch.einsum("k,ij->ijk", m, c))
        return m, c + torch.outer(m, m), m3
    d = mean_a.shape[0]
    return sum(math.comb(3, j) * d ** -j * (pa - pb).pow(2).sum().item()
               for j, (pa, pb) in enumerate(zip(moments(mean_a, cov_a), moments(mean_b, cov_b)), 1))


def test_kid_is_unbiased_zero_for_equal_and_matches_closed_form_for_different_gaussians():
    d, n = 4, 400
    mean_b, cov_b = torch.full((d,), 0.3, dtype=torch.float64), _spd(7, d)
    chol_b = torch.linalg.cholesky(cov_b)
    same, diff, stds = [], [], []
    for s in range(30):
        a = _randn(s, n, d)
        same.append(kid_subsets(a, _randn(1000 + s, n, d), subsets=5, subset_size=200, generator=_gen(s))[0])
        value, std = kid_subsets(a, mean_b + _randn(2000 + s, n, d) @ chol_b.T, subsets=5, subset_size=200,
                                 generator=_gen(s))
        diff.append(value)
        stds.append(std)
    same, diff = torch.tensor(same), torch.tensor(diff)
    assert abs(same.mean()) < 3 * same.std() / math.sqrt(len(same))            # unbiased: no offset at n = 200
    exact = _poly_mmd2(torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64), mean_b, cov_b)
    assert exact > 0.1
    assert abs(diff.mean() - exact) < 3 * diff.std() / math.sqrt(len(diff))
    assert 0 < float(np.mean(stds)) < exact
    full = torch.tensor([kid(_randn(s, n, d), mean_b + _randn(2000 + s, n, d) @ chol_b.T) for s in range(30)])
    assert abs(full.mean() - exact) < 3 * full.std() / math.sqrt(len(full))     # on all samples: unbiased too
    assert full.std() < diff.std()                                              # and sharper than subsets of half


def test_kid_rejects_a_subset_larger_than_the_sample():
    with pytest.raises(ValueError, match="subset_size"):
        kid_subsets(_randn(0, 50, 3), _randn(1, 80, 3), subset_size=60)


# --- sliced Wasserstein -------------------------------------------------------------------------
@pytest.mark.parametrize("p", [1, 2])
def test_sliced_wasserstein_of_a_1d_shift_is_the_shift_for_equal_and_unequal_sizes(p):
    a = _randn(0, 1000, 1)
    assert sliced_wasserstein(a, a + 0.7, p=p, projections=3) == pytest.approx(0.7, rel=1e-12)
    assert sliced_wasserstein(a, torch.cat([a, a]) + 0.7, p=p, projections=3) == pytest.approx(0.7, rel=1e-12)
    assert sliced_wasserstein(a, torch.cat([a, a, a]), p=p, projections=3) == pytest.approx(0, abs=1e-12)


def test_sliced_wasserstein_converges_to_w2_between_1d_gaussians():
    """W2(N(0, 1), N(1, 2^2)) = sqrt(1^2 + (2 - 1)^2); the empirical error shrinks with n (unequal sizes)."""
    errors = [abs(sliced_wasserstein(_randn(n, n, 1), 1 + 2 * _randn(n + 1, 3 * n // 2, 1), projections=1)
                  - math.sqrt(2))
              for n in (200, 20_000)]
    assert errors[1] < 0.02 and errors[1] < errors[0] / 3


def test_sliced_wasserstein_of_a_shift_in_3d_is_its_spherical_average():
    """Shifting by m moves each projection by theta.m: SW2^2 = |m|^2 / d, SW1 = |m| E|theta_1| = |m| / 2 in 3-D."""
    a, m = _randn(0, 100, 3), torch.tensor([0.6, -0.8, 0.0], dtype=torch.float64)
    sw2 = sliced_wasserstein(a, a + m, projections=20_000, generator=_gen(1))
    sw1 = sliced_wasserstein(a, a + m, p=1, projections=20_000, generator=_gen(1))
    assert sw2 ** 2 == pytest.approx(1 / 3, rel=0.03)
    assert sw1 == pytest.approx(1 / 2, rel=0.03)


# --- MMD ----------------------------------------------------------------------------------------
def _gauss_kernel_mmd2(h, mean_a, cov_a, mean_b, cov_b):
    """Population MMD^2 of exp(-|x - y|^2 / 2h^2) between Gaussians: E k(X, Y) = h^d det(h^2 I + C_X + C_Y)^-1/2
    exp(-(m_X - m_Y)^T (h^2 I + C_X + C_Y)^-1 (m_X - m_Y) / 2) for independent X, Y."""
    def ek(ma, ca, mb, cb):
        c = h ** 2 * torch.eye(len(ma), dtype=torch.float64) + ca + cb
        return (h ** len(ma) / torch.det(c).sqrt() * torch.exp(-0.5 * (ma - mb) @ torch.linalg.solve(c, ma - mb))).item()
    return ek(mean_a, cov_a, mean_a, cov_a) + ek(mean_b, cov_b, mean_b, cov_b) - 2 * ek(mean_a, cov_a, mean_b, cov_b)


def test_mmd_is_unbiased_zero_for_equal_and_matches_closed_form_for_different_gaussians():
    bandwidths = (0.2, 0.5, 1.0)
    eye = torch.eye(2, dtype=torch.float64)
    mean_b = torch.tensor([0.5, 0.0], dtype=torch.float64)
    same = torch.tensor([mmd(_randn(s, 300, 2), _randn(100 + s, 200, 2), bandwidths=bandwidths) for s in range(20)])
    diff = torch.tensor([mmd(_randn(s, 300, 2), mean_b + 1.5 * _randn(100 + s, 200, 2), bandwidths=bandwidths)
                         for s in range(20)])
    exact = sum(_gauss_kernel_mmd2(h, 0 * mean_b, eye, mean_b, 2.25 * eye) for h in bandwidths)
    assert abs(same.mean()) < 3 * same.std() / math.sqrt(20)
    assert exact > 0.05
    assert abs(diff.mean() - exact) < 3 * diff.std() / math.sqrt(20)


def test_mmd_rejects_bad_bandwidths():
    with pytest.raises(ValueError, match="bandwidths"):
        mmd(_randn(0, 10, 2), _randn(1, 10, 2), bandwidths=(1.0, -1.0))


# --- Gaussian KL and oracle metrics ---------------------------------------------------------------
def test_gaussian_kl_matches_closed_form_quadrature_and_monte_carlo():
    m0, s0, m1, s1 = 0.3, 0.7, -0.5, 1.4
    closed = math.log(s1 / s0) + (s0 ** 2 + (m0 - m1) ** 2) / (2 * s1 ** 2) - 0.5
    p, q = multivariate_normal(m0, s0 ** 2), multivariate_normal(m1, s1 ** 2)
    quad = integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), -12, 12)[0]
    ours = gaussian_kl(np.array([m0]), np.array([[s0 ** 2]]), np.array([m1]), np.array([[s1 ** 2]]))
    assert ours == pytest.approx(closed, rel=1e-12) and ours == pytest.approx(quad, rel=1e-8)
    mean0, cov0, mean1, cov1 = _randn(0, 3), _spd(1, 3), _randn(2, 3), _spd(3, 3)
    x = multivariate_normal(mean0.numpy(), cov0.numpy()).rvs(200_000, random_state=0)
    log_ratio = (multivariate_normal(mean0.numpy(), cov0.numpy()).logpdf(x)
                 - multivariate_normal(mean1.numpy(), cov1.numpy()).logpdf(x))
    assert gaussian_kl(mean0, cov0, mean1, cov1) == pytest.approx(log_ratio.mean(), abs=4 * log_ratio.std() / 450)
    assert gaussian_kl(mean0, cov0, mean0, cov0) == pytest.approx(0, abs=1e-12)
    with pytest.raises(ValueError, match="cov1"):
        gaussian_kl(mean0, cov0, mean1, -cov1)


def test_oracle_metrics_of_exact_and_shifted_samples():
    oracle = preset("gauss2d")
    neg_entropy = -0.5 * (2 * math.log(2 * math.pi * math.e) + torch.logdet(oracle.covs[0]).item())
    x = oracle.sample(20_000, generator=_gen(1))
    exact = oracle_metrics(x, oracle)
    assert exact["logp_data"] == pytest.approx(neg_entropy, abs=0.01)       # 100k exact draws
    assert abs(exact["logp_gap"]) < 0.03 and exact["moment_kl"] < 1e-3
    shift = torch.tensor([0.2, 0.1], dtype=torch.float64)
    shifted = oracle_metrics(x + shift, oracle)
    quad_form = (shift @ torch.linalg.solve(oracle.covs[0], shift)).item()  # KL of a shifted Gaussian
    assert shifted["moment_kl"] == pytest.approx(0.5 * quad_form, rel=0.05)
    assert shifted["logp_gap"] == pytest.approx(0.5 * quad_form, abs=0.03)   # E_p[log p(x) - log p(x + s)]


def test_floor_and_sample_metrics_on_the_gmm_oracle():
    ds = load_dataset("gmm", n_train=1000, n_test=1000)
    metric = lambda x: sample_metrics(x, ds, generator=_gen(0))  # noqa: E731
    best = floor(metric, ds, 1000, generator=_gen(1))
    wide = metric(1.3 * ds.oracle.sample(1000, generator=_gen(2)))   # too spread out
    assert abs(best["mmd"]) < 0.01 and best["swd"] < 0.1 and abs(best["logp_gap"]) < 0.05
    assert wide["mmd"] > 10 * abs(best["mmd"]) and wide["swd"] > 3 * best["swd"] and wide["logp_gap"] > 0.3


# --- feature network ------------------------------------------------------------------------------
def test_digits_feature_net_reaches_recorded_accuracy_and_is_cached(tmp_path):
    ds = load_dataset("digits")
    net = FeatureNet.for_dataset(ds, cache_dir=tmp_path)
    assert net.info["kind"] == "classifier" and not net.info["loaded"]
    assert net.info["accuracy"] >= 0.95                                    # recorded: 0.986 (359 held out)
    again = FeatureNet.for_dataset(ds, cache_dir=tmp_path)
    assert again.info["loaded"] and again.info["accuracy"] == net.info["accuracy"]
    assert torch.equal(again.features(ds.test), net.features(ds.test))
    assert torch.equal(again.reference, net.features(ds.test))
    assert [p.name for p in tmp_path.iterdir()] == [net.info["path"].rsplit("/", 1)[1]]   # no temp files left
    best = floor(lambda x: sample_metrics(x, ds, extractor=net, generator=_gen(0)), ds, 359, generator=_gen(0))
    noise = sample_metrics(torch.rand(359, 1, 8, 8, generator=_gen(1)) * 2 - 1, ds, extractor=net,
                           generator=_gen(0))
    assert noise["fd"] > 20 * best["fd"] and noise["kid"] > 20 * abs(best["kid"])


def test_unlabelled_images_get_random_features_and_non_images_an_error(tmp_path):
    x = torch.rand(40, 3, 16, 16, generator=_gen(0)) * 2 - 1
    net = FeatureNet.for_dataset(Dataset("blobs", x[:30], x[30:]), cache_dir=tmp_path, feature_dim=16)
    assert net.info["kind"] == "random" and net.info["accuracy"] is None
    assert net.reference.shape == (10, 16)
    with pytest.raises(ValueError, match="image"):
        FeatureNet.for_dataset(load_dataset("gmm", n_train=10, n_test=10), cache_dir=tmp_path)


def test_one_head_per_label_column_and_a_corrupt_cache_is_retrained(tmp_path):
    """Two attributes a computer reads off exactly: brightness (3 levels) and which half is lit (2)."""
    g = _gen(0)
    level, side = torch.randint(3, (600,), generator=g), torch.randint(2, (600,), generator=g)
    x = torch.zeros(600, 1, 8, 8)
    x[side == 0, :, :, :4] = 1
    x[side == 1, :, :, 4:] = 1
    x = x * (0.3 + 0.3 * level[:, None, None, None]) - 1 + 0.05 * torch.randn(x.shape, generator=g)
    labels = torch.stack([level, side], 1)
    ds = Dataset("halves", x[:400], x[400:], labels_train=labels[:400], labels_test=labels[400:])
    net = FeatureNet.for_dataset(ds, cache_dir=tmp_path, steps=100, feature_dim=16)
    assert net.config["num_classes"] == [3, 2]
    assert min(net.info["column_accuracy"]) > 0.95
    assert net.info["accuracy"] == pytest.approx(sum(net.info["column_accuracy"]) / 2)
    with open(net.info["path"], "r+b") as f:                                  # truncate the cache
        f.truncate(100)
    again = FeatureNet.for_dataset(ds, cache_dir=tmp_path, steps=100, feature_dim=16)
    assert not again.info["loaded"] and torch.equal(again.reference, net.reference)
    assert FeatureNet.for_dataset(ds, cache_dir=tmp_path, steps=100, feature_dim=16).info["loaded"]


# --- Inception from disk ----------------------------------------------------------------------------
class _FakeInception(torch.nn.Module):
    """Stands in for inception-2015-12-05.pt: returns per-channel means and the side it was given."""

    def forward(self, x, return_features: bool = False):
        assert x.dtype == torch.uint8
        return torch.cat([x.float().mean((2, 3)), torch.full_like(x[:, :1, 0, 0], x.shape[-1], dtype=torch.float)], 1)


@pytest.mark.filterwarnings("ignore:`torch.jit")
def test_inception_features_call_torchscript_as_stylegan_does_and_reject_bad_files(tmp_path):
    torch.jit.script(_FakeInception()).save(str(tmp_path / "ts.pt"))
    feats = InceptionFeatures(tmp_path / "ts.pt").features(torch.full((2, 1, 8, 8), 0.5))
    assert torch.equal(feats, torch.tensor([[191.0, 191.0, 191.0, 8.0]] * 2))  # uint8(0.5 * 127.5 + 128), RGB, 8x8
    with pytest.raises(FileNotFoundError, match="inception_path"):
        InceptionFeatures(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match="inception_path"):
        InceptionFeatures(tmp_path / "junk.pt")
    torch.save({"w": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="inception_v3"):
        InceptionFeatures(tmp_path / "other.pt")


def test_attribute_tv_is_the_mean_total_variation_of_label_frequencies():
    """Per column 1/2 sum |p - q|: the same labels 0, disjoint classes 1, and a worked case."""
    a = torch.tensor([[0, 1], [0, 2], [1, 2], [1, 2]])
    b = torch.tensor([[0, 0], [0, 0], [0, 0], [0, 0]])
    assert label_frequencies(a, [2, 3]) == [[0.5, 0.5], [0.0, 0.25, 0.75]]
    assert attribute_tv(a, a, [2, 3]) == 0
    assert attribute_tv(a, b, [2, 3]) == pytest.approx((0.5 + 1.0) / 2)
    with pytest.raises(ValueError, match="labels must have 3 columns"):
        label_frequencies(a, [2, 3, 4])
