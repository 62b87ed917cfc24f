"""Data sets: shapes, quantisation grids, splits, toy-shape statistics, cartoon attributes, files."""
import math
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits

import scoregen as sg
from scoregen.data.cartoon import ATTRIBUTES, PALETTES, pixel_centres, render_faces
from scoregen.data.files import split_dataset, to_unit
from scoregen.data.toy import CHECKER_HALF_WIDTH, RING_RADII


def _on_grid(x, levels):
    k = (x.double() + 1) * (levels - 1) / 2
    return bool((k - k.round()).abs().max() < 1e-4) and bool(x.min() >= -1) and bool(x.max() <= 1)


def _rows(a):
    """Rows of a 2-D integer array as a sorted list of tuples (a multiset)."""
    return sorted(map(tuple, np.asarray(a).reshape(len(a), -1).tolist()))


# --- shared helpers ---------------------------------------------------------------------------
def test_to_unit_maps_levels_to_bin_centres():
    assert to_unit([0, 8, 16], 17).tolist() == [-1.0, 0.0, 1.0]
    x = to_unit(np.arange(256, dtype=np.uint8), 256)
    assert x.dtype == torch.float32
    assert torch.allclose(x.double(), torch.arange(256, dtype=torch.float64) * 2 / 255 - 1, atol=1e-7)


def test_split_is_seeded_disjoint_and_complete():
    x = torch.arange(20.)[:, None]
    d = split_dataset("t", x, levels=None, labels=torch.arange(20), test_fraction=0.25, seed=3)
    train, test = d.train[:, 0].long(), d.test[:, 0].long()
    assert len(test) == 5 and sorted(train.tolist() + test.tolist()) == list(range(20))
    assert torch.equal(d.labels_train, train) and torch.equal(d.labels_test, test)
    again = split_dataset("t", x, levels=None, test_fraction=0.25, seed=3)
    other = split_dataset("t", x, levels=None, test_fraction=0.25, seed=4)
    assert torch.equal(again.test, d.test) and not torch.equal(other.test, d.test)
    for bad in (0, 1, 1.5, 0.01):
        with pytest.raises(ValueError, match="test_fraction"):
            split_dataset("t", x, levels=None, test_fraction=bad)


# --- digits -----------------------------------------------------------------------------------
def test_digits_are_the_sklearn_images_on_the_17_level_grid():
    d = sg.load_dataset("digits")
    raw = load_digits()
    assert d.shape == (1, 8, 8) and d.train.dtype == torch.float32 and d.levels == 17 and d.is_image
    assert len(d.train) + len(d.test) == 1797 and len(d.test) == round(0.2 * 1797)
    x = torch.cat([d.train, d.test])
    assert _on_grid(x, 17) and x.min() == -1 and x.max() == 1
    k = ((x + 1) * 8).round().long()
    assert _rows(k) == _rows(raw.images.astype(int))
    counts = torch.bincount(d.labels_train, minlength=10) + torch.bincount(d.labels_test, minlength=10)
    assert counts.tolist() == np.bincount(raw.target).tolist()
    labels = torch.cat([d.labels_train, d.labels_test]).tolist()
    assert _rows(np.c_[k.reshape(len(k), -1), labels]) == _rows(np.c_[raw.images.reshape(1797, -1), raw.target])


def test_digits_split_depends_on_seed_and_fraction_only():
    a, b = sg.load_dataset("digits", seed=1), sg.load_dataset("digits", seed=1)
    c = sg.load_dataset("digits", seed=2, test_fraction=0.5)
    assert torch.equal(a.train, b.train) and torch.equal(a.labels_test, b.labels_test)
    assert len(c.test) == round(0.5 * 1797) and not torch.equal(a.test[:10], c.test[:10])


# --- toy shapes -------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", ["moons", "checkerboard", "swiss_roll", "8gaussians", "rings"])
def test_toy_shapes_are_centred_unit_scale_and_seeded(shape):
    d = sg.load_dataset("toy", shape=shape, n_train=20000, n_test=500, seed=0)
    assert d.train.shape == (20000, 2) and d.test.shape == (500, 2) and d.levels is None
    x = d.train.double()
    assert x.mean(0).abs().max() < 0.04                       # every shape has exact mean zero
    assert 0.4 < x.var(0).min() and x.var(0).max() < 1.6      # comparable to unit variance
    a, b, other = (sg.load_dataset("toy", shape=shape, n_train=100, n_test=10, seed=s) for s in (0, 0, 1))
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test) and not torch.allclose(a.train, other.train)


