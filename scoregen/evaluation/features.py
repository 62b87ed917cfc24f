"""Feature networks for image metrics, all offline.

``FeatureNet.for_dataset(dataset)`` trains a small conv classifier on the training split (seeded,
a fixed number of Adam steps; one softmax head per label column, so digits' class and each of the
cartoon faces' 14 attributes), takes its penultimate layer as features, measures its held-out
accuracy, embeds the held-out split as the reference sample, and caches all of it on disk
(written atomically by ``checkpoint.save_checkpoint``), so later calls only load. A data set
without labels gets the same network at its seeded random initialisation, untrained: random
conv features.

``InceptionFeatures(path)`` gives FID features (2048-d pool3) from Inception weights already on disk
(nothing is downloaded) under the standard protocol of StyleGAN2-ADA's metrics, EDM's ``fid.py`` and
clean-fid's ``legacy_tensorflow`` mode: images quantised to uint8 as those codebases save generator outputs,
passed at their own resolution to the TorchScript ``inception-2015-12-05.pt``, which resizes them itself.
``save_reference_stats`` / ``load_reference_stats`` write and read reference statistics in the npz format of
pytorch-fid's ``--save-stats``, clean-fid and EDM (``mu`` [d], ``sigma`` [d, d], float64), which
``metrics.frechet_distance`` takes as ``(mu, sigma)``.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from ..runtime.cache import cache_root
from ..runtime.outputs import write_atomic


def default_cache_dir() -> Path:
    """The feature networks' cache: ``features/`` of ``runtime.cache.cache_root()`` (``~/.cache/scoregen/features``)."""
    return cache_root() / "features"


def _embed(fn, x: torch.Tensor, device, batch_size: int) -> torch.Tensor:
    """``fn`` applied to ``x`` in batches on ``device``, without gradients."""
    with torch.no_grad():
        return torch.cat([fn(x[i:i + batch_size].to(device)) for i in range(0, x.shape[0], batch_size)])


def _label_columns(dataset):
    """Train and held-out labels as [n, k] integer columns (k = 1 for class labels, one per attribute)
    and the number of classes of each column; None without labels."""
    if dataset.labels_train is None or dataset.labels_test is None:
        return None
    train, test = (y.long().reshape(y.shape[0], -1) for y in (dataset.labels_train, dataset.labels_test))
    return train, test, (torch.cat([train, test]).amax(0) + 1).tolist()


def _fingerprint(dataset, config: dict) -> str:
    """Hash of the training recipe and the data (images and labels), naming the cache file."""
    h = hashlib.sha1(json.dumps(config, sort_keys=True).encode())
    for t in (dataset.train, dataset.test, dataset.labels_train, dataset.labels_test):
        if t is not None:
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:12]


