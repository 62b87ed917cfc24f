"""How a row's samples are measured against the held-out split (``scoregen.evaluation.metrics``), and in what
feature space images are: the package's feature network of the data set, or Inception's on disk."""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace

import torch

from ..features import FeatureNet
from ..manifold import K, Manifold
from ..metrics import (FrechetReference, attribute_tv, data_logp, kid, label_frequencies, mmd, ode_err, oracle_metrics,
                       sliced_wasserstein)
from ..spread import HALVES, extrapolated, half_samples, over_halves, spread


def extractor_for(data, *, inception, cache_dir, device, progress: bool):
    """The feature network images are measured in: ``inception`` (``features.InceptionFeatures``) given the
    data's held-out split as its reference, else the data set's ``FeatureNet`` (trained once into
    ``cache_dir/features``, with a bar of its training when ``progress``); its note goes to stderr."""
    extractor = inception.with_reference(data) if inception else \
        FeatureNet.for_dataset(data, cache_dir=cache_dir / "features", device=device, progress=progress)
    print(features_note(extractor.info, data.name), file=sys.stderr)
    return extractor


def features_note(info: dict, dataset: str) -> str:
    """What space the image metrics were measured in: Inception's (FID, KID) or the package's feature network's."""
    if info["kind"] == "inception":
        protocol = "the standard protocol" if info.get("standard") else "not the standard protocol"
        return f"fd and kid are measured in Inception's pool3 features ({info['path']}, {protocol}): FID and KID"
    accuracy = "" if info.get("accuracy") is None else f", {100 * info['accuracy']:.1f}% held-out accuracy"
    return (f"fd and kid are measured in the features of a network trained on {dataset} ({info['kind']}{accuracy}), "
            "not Inception's: not FID; give inception_path (--inception-path) for standard FID")


@dataclass
class Measured:
    """A row's measurement: ``fields``, each metric with its spread ``<metric>_std`` (and ``attributes``, the
    predicted label frequencies), and ``draws``, each metric's values on the run's halves, which pair rows up."""
    fields: dict
    draws: dict


class Evaluator:
    """``evaluate(x) -> Measured`` for samples x of n (see the package docstring), every row on the same halves
    (``spread.half_samples``, seeded ``seed + 1``): differences between rows are paired. Low-dimensional data is
    compared with n held-out points (all of them if fewer); images in ``extractor``'s space, against its
    ``reference`` (``fd`` and ``fd_inf`` against ``ref_stats``, a ``(mean, cov)`` pair, when given). With a
    classifier (``FeatureNet`` trained on labels), also ``attr_tv`` and ``attributes``. The manifold metrics need
    halves of more than ``manifold.K`` samples (n >= 12)."""

    def __init__(self, data, extractor, n: int, seed: int, halves: int = HALVES, ref_stats=None):
        self.data = data if data.is_image else replace(data, test=data.test[:n])
        self.extractor, self.seed = extractor, seed
        self.halves = half_samples(n, halves, generator=torch.Generator().manual_seed(seed + 1))
        self.real = extractor.reference if data.is_image else self.data.test
        self.manifold = Manifold(self.real) if min(n // 2, len(self.real)) > K else None  # k-NN needs k + 1
        self.fd = FrechetReference(self.real if ref_stats is None else ref_stats) if data.is_image else None
        if self.fd is not None and self.fd.mean.shape[0] != self.real.shape[1]:
            raise ValueError(f"ref_stats have dimension {self.fd.mean.shape[0]}; the features measured here have "
                             f"{self.real.shape[1]} ({extractor.info['kind']}): give the statistics of the same "
                             "feature network")
        oracle = self.data.oracle
        self.logp_data = None if oracle is None else data_logp(oracle, like=self.data.test)
        self.classes = getattr(extractor, "config", {}).get("num_classes")
        self.labels = extractor.predict(self.data.test) if self.classes else None

    def _per_sample(self, rep: torch.Tensor) -> dict:
        """The metrics recomputed on each half by calling them on it (the kernel ones take all halves at once)."""
        out = {"swd": sliced_wasserstein(rep, self.real, generator=torch.Generator(rep.device).manual_seed(self.seed))}
        if self.data.oracle is not None:
            out.update(oracle_metrics(rep, self.data.oracle, logp_data=self.logp_data))
        return out

    def __call__(self, x: torch.Tensor) -> Measured:
        rep = self.extractor.features(x) if self.data.is_image else x
        if self.data.is_image:
            fields, draws = {}, {}
            fields["kid"], draws["kid"] = kid(rep, self.real, subsets=self.halves)
        else:
            fields, draws = self._per_sample(rep), over_halves(self._per_sample, rep, self.halves)
            draws.pop("logp_data", None)  # the data's own, the same for every half
            fields["mmd"], draws["mmd"] = mmd(rep, self.real, subsets=self.halves)
        if self.fd is not None:
            fd, fd_inf, draws["fd"] = extrapolated(self.fd.distance, rep, self.halves)
            draws["fd_inf"] = draws["fd"]  # its error is fd's (spread.extrapolated)
            fields = {"fd": fd, "fd_inf": fd_inf, **fields}
        if self.manifold is not None:
            fields.update(self.manifold.metrics(rep))
            draws.update(self.manifold.resampled(rep, self.halves))
        if self.classes:
            predicted = self.extractor.predict(x)
            tv = lambda y: {"attr_tv": attribute_tv(y, self.labels, self.classes)}  # noqa: E731
            fields.update(tv(predicted))
            draws.update(over_halves(tv, predicted, self.halves))
            fields["attributes"] = dict(zip(_label_names(self.data, len(self.classes)),
                                            label_frequencies(predicted, self.classes)))
        return Measured({**fields, **{f"{k}_std": spread(v) for k, v in draws.items()}}, draws)

    def ode_err(self, x: torch.Tensor, reference: torch.Tensor) -> Measured:
        """``metrics.ode_err`` of x against the PF-ODE's map of the same draws, with its spread over the halves."""
        pairs = torch.stack([x.double(), reference.double().to(x.device)], 1)  # [n, 2, ...]: a half keeps each pair
        err = lambda z: {"ode_err": ode_err(z[:, 0], z[:, 1])}  # noqa: E731
        draws = over_halves(err, pairs, self.halves)
        return Measured({**err(pairs), "ode_err_std": spread(draws["ode_err"])}, draws)


def _label_names(data, k: int) -> list[str]:
    """The names of a data set's ``k`` label columns: its attributes' (``data.info["attributes"]``), else
    "class" for one column, else "label_j"."""
    names = list(data.info.get("attributes", {}))
    return names if len(names) == k else ["class"] if k == 1 else [f"label_{j}" for j in range(k)]


def clip(x: torch.Tensor, data) -> tuple[torch.Tensor, dict]:
    """Images are measured as the pictures they are: clamped to the data range [-1, 1]. ``clipped`` is the
    share of pixel values beyond it by more than half a quantisation bin (1 / (L - 1))."""
    if not data.is_image:
        return x, {}
    margin = 1 / (data.levels - 1) if data.levels else 0.0
    clipped = (x.abs() > 1 + margin).double().mean().item()
    return x.clamp(-1, 1), {"clipped": clipped}


__all__ = ["extractor_for", "features_note", "Measured", "Evaluator", "clip"]