def test_checkerboard_fills_the_eight_even_squares_uniformly():
    d = sg.load_dataset("toy", shape="checkerboard", n_train=16000, n_test=1)
    a = CHECKER_HALF_WIDTH
    assert torch.allclose(d.train.double().var(0), torch.ones(2, dtype=torch.float64), atol=0.04)  # a^2 / 3 = 1
    ij = ((d.train.double() + a) / (a / 2)).floor().long()
    assert ij.min() >= 0 and ij.max() <= 3 and bool(((ij[:, 0] + ij[:, 1]) % 2 == 0).all())
    occupancy = torch.bincount(ij[:, 0] * 4 + ij[:, 1], minlength=16).double() / 16000
    even = torch.tensor([(i + j) % 2 == 0 for i in range(4) for j in range(4)])
    assert torch.allclose(occupancy[even], torch.full((8,), 1 / 8, dtype=torch.float64), atol=0.012)


def test_8gaussians_has_its_mixture_as_oracle_and_the_right_centres():
    d = sg.load_dataset("toy", shape="8gaussians", n_train=16000, n_test=1)
    angle = torch.arange(8) * math.pi / 4
    centres = math.sqrt(2) * torch.stack([angle.cos(), angle.sin()], 1)
    assert torch.allclose(d.oracle.means.float(), centres, atol=1e-6)
    for k in range(8):
        xk = d.train[d.labels_train == k]
        assert torch.allclose(xk.mean(0), centres[k], atol=0.01) and abs(xk.std(0).mean() - 0.1) < 0.005


def test_rings_and_moons_lie_on_their_curves():
    r = sg.load_dataset("toy", shape="rings", n_train=8000, n_test=1)
    radius = r.train.norm(dim=1)
    for k, rk in enumerate(RING_RADII):
        rad = radius[r.labels_train == k]
        assert abs(len(rad) / 8000 - 0.25) < 0.02 and abs(rad.mean() - rk) < 0.005 and (rad - rk).abs().max() < 0.3
    m = sg.load_dataset("toy", shape="moons", n_train=8000, n_test=1)
    p = m.train / math.sqrt(2) + torch.tensor([0.5, 0.25])      # back to the unit half circles
    centre = torch.tensor([[0.0, 0.0], [1.0, 0.5]])[m.labels_train]
    assert ((p - centre).norm(dim=1) - 1).abs().mean() < 0.05


def test_toy_rejects_bad_options():
    with pytest.raises(ValueError, match="unknown toy shape 'spiral'; valid: moons, checkerboard"):
        sg.load_dataset("toy", shape="spiral")
    with pytest.raises(ValueError, match="n_train must be a positive integer"):
        sg.load_dataset("toy", n_train=0)


# --- cartoon faces ----------------------------------------------------------------------------
def _faces(size=32, **changes):
    """Faces that differ from the all-zero attributes only by ``changes`` (name -> list of values)."""
    n = len(next(iter(changes.values()))) if changes else 1
    a = {name: np.zeros(n, int) for name in ATTRIBUTES}
    a.update({name: np.asarray(v) for name, v in changes.items()})
    return render_faces(a, size).astype(int)


def _at(size, x, y):
    xs, ys = pixel_centres(size)
    return int(np.abs(ys - y).argmin()), int(np.abs(xs - x).argmin())