class FeatureNet(nn.Module):
    """A small conv classifier whose penultimate layer is the feature space.

    A 3x3 conv, then stride-2 3x3 convs (doubling the width, at most 256) until the side is at
    most 4, a linear layer to ``feature_dim`` with ReLU (the features), and a linear layer giving
    the logits of every label column side by side (``num_classes``: classes per column).
    Features are divided by ``scale``, set so that their mean square over the training split is 1
    (KID's kernel ``(x.y / d + 1)^3`` then sees O(1) inner products, and FD/KID values are
    comparable across data sets).
    """

    def __init__(self, channels: int, size: int, num_classes: list[int] | None, width: int = 32,
                 feature_dim: int = 128):
        super().__init__()
        self.config = dict(channels=channels, size=size, num_classes=num_classes, width=width,
                           feature_dim=feature_dim)
        layers = [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU()]
        while size > 4:
            layers += [nn.Conv2d(width, min(2 * width, 256), 3, stride=2, padding=1), nn.ReLU()]
            width, size = min(2 * width, 256), (size + 1) // 2
        self.body = nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * size * size, feature_dim), nn.ReLU())
        self.head = nn.Linear(feature_dim, sum(num_classes)) if num_classes else None
        self.register_buffer("scale", torch.ones(()))
        self.info: dict = {}
        self.reference: torch.Tensor | None = None  # held-out features, set by for_dataset

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Logits of each label column, [n, num_classes[j]] each."""
        if self.head is None:
            raise ValueError("this FeatureNet has no classifier head (built for a data set without labels)")
        return self.head(self.body(x)).split(self.config["num_classes"], dim=1)

    def predict(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Predicted class of each label column, [n, k]."""
        self.eval()
        return _embed(lambda xb: torch.stack([z.argmax(1) for z in self(xb)], 1), x, self.scale.device, batch_size)

    def features(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Penultimate-layer features [n, feature_dim] of images [n, C, H, W] in [-1, 1], on the net's device."""
        self.eval()
        return _embed(self.body, x, self.scale.device, batch_size) / self.scale

    @classmethod
    def for_dataset(cls, dataset, *, cache_dir=None, device=None, seed: int = 0, steps: int | None = None,
                    batch_size: int = 128, lr: float = 2e-3, width: int = 32, feature_dim: int = 128,
                    retrain: bool = False, progress: bool = False) -> "FeatureNet":
        """The feature network of an image data set, loaded from ``cache_dir`` or trained and cached.

        Trains ``steps`` Adam steps (default: 200 for one label column, 1000 for several, the faces'
        14 attributes) on minibatches of the training split drawn with a ``seed``-ed generator
        (weights initialised under the same seed); with no labels, keeps the seeded random
        initialisation. ``net.info`` holds ``kind`` ('classifier' or 'random'),
        ``accuracy`` (held-out, averaged over label columns; None without labels),
        ``column_accuracy`` (per column), ``train_seconds``, ``path`` and ``loaded`` (True when
        this call read the cache); ``net.reference`` the held-out split's features. The cache
        file is named by a hash of the recipe and the data, so a changed data set or recipe
        trains afresh; an unreadable one is retrained and replaced. ``progress``: a tqdm bar over the training
        steps.
        """
        if not dataset.is_image:
            raise ValueError(f"FeatureNet needs an image data set [n, C, H, W]; {dataset.name!r} has "
                             f"samples of shape {dataset.shape}")
        channels, height, width_px = dataset.shape
        if height != width_px:
            raise ValueError(f"FeatureNet needs square images; {dataset.name!r} has {height}x{width_px}")
        labels = _label_columns(dataset)
        num_classes = None if labels is None else labels[2]
        if steps is None:
            steps = 1000 if num_classes and len(num_classes) > 1 else 200
        net_config = dict(channels=channels, size=height, num_classes=num_classes, width=width,
                          feature_dim=feature_dim)
        recipe = dict(net_config, seed=seed, steps=steps, batch_size=batch_size, lr=lr)
        path = Path(cache_dir or default_cache_dir()) / f"{dataset.name}-{_fingerprint(dataset, recipe)}.pt"
        device = torch.device(device or "cpu")
        if path.exists() and not retrain:
            try:
                return cls._load(path, device)
            except CheckpointError:
                pass  # unreadable (a truncated copy, say): train afresh and replace it
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = cls(**net_config).to(device)
        start = time.perf_counter()
        column_accuracy = None
        if labels is not None:
            net._train(dataset.train, labels[0], steps=steps, batch_size=batch_size, lr=lr, seed=seed,
                       progress=progress)
            column_accuracy = (net.predict(dataset.test) == labels[1].to(device)).double().mean(0).tolist()
        info = dict(kind="random" if labels is None else "classifier", column_accuracy=column_accuracy,
                    accuracy=None if labels is None else sum(column_accuracy) / len(column_accuracy),
                    train_seconds=time.perf_counter() - start, steps=steps if labels is not None else 0)
        net.scale.copy_(_embed(net.body, dataset.train, device, 512).pow(2).mean().sqrt())
        net.reference = net.features(dataset.test)
        save_checkpoint(dict(config=net.config, weights=net.state_dict(), info=info,
                             reference=net.reference), path)
        net.info = dict(info, loaded=False, path=str(path))
        return net

    @classmethod
    def _load(cls, path: Path, device: torch.device) -> "FeatureNet":
        state = read_checkpoint(path)
        net = cls(**state["config"]).to(device)
        net.load_state_dict(state["weights"])
        net.info = dict(state["info"], loaded=True, path=str(path))
        net.reference = state["reference"].to(device)
        return net

    def _train(self, x: torch.Tensor, y: torch.Tensor, *, steps: int, batch_size: int, lr: float, seed: int,
               progress: bool):
        """Cross-entropy summed over label columns, Adam, ``steps`` minibatches drawn with replacement
        by a seeded generator; ``progress``: a tqdm bar over the steps."""
        from tqdm.auto import tqdm

        device = self.scale.device
        x, y = x.to(device), y.to(device)
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.parameters(), lr=lr)
        self.train()
        for _ in tqdm(range(steps), desc="training the feature network", unit="step", disable=not progress,
                      dynamic_ncols=True):
            idx = torch.randint(x.shape[0], (batch_size,), generator=g).to(device)
            loss = sum(F.cross_entropy(z, y[idx, j]) for j, z in enumerate(self(x[idx])))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


