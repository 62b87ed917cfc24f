"""Datasets, none downloaded: ``load_dataset(name, **options) -> Dataset``.

Every data set is a pair of tensors (train, held-out test) of shape [n, *shape] in float32, checked
finite when the ``Dataset`` is made; images are scaled to [-1, 1] (level k of L maps to 2k/(L-1) - 1)
and carry their number of quantisation levels, which the bits/dim convention needs. ``gmm`` also
carries its exact oracle (see ``gmm.py``), as does ``toy`` with ``shape="8gaussians"``. A loader's
options are checked against its signature (names and annotated types) by ``load_dataset``.

Loaders: ``gmm`` (Gaussian mixtures), ``toy`` (2-D shapes, ``toy.py``), ``digits`` (scikit-learn's
8x8 digits, 17 levels), ``cartoon`` (procedural cartoon faces, ``cartoon.py``), ``folder`` (a folder
of images) and ``npz`` (an array file), both in ``files.py``.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.checks import check_sizes, check_types
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

    def __post_init__(self):
        """Every split finite: a NaN or inf would surface only later, as a non-finite loss or likelihood."""
        for split in ("train", "test"):
            bad = ~torch.isfinite(getattr(self, split))
            if bool(bad.any()):
                first = tuple(bad.nonzero()[0].tolist())
                raise ValueError(f"data set {self.name!r}: the {split} split has {int(bad.sum())} NaN/inf value(s) "
                                 f"of {bad.numel()}, the first at index {first} of the split; clean the data "
                                 "(or drop those items) before loading")

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one sample."""
        return tuple(self.train.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.train.dim() == 4


def _gmm(mixture: str = "gmm2d", n_train: int = 20000, n_test: int = 5000, seed: int = 0) -> Dataset:
    """Draws from a named Gaussian mixture (see ``gmm.preset``), with the mixture as oracle."""
    check_sizes(n_train=n_train, n_test=n_test)
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
# what each loader's items are: "vectors" [D] or "images" [C, H, W] (npz: either, by its array)
DATA_KINDS = {"gmm": "vectors", "toy": "vectors", "digits": "images", "cartoon": "images", "folder": "images"}


def check_options(name: str, options: dict) -> None:
    """Raise unless ``options`` are parameters of data set ``name``'s loader, of its annotated types."""
    loader = _LOADERS[name]
    params = inspect.signature(loader).parameters
    unknown = sorted(set(options) - set(params))
    if unknown:
        raise ValueError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} for "
                         f"data set {name!r}; valid: {', '.join(params)}")
    check_types(loader, options, f"data set {name!r}: option")


def dataset_source(dataset: str, options: dict, *, size: int | None = None) -> tuple[str, dict]:
    """A data set given by name, or by an image folder or a ``.npz`` file, as ``(loader name, options)``: a folder
    is the ``folder`` loader (its images resized to ``size`` unless ``options`` say otherwise), an npz the ``npz``
    loader."""
    if dataset in _LOADERS:
        return dataset, dict(options)
    path = Path(dataset)
    loader = "folder" if path.is_dir() else "npz" if path.is_file() and path.suffix == ".npz" else None
    if loader is None:
        raise ValueError(f"unknown dataset {dataset!r}; valid: {', '.join(sorted(_LOADERS))}, or an image folder or "
                         ".npz file")
    if "path" in options:
        raise ValueError(f"dataset {dataset} is a path: give no path option besides")
    extra = {"size": size} if loader == "folder" and size is not None and "size" not in options else {}
    return loader, {"path": str(path), **extra, **options}


def with_data_path(options: dict | None, path: str | None) -> dict:
    """A loader's ``options`` with ``path`` (the command line's ``--data-path``) added; the path given once."""
    options = dict(options or {})
    if path is not None:
        if "path" in options:
            raise ValueError("give the data path once: --data-path or --dataset-option path=...")
        options["path"] = path
    return options


def load_dataset(name: str, **options) -> Dataset:
    """Load a data set by name; ``options`` go to its loader (see each loader's docstring), checked
    against its signature: unknown names and values of the wrong type are errors that name the valid ones."""
    if name not in _LOADERS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(sorted(_LOADERS))}")
    check_options(name, options)
    return _LOADERS[name](**options)


__all__ = ["DATA_KINDS", "Dataset", "GaussianMixture", "gaussian", "preset", "load_dataset", "dataset_source",
           "with_data_path"]
