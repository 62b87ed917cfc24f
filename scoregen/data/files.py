"""Image data from files (``folder``, ``npz``) and the helpers every image loader shares.

Raw integer level ``k`` of ``L`` levels maps to ``x = 2 k / (L - 1) - 1`` in [-1, 1]: bins of width
``2 / (L - 1)`` centred on the data, which the bits/dim convention (uniform dequantisation) relies on.
"""
from __future__ import annotations

import os
import zipfile

import numpy as np
import torch

from ..core.quantization import check_on_grid, warn_if_quantized
from . import Dataset


def to_unit(k, levels: int) -> torch.Tensor:
    """Integer levels ``k`` in {0, ..., L-1} -> float32 ``x = 2 k / (L - 1) - 1``."""
    grid = (2 * np.arange(levels) / (levels - 1) - 1).astype(np.float32)
    return torch.from_numpy(grid[np.asarray(k)])


def split_dataset(name: str, x: torch.Tensor, *, levels: int | None, labels=None,
                  test_fraction: float = 0.2, seed: int = 0, info: dict | None = None) -> Dataset:
    """A fixed train/held-out split of ``x`` (and ``labels``): a ``seed``-ed permutation, the first
    ``round(test_fraction * n)`` items held out. Labels are integers (class indices); float labels are
    accepted when they hold whole numbers (and cast), refused otherwise."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction}")
    n = x.shape[0]
    n_test = round(test_fraction * n)
    if not 0 < n_test < n:
        raise ValueError(f"test_fraction={test_fraction} of {n} items leaves an empty split")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    test_idx, train_idx = perm[:n_test], perm[n_test:]
    if labels is not None:
        labels = _integer_labels(np.asarray(labels), name)
    return Dataset(name, x[train_idx], x[test_idx], levels=levels,
                   labels_train=None if labels is None else labels[train_idx],
                   labels_test=None if labels is None else labels[test_idx],
                   info={"seed": seed, "test_fraction": test_fraction, **(info or {})})


def _integer_labels(y: np.ndarray, name: str) -> torch.Tensor:
    """Labels as int64: integers and booleans as they are, floats only when whole numbers."""
    if np.issubdtype(y.dtype, np.floating):
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = tuple(int(j) for j in np.argwhere(bad)[0])
            raise ValueError(f"{name}: labels must be integers (class indices); got float labels such as "
                             f"{float(y[i]):g} (at index {i}); {int(bad.sum())} of {y.size} are not whole numbers")
    elif not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise ValueError(f"{name}: labels must be integers (class indices); got dtype {y.dtype}")
    return torch.as_tensor(y.astype(np.int64))


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def _read_image(file, size: int, channels: int | None):
    """One image as uint8 [C, size, size]: shorter side resized to ``size`` (PIL bicubic, antialiased),
    centre-cropped; and its own channel count (1 for grey modes, else 3)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as im:
            own = 1 if im.mode in _GREY_MODES else 3
            im = im.convert("L" if (channels or own) == 1 else "RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"unreadable image {file}: {err}") from err
    w, h = im.size
    scale = size / min(w, h)
    w, h = max(size, round(w * scale)), max(size, round(h * scale))
    if (w, h) != im.size:
        im = im.resize((w, h), Image.BICUBIC)
    left, top = (w - size) // 2, (h - size) // 2
    k = np.asarray(im.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return (k[None] if k.ndim == 2 else k.transpose(2, 0, 1)), own


def load_folder(path: str | os.PathLike, size: int = 64, channels: int | None = None, n: int | None = None,
                test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Every image under ``path`` (recursive, sorted by path), resized on the shorter side and centre-
    cropped to ``size`` x ``size``, as [n, C, size, size] in [-1, 1], 8-bit (``levels=256``).

    Args:
        path: a folder (the real Cartoon Set, say); files ending in ``IMAGE_EXTENSIONS``.
        size: side of the square images.
        channels: 1 (grey) or 3 (RGB) to convert every image; None infers it, and then images with
            mixed channel counts are an error.
        n: use only the first ``n`` images (sorted); None: all.
        test_fraction, seed: the fixed held-out split.
    """
    from pathlib import Path

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"folder: path {str(root)!r} is not an existing folder")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3; got {channels!r}")
    for arg, value in (("size", size), ("n", 1 if n is None else n)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive integer; got {value!r}")
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file())
    if not files:
        raise ValueError(f"no images found under {str(root)!r} (extensions: {', '.join(IMAGE_EXTENSIONS)})")
    files = files[:n]
    images, own = zip(*(_read_image(f, size, channels) for f in files))
    if channels is None and len(set(own)) > 1:
        grey, colour = (next(f for f, c in zip(files, own) if c == want) for want in (1, 3))
        raise ValueError(f"images under {str(root)!r} mix grey ({grey.name}, ...) and colour "
                         f"({colour.name}, ...); pass channels=1 or channels=3")
    return split_dataset(f"folder-{root.name}", to_unit(np.stack(images), 256), levels=256,
                         test_fraction=test_fraction, seed=seed,
                         info={"path": str(root), "files": [str(f.relative_to(root)) for f in files]})


def _read_npz(path) -> dict[str, np.ndarray]:
    """Every array of an npz archive (no pickled objects), or a ValueError saying what the file is instead."""
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise ValueError(f"npz: {path} is a .npy array, not an npz archive; save it with "
                         "np.savez(path, x=array) (labels=... optional)")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"npz: {path} is not an npz archive (a zip of arrays written by np.savez); "
                         f"it starts with {magic!r}")
    try:
        with np.load(path, allow_pickle=False) as f:
            return {name: f[name] for name in f.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise ValueError(f"npz: {path} holds an array that can't be read without pickle, or is damaged: "
                         f"{err}") from err


def load_npz(path: str | os.PathLike, key: str | None = None, labels: str | None = None,
             levels: int | None = None, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """An array from a ``.npz`` file: images, or any float data.

    Integer arrays are images of ``levels`` levels (default 256) in 0..levels-1, laid out [n, C, H, W]
    or [n, H, W, C] (C = 1 or 3; channels-first when ambiguous) or [n, H, W] (grey), mapped to
    ``x = 2 k / (levels - 1) - 1``. Float arrays are taken as they are ([n, ...]): with ``levels`` given
    they must lie on its grid; with None they are continuous, and a ``QuantizedDataWarning`` says when
    they look quantised (pass ``levels``). Labels: integers, or floats that are whole numbers.

    Args:
        path: the ``.npz`` file.
        key: the data array; None: the first array that isn't the labels.
        labels: the labels array; None: ``"labels"`` if the file has one.
        levels: quantisation levels of the data (see above).
        test_fraction, seed: the fixed held-out split.
    """
    from pathlib import Path

    if not Path(path).is_file():
        raise FileNotFoundError(f"npz: path {str(path)!r} is not an existing file")
    if levels is not None and (not isinstance(levels, int) or levels < 2):
        raise ValueError(f"levels must be None or an integer >= 2; got {levels!r}")
    arrays = _read_npz(path)
    if labels is not None and labels not in arrays:
        raise ValueError(f"labels {labels!r} not in {path}; arrays: {', '.join(arrays)}")
    labels = labels or ("labels" if "labels" in arrays else None)
    data_keys = [name for name in arrays if name != labels]
    if key is None:
        if not data_keys:
            raise ValueError(f"{path} holds no data array besides the labels")
        key = data_keys[0]
    if key not in data_keys:
        raise ValueError(f"key {key!r} not in {path}; arrays: {', '.join(data_keys)}")
    x = arrays[key]
    y = None if labels is None else arrays[labels]
    for name, a in ((key, x), (labels, y)):
        if a is not None and a.ndim == 0:
            raise ValueError(f"npz: array {name!r} in {path} must have a batch dimension [n, ...]; got a 0-d "
                             f"array (one value, {a.item()!r})")
    if len(x) == 0:
        raise ValueError(f"npz: {path} holds no images or other items: its array {key!r} has shape {x.shape}")
    if y is not None and len(y) != len(x):
        raise ValueError(f"labels {labels!r} has {len(y)} entries for {len(x)} items of {key!r}")
    if np.issubdtype(x.dtype, np.floating):
        x = torch.as_tensor(x, dtype=torch.float32)
        if levels is not None:
            check_on_grid(x, levels)
        else:
            warn_if_quantized(x, f"float array {key!r} of {path} is taken as continuous (levels=None); pass "
                                 "levels={levels} so that bits/dim use its quantisation", stacklevel=4)
    elif np.issubdtype(x.dtype, np.integer):
        levels = levels or 256
        if x.min() < 0 or x.max() >= levels:
            raise ValueError(f"integer array {key!r} must lie in 0..{levels - 1} (levels={levels}); "
                             f"got {x.min()}..{x.max()}")
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim != 4 or (x.shape[1] not in (1, 3) and x.shape[3] not in (1, 3)):
            raise ValueError(f"integer array {key!r} must be images [n, C, H, W], [n, H, W, C] "
                             f"(C = 1 or 3) or [n, H, W]; got shape {x.shape}")
        elif x.shape[1] not in (1, 3):
            x = x.transpose(0, 3, 1, 2)
        x = to_unit(x, levels)
    else:
        raise ValueError(f"array {key!r} must be integer or float; got dtype {x.dtype}")
    return split_dataset(f"npz-{Path(path).stem}", x, levels=levels, labels=y,
                         test_fraction=test_fraction, seed=seed, info={"path": str(path), "key": key})