class InceptionFeatures:
    """FID features (Inception-v3 pool3, 2048-d) from weights on disk, under the standard protocol; never downloads.

    The protocol of StyleGAN2-ADA's metrics, EDM's ``fid.py`` and clean-fid's ``legacy_tensorflow`` mode:
    images in [-1, 1] are quantised as StyleGAN2-ADA and EDM save generator outputs,
    ``(x * 127.5 + 128).clamp(0, 255).to(torch.uint8)`` (so values outside [-1, 1] are clipped), grey
    images are repeated to three channels (EDM's ``images.repeat([1, 3, 1, 1])``), and the uint8 images
    [N, 3, H, W] go at their own resolution to the TorchScript ``inception-2015-12-05.pt`` with
    ``return_features=True``; the detector resizes them to 299x299 itself, as the TensorFlow FID graph did.
    FID is ``metrics.frechet_distance`` of two such feature sets, or of features and reference statistics
    (``load_reference_stats``).

    ``path`` may instead hold a torchvision ``inception_v3`` state dict (needs torchvision): the same uint8
    images, back in [-1, 1] as floats and resized to 299x299 bilinearly (torchvision's input convention with
    ``transform_input=False``). That is not the standard protocol and its values are not comparable with
    published FIDs: ``info["standard"]`` is False.
    """

    def __init__(self, path, device=None):
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"inception_path={str(path)!r} does not exist; point it at the TorchScript "
                                    "inception-2015-12-05.pt or a torchvision inception_v3 state dict")
        self.device, self.path = torch.device(device or "cpu"), path
        try:
            self.model, self.torchscript = torch.jit.load(str(path), map_location=self.device).eval(), True
        except RuntimeError:
            self.model, self.torchscript = self._torchvision(path), False
        protocol = ("uint8 images at their own resolution to the TorchScript detector (StyleGAN2-ADA, EDM)"
                    if self.torchscript else
                    "torchvision inception_v3, bilinear 299x299 floats: not the standard FID protocol")
        self.info = {"kind": "inception", "torchscript": self.torchscript, "standard": self.torchscript,
                     "protocol": protocol, "path": str(path)}
        self.reference: torch.Tensor | None = None

    def with_reference(self, dataset) -> "InceptionFeatures":
        """Set ``reference`` (features of the held-out split), as ``FeatureNet.for_dataset`` does."""
        self.reference = self.features(dataset.test)
        return self

    def _torchvision(self, path: Path) -> nn.Module:
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except Exception as err:
            raise ValueError(f"inception_path={str(path)!r} is neither a TorchScript model nor a torch state "
                             f"dict ({err.__class__.__name__}: {err})") from None
        if not isinstance(state, dict) or "Mixed_7c.branch_pool.conv.weight" not in state:
            raise ValueError(f"inception_path={str(path)!r} holds no inception_v3 state dict "
                             "(no 'Mixed_7c.branch_pool.conv.weight' key)")
        try:
            from torchvision.models import inception_v3
        except ImportError:
            raise ImportError("an inception_v3 state dict needs torchvision (pip install torchvision); "
                              "the TorchScript inception-2015-12-05.pt does not") from None
        model = inception_v3(weights=None, aux_logits="AuxLogits.fc.weight" in state, init_weights=False,
                             transform_input=False)
        model.load_state_dict(state)
        model.fc = nn.Identity()
        return model.to(self.device).eval()

    @staticmethod
    def quantise(x: torch.Tensor) -> torch.Tensor:
        """Images in [-1, 1] as uint8, as StyleGAN2-ADA and EDM save generator outputs (clipped)."""
        return (x * 127.5 + 128).clamp(0, 255).to(torch.uint8)

    def _pool3(self, x: torch.Tensor) -> torch.Tensor:
        images = self.quantise(x)
        images = images.repeat([1, 3, 1, 1]) if images.shape[1] == 1 else images
        if self.torchscript:
            return self.model(images, return_features=True)
        return self.model(F.interpolate(images.float() / 127.5 - 1, size=(299, 299), mode="bilinear",
                                        align_corners=False))

    def features(self, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
        """Pool3 features [n, 2048] of float images [n, 1 or 3, H, W] in [-1, 1] (see the class docstring)."""
        if x.dim() != 4 or x.shape[1] not in (1, 3) or not x.is_floating_point():
            raise ValueError(f"images must be floats of shape [n, 1 or 3, H, W]; got {x.dtype} {tuple(x.shape)}")
        return _embed(self._pool3, x, self.device, batch_size)


def _stats_error(path, what: str) -> ValueError:
    return ValueError(f"reference statistics {str(path)!r}: {what}")


def save_reference_stats(path, feats) -> Path:
    """Write FID reference statistics of features ``feats`` [n, d] to ``path`` as pytorch-fid's ``--save-stats``
    and clean-fid do: an npz of ``mu = np.mean(feats, 0)`` [d] and ``sigma = np.cov(feats, rowvar=False)``
    [d, d] (unbiased), float64. Written atomically (``runtime.outputs.write_atomic``); returns the path."""
    feats = torch.as_tensor(feats).detach().cpu().double().numpy()
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"features must have shape [n, d] with n >= 2; got {feats.shape}")
    if not np.isfinite(feats).all():
        raise ValueError("features must be finite")
    buffer = io.BytesIO()
    np.savez(buffer, mu=feats.mean(0), sigma=np.cov(feats, rowvar=False).reshape(feats.shape[1], feats.shape[1]))
    return write_atomic(path, buffer.getvalue())