def test_cartoon_dataset_shapes_levels_labels_and_seed():
    d = sg.load_dataset("cartoon", n=40, size=32, seed=0)
    assert d.train.shape == (32, 3, 32, 32) and d.test.shape == (8, 3, 32, 32) and d.levels == 256
    assert _on_grid(torch.cat([d.train, d.test]), 256)
    assert list(d.info["attributes"]) == list(ATTRIBUTES) and d.labels_train.shape == (32, len(ATTRIBUTES))
    assert bool((d.labels_train < torch.tensor([len(v) for v in ATTRIBUTES.values()])).all())
    same, other = sg.load_dataset("cartoon", n=40, size=32, seed=0), sg.load_dataset("cartoon", n=40, size=32, seed=1)
    assert torch.equal(same.train, d.train) and not torch.equal(other.train, d.train)
    big = sg.load_dataset("cartoon", n=4, size=64, test_fraction=0.25)
    assert big.train.shape == (3, 3, 64, 64)


def test_background_and_skin_show_their_palette_colours_exactly():
    bg = _faces(background=range(8))
    assert bg[:, :, 0, 0].tolist() == np.round(255 * PALETTES["background"]).astype(int).tolist()
    skin = _faces(skin=range(6))
    i, j = _at(32, 0.3, 0.14)                                    # a cheek
    assert skin[:, :, i, j].tolist() == np.round(255 * PALETTES["skin"]).astype(int).tolist()


@pytest.mark.parametrize("size", [32, 64])
def test_glasses_change_only_the_pixels_around_the_eyes(size):
    plain, rnd, sq = _faces(size, glasses=[0, 1, 2])
    xs, ys = pixel_centres(size)
    for glasses in (rnd, sq):
        rows, cols = np.nonzero((glasses != plain).any(0))
        assert len(rows) > 0.02 * size ** 2
        assert ys[rows].min() > -0.25 and ys[rows].max() < 0.2 and np.abs(xs[cols]).max() < 0.6


def test_hair_colour_shows_at_the_top_and_mouth_at_the_bottom():
    size = 32
    xs, ys = pixel_centres(size)
    black, blond = _faces(size, hair_style=[1, 1], hair_color=[0, 2])
    rows, _ = np.nonzero((black != blond).any(0))
    assert ys[rows].min() < -0.4 and ys[rows].max() < 0.0        # the cap (and the brows), never below
    i, j = _at(size, 0.0, -0.45)
    assert blond[:, i, j].tolist() == np.round(255 * PALETTES["hair_color"][2]).astype(int).tolist()
    mouths = _faces(size, mouth=[0, 1, 2])
    region = (np.abs(xs)[None, :] < 0.2) & (ys[:, None] > 0.2) & (ys[:, None] < 0.45)
    skin = np.round(255 * PALETTES["skin"][0]).astype(int)[:, None]
    for mouth in mouths:
        assert (mouth[:, region] != skin).any(0).sum() > 4          # each mouth shows
        assert np.array_equal(mouth[:, ~region], mouths[0][:, ~region])   # and nothing else changes


def test_cartoon_rejects_bad_options():
    with pytest.raises(ValueError, match=r"size must be one of \(32, 64\); got 48"):
        sg.load_dataset("cartoon", n=4, size=48)
    with pytest.raises(ValueError, match="n must be an integer >= 2"):
        sg.load_dataset("cartoon", n=1)
    a = {name: np.zeros(2, int) for name in ATTRIBUTES}
    with pytest.raises(ValueError, match=r"attributes\['glasses'\] must be 2 integers in 0..2"):
        render_faces({**a, "glasses": [0, 3]})
    with pytest.raises(ValueError, match=r"missing \['mouth'\], unknown \['hat'\]"):
        render_faces({**{k: v for k, v in a.items() if k != "mouth"}, "hat": [0, 0]})


# --- folder and npz ---------------------------------------------------------------------------
def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


def _bands(shape, colours, axis):
    """An image of ``shape`` (h, w) made of colour bands along ``axis``: colours = [(width, rgb), ...]."""
    bands = [np.broadcast_to(np.array(c, np.uint8), (w, 3)) for w, c in colours]
    line = np.concatenate(bands)
    return np.broadcast_to(line[None] if axis == 1 else line[:, None], (*shape, 3))


RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def test_folder_resizes_the_shorter_side_and_centre_crops(tmp_path):
    _png(tmp_path / "a.png", _bands((4, 8), [(2, RED), (4, GREEN), (2, BLUE)], axis=1))   # crop only
    _png(tmp_path / "sub" / "b.png", _bands((8, 4), [(2, RED), (4, BLUE), (2, GREEN)], axis=0))
    ramp = np.broadcast_to((50 + 2 * np.arange(32))[None, :, None], (16, 32, 3))            # value 2 col + 50
    _png(tmp_path / "sub" / "ramp.png", ramp)
    (tmp_path / "notes.txt").write_text("not an image")
    d = sg.load_dataset("folder", path=tmp_path, size=4, test_fraction=1 / 3)
    assert d.info["files"] == ["a.png", "sub/b.png", "sub/ramp.png"] and d.levels == 256
    assert d.train.shape == (2, 3, 4, 4) and d.test.shape == (1, 3, 4, 4)
    k = ((torch.cat([d.train, d.test]) + 1) * 127.5).round().long()
    solid = [tuple(img[:, 0, 0].tolist()) for img in k if bool((img == img[:, :1, :1]).all())]
    assert sorted(solid) == sorted([GREEN, BLUE])
    (r,) = [img for img in k if not bool((img == img[:, :1, :1]).all())]
    # 32x16 -> 8x4 (bicubic, exact on a linear ramp), crop columns 2..5: pixel m is centred on input
    # column 4 (m + 2) + 1.5, value 8 m + 69
    assert torch.equal(r, (8 * torch.arange(4) + 69).expand(3, 4, 4))


def test_folder_channels_grey_mixed_and_forced(tmp_path):
    _png(tmp_path / "g.png", np.full((6, 6), 100))
    _png(tmp_path / "h.png", np.full((6, 6), 200))
    d = sg.load_dataset("folder", path=tmp_path, size=6, test_fraction=0.5)
    assert d.shape == (1, 6, 6)
    _png(tmp_path / "rgb.png", np.full((6, 6, 3), 7))
    with pytest.raises(ValueError, match=r"mix grey \(g.png, ...\) and colour \(rgb.png, ...\)"):
        sg.load_dataset("folder", path=tmp_path, size=6)
    d = sg.load_dataset("folder", path=tmp_path, size=6, channels=3, test_fraction=1 / 3, n=3)
    x = torch.cat([d.train, d.test])
    assert d.shape == (3, 6, 6) and sorted(((x[:, :, 0, 0] + 1) * 127.5).round().tolist()) == \
        [[7, 7, 7], [100, 100, 100], [200, 200, 200]]


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not an existing folder"):
        sg.load_dataset("folder", path=tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"no images found .* \(extensions: .png, .jpg"):
        sg.load_dataset("folder", path=tmp_path)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="unreadable image .*bad.png"):
        sg.load_dataset("folder", path=tmp_path)
    with pytest.raises(ValueError, match="channels must be None, 1 or 3; got 2"):
        sg.load_dataset("folder", path=tmp_path, channels=2)
    with pytest.raises(ValueError, match="n must be a positive integer; got 0"):
        sg.load_dataset("folder", path=tmp_path, n=0)


def test_npz_images_channels_last_with_labels(tmp_path):
    i, c = np.arange(10)[:, None, None, None], np.arange(3)
    k = np.broadcast_to(25 * i + c, (10, 4, 5, 3)).astype(np.uint8)          # image i, channel c: 25 i + c
    np.savez(tmp_path / "a.npz", images=k, labels=np.arange(10))
    d = sg.load_dataset("npz", path=tmp_path / "a.npz")
    assert d.shape == (3, 4, 5) and d.levels == 256 and len(d.test) == 2 and _on_grid(d.train, 256)
    expected = 25 * d.labels_train[:, None] + torch.arange(3)
    assert torch.equal(((d.train[:, :, 2, 3] + 1) * 127.5).round().long(), expected)
    np.savez(tmp_path / "b.npz", x=np.arange(5 * 64).reshape(5, 1, 8, 8) % 17)
    assert sg.load_dataset("npz", path=tmp_path / "b.npz", levels=17, test_fraction=0.4).levels == 17


def test_npz_floats_are_taken_as_they_are(tmp_path):
    x = np.random.default_rng(0).normal(size=(10, 2))
    np.savez(tmp_path / "f.npz", data=x, y=np.arange(10))
    d = sg.load_dataset("npz", path=tmp_path / "f.npz", labels="y", test_fraction=0.5)
    assert d.levels is None and d.shape == (2,)
    assert torch.equal(d.train, torch.as_tensor(x, dtype=torch.float32)[d.labels_train])


