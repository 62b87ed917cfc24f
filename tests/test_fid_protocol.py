"""The standard FID protocol (StyleGAN2-ADA, EDM, clean-fid's legacy_tensorflow): what ``InceptionFeatures`` gives
the detector, the Frechet distance against pytorch-fid's and clean-fid's, and reference statistics in their npz."""
import contextlib
import importlib.machinery
import importlib.util
import io
import re
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scoregen.evaluation.features import InceptionFeatures, load_reference_stats, save_reference_stats
from scoregen.evaluation.metrics import frechet_distance

pytestmark = [pytest.mark.filterwarnings("ignore:`torch.jit"),   # the detector's TorchScript format
              pytest.mark.filterwarnings("ignore:The `disp` argument")]   # pytorch-fid's and clean-fid's sqrtm call


class _Detector(torch.nn.Module):
    """inception-2015-12-05.pt's interface with random weights: uint8 [N, 3, H, W] only, resized to 299x299
    inside (bilinear), a 3x3 conv and a global mean pool: 64 features, or 10 logits."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 64, 3, padding=1)
        self.fc = torch.nn.Linear(64, 10)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        if img.dtype != torch.uint8 or img.shape[1] != 3:
            raise RuntimeError(f"expected uint8 images [N, 3, H, W]; got {img.dtype} {img.shape}")
        x = F.interpolate(img.to(torch.float32), size=(299, 299), mode="bilinear", align_corners=False)
        features = torch.tanh(self.conv(F.avg_pool2d(x / 127.5 - 1, 13))).mean((2, 3))
        return features if return_features else self.fc(features)


@pytest.fixture(scope="module")
def detector_path(tmp_path_factory):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        detector = torch.jit.script(_Detector())
    path = tmp_path_factory.mktemp("detector") / "inception-random.pt"
    torch.jit.save(detector, str(path))
    return path


def _images(n, channels, side, seed, scale=1.3):
    """Images uniform in [-scale, scale]: beyond [-1, 1] by default, so clipping matters."""
    return (2 * torch.rand(n, channels, side, side, generator=torch.Generator().manual_seed(seed)) - 1) * scale


def _edm_uint8(x):
    """EDM's generate.py / StyleGAN2-ADA's metric_utils quantisation, written out."""
    return (x * 127.5 + 128).clamp(0, 255).to(torch.uint8)


def test_inception_features_are_the_detectors_on_quantised_images_at_their_own_resolution(detector_path):
    inception, detector = InceptionFeatures(detector_path), torch.jit.load(str(detector_path))
    assert inception.info["standard"] and inception.info["torchscript"]
    with pytest.raises(torch.jit.Error, match="uint8"):   # the stand-in is as strict as asked
        detector(torch.zeros(1, 3, 8, 8), return_features=True)
    grey, rgb = _images(5, 1, 8, seed=1), _images(5, 3, 16, seed=2)
    assert grey.abs().max() > 1.2 and rgb.abs().max() > 1.2
    expected_grey = detector(_edm_uint8(grey).repeat([1, 3, 1, 1]), return_features=True)
    expected_rgb = detector(_edm_uint8(rgb), return_features=True)
    assert expected_grey.shape == expected_rgb.shape == (5, 64)
    assert torch.equal(inception.features(grey), expected_grey)
    assert torch.equal(inception.features(rgb), expected_rgb)
    assert torch.equal(inception.features(grey), inception.features(grey.repeat([1, 3, 1, 1])))
    clipped = inception.features(rgb.clamp(-1, 1))   # clipping to [-1, 1] first changes nothing
    assert torch.equal(clipped, expected_rgb)
    # resizing to 299 before the detector does (the old protocol) gives other features
    resized = F.interpolate(rgb, size=(299, 299), mode="bilinear", align_corners=False)
    assert (detector(_edm_uint8(resized), return_features=True) - expected_rgb).abs().max() > 1e-4
    with pytest.raises(ValueError, match="floats"):
        inception.features(_edm_uint8(rgb))


def test_torchvision_weights_get_the_same_quantisation_then_floats_at_299_and_are_not_standard(tmp_path,
                                                                                                 monkeypatch):
    class Inception(torch.nn.Module):
        """torchvision's inception_v3 as far as InceptionFeatures uses it: a Mixed_7c key and an fc to drop."""

        def __init__(self, **kwargs):
            super().__init__()
            self.Mixed_7c = torch.nn.Module()
            self.Mixed_7c.branch_pool = torch.nn.Module()
            self.Mixed_7c.branch_pool.conv = torch.nn.Conv2d(3, 4, 5, stride=5)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            assert x.dtype == torch.float32 and x.shape[2:] == (299, 299)
            return self.fc(self.Mixed_7c.branch_pool.conv(x).mean((2, 3)))

    torchvision = types.ModuleType("torchvision")
    torchvision.models = types.SimpleNamespace(inception_v3=Inception)
    monkeypatch.setitem(sys.modules, "torchvision", torchvision)
    monkeypatch.setitem(sys.modules, "torchvision.models", torchvision.models)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        weights = Inception().state_dict()
    torch.save(weights, tmp_path / "inception_v3.pth")
    inception = InceptionFeatures(tmp_path / "inception_v3.pth")
    assert not inception.info["standard"] and "not the standard" in inception.info["protocol"]
    grey = _images(3, 1, 8, seed=3)
    x = F.interpolate(_edm_uint8(grey).repeat([1, 3, 1, 1]).float() / 127.5 - 1, size=(299, 299), mode="bilinear",
                      align_corners=False)
    expected = F.conv2d(x, weights["Mixed_7c.branch_pool.conv.weight"], weights["Mixed_7c.branch_pool.conv.bias"],
                        stride=5).mean((2, 3))
    assert torch.allclose(inception.features(grey), expected, rtol=0, atol=1e-6)


