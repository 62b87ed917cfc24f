"""Two-dimensional toy shapes, mean zero and of roughly unit variance per coordinate.

Each shape is drawn from a seeded ``torch.Generator`` (same seed, same data) in float64 and stored
as float32 [n, 2]. Per-coordinate variances (x, y; noise included): moons 1.51, 0.49; checkerboard 1, 1;
swiss_roll 0.89, 0.99; 8gaussians 1.01, 1.01; rings 0.94, 0.94.
"""
from __future__ import annotations

import math

import torch

from ..core.checks import check_sizes
from . import Dataset
from .gmm import GaussianMixture

_DT = torch.float64


def _uniform(n, g):
    return torch.rand(n, generator=g, dtype=_DT)


def _noise(n, std, g):
    return std * torch.randn(n, 2, generator=g, dtype=_DT)


def moons(n, g):
    """Two interleaving half circles (as scikit-learn's ``make_moons``), noise 0.05, centred on
    their mean (1/2, 1/4) and scaled by sqrt(2). Labels: the moon."""
    label = torch.randint(0, 2, (n,), generator=g)
    theta = math.pi * _uniform(n, g)
    upper = torch.stack([theta.cos(), theta.sin()], 1)
    lower = torch.stack([1 - theta.cos(), 0.5 - theta.sin()], 1)
    p = torch.where(label[:, None] == 0, upper, lower) + _noise(n, 0.05, g)
    return math.sqrt(2) * (p - torch.tensor([0.5, 0.25], dtype=_DT)), label


CHECKER_HALF_WIDTH = math.sqrt(3)   # uniform on [-a, a] has variance a^2 / 3 = 1


def checkerboard(n, g):
    """Uniform on the 8 squares (i, j) with i + j even of a 4x4 board on [-sqrt 3, sqrt 3]^2
    (square i spans column i from the left, row j from the bottom). Labels: the square, 0..7."""
    label = torch.randint(0, 8, (n,), generator=g)
    i = label // 2
    j = 2 * (label % 2) + i % 2
    cell = torch.stack([i, j], 1).to(_DT) + torch.rand(n, 2, generator=g, dtype=_DT)
    return CHECKER_HALF_WIDTH * (cell / 2 - 1), label


SWISS_T = (1.5 * math.pi, 4.5 * math.pi)   # the roll's angle range (scikit-learn's)
SWISS_SCALE = 7.0


def swiss_roll(n, g):
    """The 2-D swiss roll ``t (cos t, sin t)``, t uniform on [1.5 pi, 4.5 pi], noise 0.25, minus its
    exact mean ``[t sin t + cos t, sin t - t cos t] / (3 pi)`` and divided by 7."""
    a, b = SWISS_T
    t = a + (b - a) * _uniform(n, g)
    p = t[:, None] * torch.stack([t.cos(), t.sin()], 1) + _noise(n, 0.25, g)

    def primitive(s):
        return torch.tensor([s * math.sin(s) + math.cos(s), math.sin(s) - s * math.cos(s)], dtype=_DT)

    mean = (primitive(b) - primitive(a)) / (b - a)
    return (p - mean) / SWISS_SCALE, None


def eight_gaussians_mixture() -> GaussianMixture:
    """Eight equal Gaussians, std 0.1, centred at sqrt(2) (cos k pi/4, sin k pi/4)."""
    angle = torch.arange(8, dtype=_DT) * (math.pi / 4)
    return GaussianMixture(torch.ones(8), math.sqrt(2) * torch.stack([angle.cos(), angle.sin()], 1),
                           torch.full((8,), 0.1 ** 2))


def eight_gaussians(n, g):
    """Draws from ``eight_gaussians_mixture``. Labels: the component."""
    return eight_gaussians_mixture().sample(n, generator=g, return_labels=True)


RING_RADII = (0.5, 1.0, 1.5, 2.0)


def rings(n, g):
    """Four concentric circles of radii 0.5, 1, 1.5, 2, equally weighted, noise 0.05. Labels: the ring."""
    label = torch.randint(0, len(RING_RADII), (n,), generator=g)
    theta = 2 * math.pi * _uniform(n, g)
    r = torch.tensor(RING_RADII, dtype=_DT)[label]
    return r[:, None] * torch.stack([theta.cos(), theta.sin()], 1) + _noise(n, 0.05, g), label


SHAPES = {"moons": moons, "checkerboard": checkerboard, "swiss_roll": swiss_roll,
          "8gaussians": eight_gaussians, "rings": rings}


def load_toy(shape: str = "moons", n_train: int = 20000, n_test: int = 5000, seed: int = 0) -> Dataset:
    """A 2-D toy shape as float32 [n, 2] (``levels=None``), labels where the shape has parts.

    Args:
        shape: one of 'moons', 'checkerboard', 'swiss_roll', '8gaussians' (with its exact mixture
            as ``oracle``), 'rings'.
        n_train, n_test: sizes of the two splits (both drawn from one generator seeded with ``seed``).
        seed: same seed, same data.
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown toy shape {shape!r}; valid: {', '.join(SHAPES)}")
    check_sizes(n_train=n_train, n_test=n_test)
    g = torch.Generator().manual_seed(seed)
    x, labels = SHAPES[shape](n_train + n_test, g)
    x = x.float()
    oracle = eight_gaussians_mixture() if shape == "8gaussians" else None
    return Dataset(f"toy-{shape}", x[:n_train], x[n_train:], oracle=oracle,
                   labels_train=None if labels is None else labels[:n_train],
                   labels_test=None if labels is None else labels[n_train:],
                   info={"shape": shape, "seed": seed})