def load_reference_stats(path) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mu [d], sigma [d, d])`` as float64 tensors from an npz of FID statistics (``save_reference_stats``,
    pytorch-fid's ``--save-stats``, clean-fid, EDM's ``fid.py ref``); a file that is not one is a ValueError
    naming it."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"reference statistics {str(path)!r} do not exist")
    if not zipfile.is_zipfile(path):
        raise _stats_error(path, "not an npz file (np.savez's zip of arrays)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in ("mu", "sigma") if key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise _stats_error(path, f"unreadable npz ({err.__class__.__name__}: {err})") from None
    missing = [key for key in ("mu", "sigma") if key not in arrays]
    if missing:
        raise _stats_error(path, f"no {' or '.join(map(repr, missing))} array (FID statistics are 'mu' and 'sigma')")
    mu, sigma = arrays["mu"], arrays["sigma"]
    if mu.dtype.kind not in "iuf" or sigma.dtype.kind not in "iuf":
        raise _stats_error(path, f"'mu' and 'sigma' must be real numbers; got {mu.dtype} and {sigma.dtype}")
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise _stats_error(path, f"'mu' must have shape [d] and 'sigma' [d, d]; got {mu.shape} and {sigma.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise _stats_error(path, "'mu' or 'sigma' has non-finite values")
    return torch.from_numpy(mu.astype(np.float64)), torch.from_numpy(sigma.astype(np.float64))