@contextlib.contextmanager
def _stub_torchvision():
    """A stub ``torchvision`` on sys.meta_path for the block only (pytorch-fid and clean-fid import it at import
    time, and it cannot be installed beside this CPU torch); afterwards the stub modules, and the modules of the
    two packages that hold them, leave sys.modules, so nothing else sees a fake torchvision."""

    class Stub(types.ModuleType):
        def __getattr__(self, name):
            if name.startswith("__"):
                raise AttributeError(name)
            value = type(name, (), {}) if name[:1].isupper() else Stub(f"{self.__name__}.{name}")
            setattr(self, name, value)
            return value

    class Finder:
        def find_spec(self, name, path=None, target=None):
            if name == "torchvision" or name.startswith("torchvision."):
                return importlib.machinery.ModuleSpec(name, self, is_package=True)
            return None

        def create_module(self, spec):
            return Stub(spec.name)

        def exec_module(self, module):
            module.__path__ = []

    finder, before = Finder(), set(sys.modules)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in set(sys.modules) - before:
            if name.partition(".")[0] in ("torchvision", "pytorch_fid", "cleanfid"):
                del sys.modules[name]


@pytest.fixture(scope="module")
def reference_fds():
    """pytorch-fid's and clean-fid's ``fd(mu1, sigma1, mu2, sigma2)``."""
    if any(importlib.util.find_spec(name) is None for name in ("pytorch_fid", "cleanfid")):
        pytest.skip("pip install --no-deps pytorch-fid==0.3.0 clean-fid==0.1.35")
    if importlib.util.find_spec("torchvision") is None:
        with _stub_torchvision():
            fds = _reference_fds()
        assert not [name for name in sys.modules if name.partition(".")[0] == "torchvision"]
    else:
        fds = _reference_fds()
    return fds


def _reference_fds():
    from cleanfid.fid import frechet_distance as clean_fid
    from pytorch_fid.fid_score import calculate_frechet_distance as pytorch_fid

    return {"pytorch-fid": pytorch_fid, "clean-fid": clean_fid}


def _np_stats(feats):
    feats = np.asarray(feats, dtype=np.float64)
    return feats.mean(0), np.cov(feats, rowvar=False)


def _assert_fd_matches(a, b, reference_fds):
    """Our FD on features and on their (mu, sigma) equals pytorch-fid's and clean-fid's; returns it."""
    (mu_a, sigma_a), (mu_b, sigma_b) = _np_stats(a), _np_stats(b)
    ours = frechet_distance(a, b)
    assert frechet_distance((mu_a, sigma_a), (mu_b, sigma_b)) == pytest.approx(ours, rel=1e-12, abs=1e-12)
    for name, fd in reference_fds.items():
        assert ours == pytest.approx(fd(mu_a, sigma_a, mu_b, sigma_b), rel=1e-6, abs=1e-6), name
    return ours


