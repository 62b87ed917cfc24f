"""Latent diffusion against closed forms: the exact eps of a mixture of codes, decoded by a fixed linear decoder,
gives the pushed-forward mixture; training, resume and every sampler on a real VAE's codes."""
import pytest
import torch
from oracle import GMM, SDE, N, distance, gen

import scoregen as sg
from scoregen.models.checkpoint import TrainConfig, read_checkpoint
from scoregen.data import load_dataset
from scoregen.data.gmm import GaussianMixture
from scoregen.models.loading import load_model, with_dtype
from scoregen.models.zoo import model_for, shipped_checkpoint
from scoregen.models.nets import LatentDiffusion
from scoregen.models.nets.vae import linear_vae
from scoregen.evaluation.tune_solver import exponential_adams
from scoregen.samplers import METHODS
from scoregen.samplers.grids import time_grid
from scoregen.models.train import train

W, B = torch.tensor([[1.5, 0.4], [-0.3, 0.8]]), torch.tensor([0.2, -0.1])   # the decoder x = W z + B
SHIFT, SCALE = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.5])           # z = SHIFT + SCALE u


def oracle_latent(shift=SHIFT):
    """LatentDiffusion whose decoder maps u to x = A u + c (A = W diag(SCALE), c = W SHIFT + B), with the exact
    eps of the codes u = A^-1 (x - c) of x ~ GMM (gmm2d): its decoded samples are exactly GMM's."""
    vae = linear_vae(2, 2)
    with torch.no_grad():
        vae.decoder.weight.copy_(W)
        vae.decoder.bias.copy_(B)
    a, c = (W * SCALE).double(), (W @ SHIFT + B).double()
    a_inv = torch.linalg.inv(a)
    codes = GaussianMixture(GMM.weights, (GMM.means - c) @ a_inv.T, a_inv @ GMM.covs @ a_inv.T)
    model = LatentDiffusion(vae, codes.eps_model(SDE))
    model.shift.copy_(shift)
    model.scale.copy_(SCALE)
    return model


@pytest.mark.parametrize("method, steps, options", [
    ("ddpm", 200, {"variance": "beta"}), ("ddim", 100, {"grid": "quadratic"}), ("sde", 100, {"solver": "heun"}),
    ("ode", 20, {"solver": "rk4"}), ("dpmpp", 40, {"grid": "log_snr"}), ("unipc", 40, {"grid": "log_snr"}),
    ("heun", 40, {"grid": "karras"}), ("pc", 200, {}),
])
def test_exact_latent_eps_decodes_to_the_pushed_forward_mixture(method, steps, options, floors):
    """Every sampler on the codes, then one decoder call: the decoded samples are the data's mixture within its
    floors (|z| of the mean log-density < 4, covariance error < 3 floors); a decoder shifted by 0.3 in z is not."""
    res = sg.sample(oracle_latent(), SDE, (N, 2), method, steps, generator=gen(), **options)
    assert res.decoder_calls == 1 and res.latents.shape == (N, 2) and res.nfe >= steps
    torch.testing.assert_close(res.x, (res.latents * SCALE + SHIFT) @ W.T + B)
    z, cov = distance(res.x, floors)
    assert abs(z) < 4 and cov < 3, (z, cov)
    if method == "ddim":
        off = sg.sample(oracle_latent(SHIFT + 0.3), SDE, (N, 2), method, steps, generator=gen(), **options)
        assert abs(distance(off.x, floors)[0]) > 20


def test_a_latent_model_takes_its_latent_shape():
    with pytest.raises(ValueError, match=r"latent diffusion model: shape must be \(batch, 2\), its latent; got "
                                         r"\(8, 3\) \(its samples are decoded to shape \(2,\)\)"):
        sg.sample(oracle_latent(), SDE, (8, 3), "ddim", 5)
    with pytest.raises(ValueError, match="codes must be one of draw, mean; got 'all'"):
        LatentDiffusion(linear_vae(2, 2), oracle_latent().net, codes="all")


def latent_config(out, **kw):
    base = dict(dataset="digits", model={"arch": "latent", "vae_checkpoint": str(shipped_checkpoint("digits-vae.pt")),
                                         "net": {"arch": "mlp", "hidden": 32, "depth": 2}},
                steps=12, batch_size=64, lr=1e-2, warmup=3, ema_decay=0.9, sample_every=12, ckpt_every=4,
                log_every=1, out=str(out))
    return TrainConfig(**{**base, **kw})