def test_npz_errors(tmp_path):
    f = tmp_path / "e.npz"
    with pytest.raises(FileNotFoundError, match="is not an existing file"):
        sg.load_dataset("npz", path=f)
    np.savez(f, a=np.zeros((4, 3, 2, 2), np.uint8), big=np.full((4, 8, 8), 300), odd=np.zeros((4, 5, 5, 5), np.uint8),
             labels=np.arange(3))
    with pytest.raises(ValueError, match="key 'b' not in .*; arrays: a, big, odd"):
        sg.load_dataset("npz", path=f, key="b")
    with pytest.raises(ValueError, match="labels 'y' not in"):
        sg.load_dataset("npz", path=f, labels="y")
    with pytest.raises(ValueError, match="labels 'labels' has 3 entries for 4 items"):
        sg.load_dataset("npz", path=f)
    np.savez(f, big=np.full((4, 8, 8), 300), odd=np.zeros((4, 5, 5, 5), np.uint8))
    with pytest.raises(ValueError, match=r"must lie in 0..255 \(levels=256\); got 300..300"):
        sg.load_dataset("npz", path=f)
    with pytest.raises(ValueError, match=r"must be images .*; got shape \(4, 5, 5, 5\)"):
        sg.load_dataset("npz", path=f, key="odd")
    with pytest.raises(ValueError, match="levels must be None or an integer >= 2; got 1"):
        sg.load_dataset("npz", path=f, levels=1)
    for empty in (np.zeros((0, 8, 8), np.uint8), np.zeros((0, 2))):
        np.savez(f, x=empty)
        with pytest.raises(ValueError, match=rf"npz: .*e.npz holds no images or other items: its array 'x' has "
                                             rf"shape \({empty.shape[0]}, {empty.shape[1]}"):
            sg.load_dataset("npz", path=f)


# --- bad input: options, files, non-finite data, labels, quantised floats -------------------------
def test_unknown_options_are_named_with_the_loaders_valid_ones():
    import inspect

    from scoregen.data import _LOADERS

    with pytest.raises(ValueError, match=r"unknown option 'foo' for data set 'gmm'; "
                                         r"valid: mixture, n_train, n_test, seed$"):
        sg.load_dataset("gmm", foo=1)
    for name, loader in _LOADERS.items():
        valid = ", ".join(inspect.signature(loader).parameters)
        with pytest.raises(ValueError, match=rf"unknown options 'bar', 'foo' for data set '{name}'; valid: {valid}$"):
            sg.load_dataset(name, foo=1, bar=2)


@pytest.mark.parametrize("name, options, message", [
    ("gmm", {"n_train": "100"}, r"data set 'gmm': option 'n_train' must be an integer; got '100' \(str\)"),
    ("gmm", {"seed": 1.5}, r"data set 'gmm': option 'seed' must be an integer; got 1.5 \(float\)"),
    ("toy", {"shape": ["moons"]}, r"data set 'toy': option 'shape' must be a string; got \['moons'\] \(list\)"),
    ("digits", {"test_fraction": "0.2"}, r"data set 'digits': option 'test_fraction' must be a number; got '0.2'"),
    ("cartoon", {"size": 32.0}, r"data set 'cartoon': option 'size' must be an integer; got 32.0 \(float\)"),
    ("cartoon", {"n": True}, r"data set 'cartoon': option 'n' must be an integer; got True \(bool\)"),
    ("npz", {"path": 3}, r"data set 'npz': option 'path' must be a string or a path; got 3 \(int\)"),
    ("npz", {"path": "f.npz", "levels": 17.0}, r"data set 'npz': option 'levels' must be an integer or null; got 17.0"),
    ("gmm", {"n_train": 0}, "n_train must be a positive integer; got 0"),
    ("cartoon", {"n": 4, "seed": -1}, "seed must be a non-negative integer; got -1"),
])
def test_options_of_the_wrong_type_or_value_are_named(name, options, message):
    with pytest.raises(ValueError, match=message):
        sg.load_dataset(name, **options)