def test_fd_of_detector_features_equals_pytorch_fid_and_clean_fid(detector_path, reference_fds):
    inception = InceptionFeatures(detector_path)
    a = inception.features(_images(128, 3, 16, seed=4)).numpy()
    b = inception.features(0.6 * _images(128, 3, 16, seed=5) + 0.2).numpy()
    assert _assert_fd_matches(a, b, reference_fds) == pytest.approx(0.5524, rel=1e-3)
    assert _assert_fd_matches(a, a, reference_fds) == pytest.approx(0, abs=1e-6)


def test_fd_of_well_conditioned_gaussians_equals_pytorch_fid_and_clean_fid(reference_fds):
    """Samples with scales 0.5..2 along random orthogonal axes: covariances of condition number about 16."""
    g = np.random.default_rng(6)
    axes = [np.linalg.qr(g.standard_normal((16, 16)))[0] for _ in range(2)]
    a = g.standard_normal((400, 16)) * np.linspace(0.5, 2, 16) @ axes[0]
    b = g.standard_normal((400, 16)) * np.linspace(2, 0.5, 16) @ axes[1] + 0.5
    assert np.linalg.cond(np.cov(a, rowvar=False)) < 50 and np.linalg.cond(np.cov(b, rowvar=False)) < 50
    assert _assert_fd_matches(a, b, reference_fds) == pytest.approx(12.084, rel=1e-3)


def test_reference_stats_round_trip_in_the_npz_of_pytorch_fid_and_clean_fid(tmp_path):
    feats = torch.randn(50, 8, generator=torch.Generator().manual_seed(7)) * torch.arange(1.0, 9.0) + 3
    path = save_reference_stats(tmp_path / "ref.npz", feats)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.npz"]   # no temporary file left
    mu, sigma = _np_stats(feats.numpy())
    with np.load(path) as npz:
        assert sorted(npz.files) == ["mu", "sigma"] and npz["mu"].dtype == npz["sigma"].dtype == np.float64
        np.testing.assert_array_equal(npz["mu"], mu)
        np.testing.assert_array_equal(npz["sigma"], sigma)
    loaded_mu, loaded_sigma = load_reference_stats(path)
    assert loaded_mu.dtype == loaded_sigma.dtype == torch.float64
    assert np.array_equal(loaded_mu.numpy(), mu) and np.array_equal(loaded_sigma.numpy(), sigma)
    assert frechet_distance(feats, (loaded_mu, loaded_sigma)) == pytest.approx(0, abs=1e-9)
    np.savez_compressed(tmp_path / "compressed.npz", mu=mu.astype(np.float32), sigma=sigma)   # pytorch-fid's way
    assert torch.equal(load_reference_stats(tmp_path / "compressed.npz")[1], loaded_sigma)
    with pytest.raises(ValueError, match=r"shape \[n, d\]"):
        save_reference_stats(tmp_path / "bad.npz", feats[0])


def _npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npz_bytes(**arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@pytest.mark.parametrize("content, error", [
    (b"mu sigma", "not an npz file"),
    (_npy_bytes(np.zeros(3)), "not an npz file"),
    (_npz_bytes(mu=np.zeros(3), sigma=np.eye(3))[:-30], "not an npz file"),
    (_npz_bytes(mu=np.zeros(3)), "no 'sigma'"),
    (_npz_bytes(mean=np.zeros(3), cov=np.eye(3)), "no 'mu' or 'sigma'"),
    (_npz_bytes(mu=np.zeros(3), sigma=np.eye(4)), r"shape \[d\].*\(3,\) and \(4, 4\)"),
    (_npz_bytes(mu=np.zeros((3, 1)), sigma=np.eye(3)), r"shape \[d\]"),
    (_npz_bytes(mu=np.array(["a", "b"]), sigma=np.eye(2)), "real numbers"),
    (_npz_bytes(mu=np.zeros(2), sigma=np.array([[1, np.nan], [0, 1]])), "non-finite"),
], ids=["text", "npy", "truncated", "no-sigma", "other-keys", "sigma-shape", "mu-shape", "strings", "nan"])
def test_load_reference_stats_names_the_file_and_what_is_wrong(tmp_path, content, error):
    path = tmp_path / "ref.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + error):
        load_reference_stats(path)


def test_load_reference_stats_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "none.npz"))):
        load_reference_stats(tmp_path / "none.npz")

