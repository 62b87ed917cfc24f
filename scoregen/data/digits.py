"""scikit-learn's 8x8 handwritten digits (1797 images, pixel values 0..16: 17 levels), bundled, no download."""
from __future__ import annotations

from . import Dataset
from .files import split_dataset, to_unit

LEVELS = 17


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's ``load_digits`` as [n, 1, 8, 8] float32 in [-1, 1] (``x = k / 8 - 1``), ``levels=17``,
    labels 0..9.

    Args:
        test_fraction: share held out (a fixed ``seed``-ed split).
        seed: seed of the split.
    """
    from sklearn import datasets

    raw = datasets.load_digits()
    x = to_unit(raw.images.astype("int64"), LEVELS)[:, None]
    return split_dataset("digits", x, levels=LEVELS, labels=raw.target,
                         test_fraction=test_fraction, seed=seed, info={"classes": 10})
