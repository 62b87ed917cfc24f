"""k-NN manifold metrics against the reference code (prdc), brute-force definitions and known answers."""
import numpy as np
import prdc
import pytest
import torch

from scoregen.evaluation import manifold as manifold_module
from scoregen.evaluation.manifold import K, Manifold, manifold_metrics

NAMES = ("precision", "recall", "density", "coverage")


def _randn(seed, *shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _brute(fake, real, k):
    """The four metrics straight from their definitions: loops over pairs, the k-th neighbour's distance by sorting
    (index 0 is the point itself), ball membership strict."""
    fake, real = fake.reshape(len(fake), -1).numpy(), real.reshape(len(real), -1).numpy()

    def dist(a, b):
        return float(np.sqrt(((a - b) ** 2).sum()))

    def radii(x):
        return [sorted(dist(p, q) for q in x)[k] for p in x]
    r_real, r_fake = radii(real), radii(fake)
    inside = [[dist(f, r) < rad for r, rad in zip(real, r_real)] for f in fake]  # [M][N]: f_j in the ball of r_i
    return {"precision": np.mean([any(row) for row in inside]),
            "recall": np.mean([any(dist(r, f) < rad for f, rad in zip(fake, r_fake)) for r in real]),
            "density": sum(map(sum, inside)) / (k * len(fake)),
            "coverage": np.mean([any(row[i] for row in inside) for i in range(len(real))])}


def _close(got, want, tol=1e-12):
    assert set(got) == set(NAMES)
    for name in NAMES:
        assert isinstance(got[name], float)
        assert got[name] == pytest.approx(float(want[name]), abs=tol), name


@pytest.mark.parametrize("n, m, shape, k, shift, scale", [(300, 250, (16,), 5, 0.0, 1.0),
                                                          (200, 220, (2, 4), 3, 0.5, 1.5)])
def test_equals_prdc(n, m, shape, k, shift, scale):
    real, fake = _randn(0, n, *shape), shift + scale * _randn(1, m, *shape)
    want = prdc.compute_prdc(real.reshape(n, -1).numpy(), fake.reshape(m, -1).numpy(), nearest_k=k)
    got = manifold_metrics(fake, real, k=k)
    _close(got, want)
    assert 0 < got["precision"] < 1 and 0 < got["coverage"] < 1  # a case that tells the balls apart


def test_identical_sets():
    """Every point is in its own ball, and each ball holds exactly its centre and k - 1 neighbours: the k-th
    neighbour sits on the sphere, outside the strict ball, so density is exactly 1 (given consistent distances)."""
    x = _randn(2, 200, 16)
    assert manifold_metrics(x, x.clone()) == dict.fromkeys(NAMES, 1.0)
    _close(manifold_metrics(x[:12], x[:12], k=3), _brute(x[:12], x[:12], 3), tol=0)


def test_empty_balls():
    """k + 1 copies of each fake point make every fake radius 0: the strict balls are empty, so recall is 0."""
    real = _randn(3, 30, 4)
    fake = real[:10].repeat(K + 1, 1)
    got = manifold_metrics(fake, real)
    assert got["recall"] == 0.0 and got["precision"] == 1.0 and got["coverage"] > 0
    _close(got, _brute(fake, real, K), tol=0)


def test_disjoint_sets():
    assert manifold_metrics(_randn(4, 40, 4) + 1000, _randn(5, 50, 4)) == dict.fromkeys(NAMES, 0.0)


def test_fake_half_of_real():
    real = _randn(5, 100, 16)
    got = manifold_metrics(real[::2], real, k=3)
    assert got["precision"] == 1.0
    _close(got, _brute(real[::2], real, 3), tol=0)


def test_fake_shifted_except_some():
    real = _randn(6, 60, 5)
    fake = real.clone()
    fake[24:] += 1000  # 24 of 60 fake points stay on real points, the rest are far off
    got = manifold_metrics(fake, real, k=4)
    assert got["precision"] == pytest.approx(0.4, abs=1e-15)
    _close(got, _brute(fake, real, 4), tol=0)


@pytest.mark.parametrize("replace", [False, True])
def test_resampled_rows_equal_metrics_of_subsets(replace, monkeypatch):
    real, fake, gen = _randn(7, 120, 6), 0.3 + _randn(8, 100, 6), torch.Generator().manual_seed(9)
    subsets = (torch.randint(0, 100, (5, 100), generator=gen) if replace  # bootstrap: duplicates in a subset
               else torch.stack([torch.randperm(100, generator=gen)[:50] for _ in range(5)]))  # halves
    manifold = Manifold(real, k=np.int64(4))
    rows = manifold.resampled(fake, subsets)
    assert all(rows[name].dtype == torch.float64 and rows[name].shape == (5,) for name in NAMES)
    assert len({float(v) for v in rows["coverage"]}) > 1  # the subsets differ
    for h, idx in enumerate(subsets):
        _close({name: float(v[h]) for name, v in rows.items()}, manifold.metrics(fake[idx]), tol=0)
    monkeypatch.setattr(manifold_module, "_BLOCK", 500)  # blocks of 4 rows of distances, one subset at a time
    small = Manifold(real, k=4)
    assert torch.equal(small.radii, manifold.radii)
    assert all(torch.equal(v, rows[name]) for name, v in small.resampled(fake, subsets).items())
    full = manifold.resampled(fake, torch.arange(100)[None])
    assert manifold.metrics(fake) == {name: float(v[0]) for name, v in full.items()}
    _close(manifold.metrics(fake), prdc.compute_prdc(real.numpy(), fake.numpy(), nearest_k=4))


def test_bad_input():
    real, fake = _randn(10, 10, 3), _randn(11, 8, 3)
    manifold = Manifold(real, k=3)
    cases = [(lambda: Manifold(real, k=0), "k must be an integer >= 1"),
             (lambda: Manifold(real, k=2.5), "k must be an integer"),
             (lambda: Manifold(real, k=True), "k must be an integer"),
             (lambda: manifold_metrics(fake, real, k=-1), "k must be an integer"),
             (lambda: Manifold(real, k=10), r"k must be < the number of real points N=10"),
             (lambda: Manifold(real[:1], k=1), "real must have shape"),
             (lambda: Manifold(real[0]), "real must have shape"),
             (lambda: manifold.metrics(fake[0]), "fake must have shape"),
             (lambda: manifold.metrics(_randn(12, 8, 4)), "fake and real must have the same feature dimension"),
             (lambda: manifold.metrics(fake[:3]), r"fake .* more than k=3 points"),
             (lambda: manifold.resampled(fake, torch.arange(8)), "subsets must be a 2-D integer tensor"),
             (lambda: manifold.resampled(fake, torch.zeros(2, 5)), "subsets must be a 2-D integer tensor"),
             (lambda: manifold.resampled(fake, torch.ones(2, 5, dtype=torch.bool)), "subsets must be a 2-D integer"),
             (lambda: manifold.resampled(fake, torch.full((2, 5), 8)), r"subsets must hold indices in \[0, M\)"),
             (lambda: manifold.resampled(fake, -torch.ones(2, 5, dtype=torch.long)), r"indices in \[0, M\) with M=8"),
             (lambda: manifold.resampled(fake, torch.zeros(2, 3, dtype=torch.long)), "subsets.* more than k=3")]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