def test_npz_refuses_other_files_and_0d_arrays_by_name(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"npz: .*a.npy is a .npy array, not an npz archive; save it with np.savez"):
        sg.load_dataset("npz", path=tmp_path / "a.npy")
    (tmp_path / "t.txt").write_text("1 2\n3 4\n")
    with pytest.raises(ValueError, match=r"npz: .*t.txt is not an npz archive .*; it starts with b'1 2"):
        sg.load_dataset("npz", path=tmp_path / "t.txt")
    np.savez(tmp_path / "s.npz", x=np.array(3.0))
    with pytest.raises(ValueError, match=r"array 'x' in .*s.npz must have a batch dimension \[n, ...\]; got a 0-d"):
        sg.load_dataset("npz", path=tmp_path / "s.npz")
    np.savez(tmp_path / "l.npz", x=np.zeros((4, 2)), labels=np.array(1))
    with pytest.raises(ValueError, match="array 'labels' in .* must have a batch dimension"):
        sg.load_dataset("npz", path=tmp_path / "l.npz")


def test_non_finite_data_are_refused_at_load_naming_the_split(tmp_path):
    x = np.zeros((10, 2))
    x[3, 1] = np.nan
    np.savez(tmp_path / "n.npz", x=x)
    with pytest.raises(ValueError, match=r"data set 'npz-n': the (train|test) split has 1 NaN/inf value\(s\) of"):
        sg.load_dataset("npz", path=tmp_path / "n.npz")
    with pytest.raises(ValueError, match=r"data set 'mine': the test split has 2 NaN/inf value\(s\) of 6, the first "
                                         r"at index \(1, 0\) of the split"):
        sg.data.Dataset("mine", torch.zeros(4, 2), torch.tensor([[0, 1], [math.inf, -math.inf], [0, 0]]))


def test_float_labels_must_be_whole_numbers(tmp_path):
    x = np.random.default_rng(0).normal(size=(10, 2))
    np.savez(tmp_path / "f.npz", x=x, labels=np.linspace(0, 1, 10))
    with pytest.raises(ValueError, match=r"npz-f: labels must be integers \(class indices\); got float labels such "
                                         r"as 0.111111 \(at index \(1,\)\); 8 of 10 are not whole numbers"):
        sg.load_dataset("npz", path=tmp_path / "f.npz")
    np.savez(tmp_path / "w.npz", x=x, labels=np.arange(10.0))         # whole numbers: cast
    d = sg.load_dataset("npz", path=tmp_path / "w.npz", test_fraction=0.5)
    assert d.labels_train.dtype == torch.long
    assert torch.equal(d.train, torch.as_tensor(x, dtype=torch.float32)[d.labels_train])
    np.savez(tmp_path / "s.npz", x=x, labels=np.array(list("abcdefghij")))
    with pytest.raises(ValueError, match="labels must be integers .*; got dtype <U1"):
        sg.load_dataset("npz", path=tmp_path / "s.npz")


def test_npz_floats_on_a_grid_warn_without_levels_and_must_fit_the_levels_given(tmp_path):
    from scoregen.core.quantization import QuantizedDataWarning

    k = np.random.default_rng(0).integers(0, 17, (40, 1, 8, 8))
    np.savez(tmp_path / "q.npz", x=k / 8 - 1)                               # digits-like, saved as floats
    with pytest.warns(QuantizedDataWarning, match=r"17-level grid .*float array 'x' of .*q.npz is taken as "
                                                  r"continuous \(levels=None\); pass levels=17"):
        assert sg.load_dataset("npz", path=tmp_path / "q.npz").levels is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", QuantizedDataWarning)
        assert sg.load_dataset("npz", path=tmp_path / "q.npz", levels=17).levels == 17
        np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).normal(size=(40, 1, 8, 8)).clip(-1, 1))
        sg.load_dataset("npz", path=tmp_path / "c.npz")                     # continuous: no warning
    with pytest.raises(ValueError, match="must lie on the 256-level grid"):
        sg.load_dataset("npz", path=tmp_path / "q.npz", levels=256)