def test_training_on_a_vaes_codes_resumes_bit_exactly_and_samples_with_every_method(tmp_path):
    """The digits VAE's codes: the config is completed from the VAE's checkpoint, the VAE's weights are the
    checkpoint's and stay frozen, the codes are standardised (draws: mean ~0, std ~1 per dimension), a run resumed
    from step 8 equals a straight one, and every sampler decodes to digits."""
    straight = train(latent_config(tmp_path / "a"), progress=False)
    train(latent_config(tmp_path / "b", steps=8), progress=False)
    train(latent_config(tmp_path / "b"), resume=True, progress=False)
    a, b = (read_checkpoint(tmp_path / run / "ckpt.pt") for run in "ab")
    for key in ("model", "ema"):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    assert a["config"]["model"]["vae"] == {"arch": "vae", "preset": "digits"}
    assert a["config"]["model"]["net"] == {"arch": "mlp", "hidden": 32, "depth": 2, "dim": 16}
    vae = load_model(shipped_checkpoint("digits-vae.pt"), device="cpu").model
    assert all(torch.equal(p, q) for p, q in zip(straight.model.vae.state_dict().values(), vae.state_dict().values()))
    assert (tmp_path / "a" / "samples_0000012.png").is_file()

    loaded = load_model(tmp_path / "a" / "ckpt.pt", device="cpu")
    model = loaded.model
    assert isinstance(model, LatentDiffusion) and loaded.info.shape == (16,) and model.data_shape == (1, 8, 8)
    data = load_dataset("digits")
    u = model.encode(data.train, gen())
    assert u.mean(0).abs().max() < 0.1 and (u.std(0) - 1).abs().max() < 0.1
    learned = exponential_adams(loaded.sde, time_grid(loaded.sde, "uniform", 3, 0.0))
    for method in METHODS:
        run = {"grid": learned.t, "solver": learned} if method == "learned" else {"steps": 3}
        res = sg.sample(model, loaded.sde, (4, 16), method, generator=gen(), **run)
        assert res.x.shape == (4, 1, 8, 8) and res.latents.shape == (4, 16) and res.decoder_calls == 1
    bf16 = with_dtype(loaded, "bf16").model
    assert isinstance(bf16, LatentDiffusion) and bf16.vae is model.vae
    u32, u16 = (sg.sample(m, loaded.sde, (64, 16), "ddim", 5, generator=gen()).latents for m in (model, bf16))
    assert 0 < (u32 - u16).abs().max() < 0.05 * u32.abs().max()


def test_a_latent_model_needs_a_vae_of_the_datas_shape(tmp_path):
    with pytest.raises(ValueError, match="latent diffusion model needs vae_checkpoint"):
        train(latent_config(tmp_path / "a", model={"arch": "latent"}), progress=False)
    with pytest.raises(ValueError, match=r"digits.pt holds no VAE; the data set's samples have shape \(1, 8, 8\)"):
        train(latent_config(tmp_path / "b", model={"arch": "latent",
                                                   "vae_checkpoint": str(shipped_checkpoint("digits.pt"))}),
              progress=False)
    with pytest.raises(ValueError, match=r"decodes to samples of shape \(1, 8, 8\); the data set's samples have "
                                         r"shape \(2,\)"):
        train(latent_config(tmp_path / "c", dataset="gmm"), progress=False)


def test_model_for_checks_the_decoded_shape(tmp_path):
    train(latent_config(tmp_path / "a", steps=2, sample_every=0), progress=False)
    data = load_dataset("digits")
    loaded = model_for("eps", data, "digits", {}, checkpoint=tmp_path / "a" / "ckpt.pt", device=torch.device("cpu"),
                       cache_dir=tmp_path)
    assert loaded.info.shape == (16,)
    with pytest.raises(ValueError, match=r"trained on data set 'digits', not 'gmm'"):
        model_for("eps", load_dataset("gmm"), "gmm", {}, checkpoint=tmp_path / "a" / "ckpt.pt",
                  device=torch.device("cpu"), cache_dir=tmp_path)
