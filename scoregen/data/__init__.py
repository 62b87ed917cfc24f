"""Datasets, none downloaded: ``load_dataset(name, **options) -> Dataset``.

Every data set is a pair of tensors (train, held-out test) of shape [n, *shape] in float32;
images are scaled to [-1, 1] (level k of L maps to 2k/(L-1) - 1) and carry their number of
quantisation levels, which the bits/dim convention needs. ``gmm`` also carries its exact
oracle (see ``gmm.py``), as does ``toy`` with ``shape="8gaussians"``.

Loaders: ``gmm`` (Gaussian mixtures), ``toy`` (2-D shapes, ``toy.py``), ``digits`` (scikit-learn's
8x8 digits, 17 levels), ``cartoon`` (procedural cartoon faces, ``cartoon.py``), ``folder`` (a folder
of images) and ``npz`` (an array file), both in ``files.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .gmm import GaussianMixture, gaussian, preset


@dataclass
class Dataset:
    name: str
    train: torch.Tensor
    test: torch.Tensor
    levels: int | None = None               # quantisation levels of the raw data (None: continuous)
    labels_train: torch.Tensor | None = None
    labels_test: torch.Tensor | None = None
    oracle: GaussianMixture | None = None   # exact density, for synthetic mixtures
    info: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample."""
        return tuple(self.train.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.train.dim() == 4


def _gmm(mixture: str = "gmm2d", n_train: int = 20000, n_test: int = 5000, seed: int = 0) -> Dataset:
    """Draws from a named Gaussian mixture (see ``gmm.preset``), with the mixture as oracle."""
    oracle = preset(mixture)
    g = torch.Generator().manual_seed(seed)
    x = oracle.sample(n_train + n_test, generator=g).float()
    return Dataset(f"gmm-{mixture}", x[:n_train], x[n_train:], oracle=oracle, info={"mixture": mixture})


# the loaders need Dataset, defined above
from .cartoon import load_cartoon  # noqa: E402
from .digits import load_digits  # noqa: E402
from .files import load_folder, load_npz  # noqa: E402
from .toy import load_toy  # noqa: E402

_LOADERS = {"gmm": _gmm, "digits": load_digits, "toy": load_toy, "cartoon": load_cartoon,
            "folder": load_folder, "npz": load_npz}


def load_dataset(name: str, **options) -> Dataset:
    """Load a data set by name; ``options`` go to its loader (see each loader's docstring)."""
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(sorted(_LOADERS))}")
    return _LOADERS[name](**options)


__all__ = ["Dataset", "GaussianMixture", "gaussian", "preset", "load_dataset"]
