"""How a row's samples are measured against the held-out split (``scoregen.evaluation.metrics``), and in what
feature space images are: the package's feature network of the data set, or Inception's on disk."""
from __future__ import annotations

import sys
from dataclasses import replace

import torch

from ..features import FeatureNet
from ..metrics import (attribute_tv, frechet_distance, half_sampling_std, image_metrics, label_frequencies,
                       sample_metrics)


def extractor_for(data, *, inception, cache_dir, device, progress: bool):
    """The feature network images are measured in: ``inception`` (``features.InceptionFeatures``) given the
    data's held-out split as its reference, else the data set's ``FeatureNet`` (trained once into
    ``cache_dir/features``, with a bar of its training when ``progress``); its note goes to stderr."""
    extractor = inception.with_reference(data) if inception else \
        FeatureNet.for_dataset(data, cache_dir=cache_dir / "features", device=device, progress=progress)
    print(features_note(extractor.info, data.name), file=sys.stderr)
    return extractor


def features_note(info: dict, dataset: str) -> str:
    """What space fd and kid were measured in: Inception's (FID, KID) or the package's feature network's."""
    if info["kind"] == "inception":
        return f"fd and kid are measured in Inception's pool3 features ({info['path']}): FID and KID"
    accuracy = "" if info.get("accuracy") is None else f", {100 * info['accuracy']:.1f}% held-out accuracy"
    return (f"fd and kid are measured in the features of a network trained on {dataset} ({info['kind']}{accuracy}), "
            "not Inception's: not FID; give inception_path (--inception-path) for standard FID")


def evaluator(data, extractor, n: int, seed: int, halves: int = 8):
    """``evaluate(x) -> {metric: value, metric_std: spread}`` for samples x (see the package docstring).
    Low-dimensional data is compared with n held-out points (all of them if fewer). With a classifier
    (``FeatureNet`` trained on labels), also ``attr_tv`` and ``attributes``, the predicted label frequencies."""
    data = data if data.is_image else replace(data, test=data.test[:n])
    classes = getattr(extractor, "config", {}).get("num_classes")
    reference = extractor.predict(data.test) if classes else None

    def attributes(x):
        labels = extractor.predict(x)
        tv = lambda y: {"attr_tv": attribute_tv(y, reference, classes)}  # noqa: E731
        freqs = dict(zip(_label_names(data, len(classes)), label_frequencies(labels, classes)))
        return {**tv(labels), **half_sampling_std(tv, labels, halves=halves,
                                                  generator=torch.Generator().manual_seed(seed + 3)),
                "attributes": freqs}

    def full(rep):
        g = torch.Generator(rep.device).manual_seed(seed)
        if data.is_image:
            return image_metrics(rep, extractor.reference, generator=g)
        return sample_metrics(rep, data, generator=g)

    def cheap(rep):  # what the halves measure: everything but KID (which has its own spread)
        if data.is_image:
            return {"fd": frechet_distance(rep, extractor.reference)}
        out = full(rep)
        out.pop("logp_data", None)
        return out

    def evaluate(x):
        rep = extractor.features(x) if data.is_image else x
        return {**full(rep), **half_sampling_std(cheap, rep, halves=halves,
                                                 generator=torch.Generator().manual_seed(seed + 1)),
                **(attributes(x) if classes else {})}

    return evaluate


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


__all__ = ["extractor_for", "features_note", "evaluator", "clip"]
