"""The eps-networks: shapes, closed-form time embedding, per-sample independence, parameter counts, errors."""
import math

import pytest
import torch

from scoregen.models.nets import ARCHS, MLP, PRESETS, UNet, build_model
from scoregen.models.nets.embedding import timestep_embedding


def randomise_output(model):
    """Replace the zero-initialised output layer by random weights, so the output depends on x and t."""
    layer = model.conv_out if isinstance(model, UNet) else model.out
    torch.nn.init.normal_(layer.weight, std=0.1)
    torch.nn.init.normal_(layer.bias, std=0.1)
    return model


def test_timestep_embedding_closed_form():
    t = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    emb = timestep_embedding(t, 8)
    w = 10000.0 ** (-torch.arange(4, dtype=torch.float64) / 3)
    torch.testing.assert_close(emb, torch.cat([torch.sin(1000 * t[:, None] * w), torch.cos(1000 * t[:, None] * w)], 1))
    assert emb.dtype == torch.float64
    assert timestep_embedding(t, 7).shape == (3, 7)


@pytest.mark.parametrize("preset, shape", [("digits", (1, 8, 8)), ("small32", (3, 32, 32)), ("small64", (3, 64, 64))])
def test_unet_shapes_zero_init_and_per_sample(preset, shape):
    torch.manual_seed(0)
    model = build_model({"preset": preset}).eval()
    x, t = torch.randn(3, *shape), torch.tensor([0.05, 0.5, 1.0])
    with torch.no_grad():
        assert torch.equal(model(x, t), torch.zeros_like(x))  # zero-initialised output conv
        randomise_output(model)
        eps = model(x, t)
        assert eps.shape == x.shape
        # each sample's output depends on that sample alone (GroupNorm and attention never mix the batch)
        torch.testing.assert_close(eps[1:2], model(x[1:2], t[1:2]), atol=1e-5, rtol=1e-5)
        # a function of t: the same x at another time gives another output; a scalar t broadcasts
        assert (model(x, t.flip(0)) - eps).abs().mean() > 1e-2 * eps.abs().mean()
        torch.testing.assert_close(model(x, torch.tensor(0.5)), model(x, torch.full((3,), 0.5)))


def test_mlp_shapes_zero_init_and_time_dependence():
    torch.manual_seed(0)
    model = build_model({"preset": "toy"})
    x = torch.randn(5, 2)
    t = torch.linspace(0.1, 1, 5)
    with torch.no_grad():
        assert torch.equal(model(x, t), torch.zeros(5, 2))
        randomise_output(model)
        eps = model(x, t)
        assert eps.shape == (5, 2)
        assert (model(x, t.flip(0)) - eps).abs().mean() > 1e-2 * eps.abs().mean()
        torch.testing.assert_close(eps[2:3], model(x[2:3], t[2:3]))


def test_a_normalised_mlp_is_bounded_far_from_the_data_and_a_plain_one_grows_linearly():
    """``norm=True``: LayerNorm is scale-invariant, so eps(c x) tends to a limit as c grows; without it eps
    grows like c (SiLU is linear at +inf), the slope that lets a PF-ODE solve from an atypical code diverge."""
    torch.manual_seed(0)
    x, t = torch.randn(4, 3, dtype=torch.float64), torch.full((4,), 0.9, dtype=torch.float64)
    with torch.no_grad():
        normed, plain = (randomise_output(MLP(3, hidden=32, depth=2, norm=n).double()) for n in (True, False))
        far, farther = normed(1e4 * x, t), normed(1e6 * x, t)
        torch.testing.assert_close(far, farther, rtol=1e-3, atol=1e-3)
        assert far.abs().max() < 10
        ratio = plain(1e6 * x, t).norm(dim=1) / plain(1e4 * x, t).norm(dim=1)
        torch.testing.assert_close(ratio, torch.full_like(ratio, 100.0), rtol=1e-2, atol=0)
        assert normed(x, t).shape == (4, 3) and len(normed.norms) == 3
        assert set(plain.state_dict()) < set(normed.state_dict())   # norm=False checkpoints keep their keys


def test_cifar32_is_ddpm_cifar10_size():
    """Ho et al. (2020) report 35.7M parameters for the CIFAR-10 model; this is the count of their code."""
    n = sum(p.numel() for p in build_model({"preset": "cifar32"}).parameters())
    assert n == 35_746_307
    assert abs(n - 35.7e6) / 35.7e6 < 0.01


def test_digits_preset_fits_the_shipped_budget():
    n = sum(p.numel() for p in build_model({"preset": "digits"}).parameters())
    assert n * 4 <= 5e6  # fp32 bytes


def test_config_overrides_and_registry():
    model = build_model({"arch": "unet", "preset": "digits", "ch": 16, "dropout": 0.0})
    assert model.conv_in.out_channels == 16
    assert isinstance(build_model({"arch": "mlp", "dim": 3, "hidden": 8}), MLP)
    assert isinstance(build_model({"arch": "unet", "in_channels": 2, "ch": 32, "ch_mult": [1, 2],
                                   "attn_resolutions": [], "image_size": 8}), UNet)
    assert set(PRESETS) >= {"digits", "cifar32", "cartoon64", "small32", "small64", "toy"}
    assert set(ARCHS) >= {"unet", "mlp"}


@pytest.mark.parametrize("config, match", [
    ({"preset": "imagenet"}, "'preset'.*cifar32"),
    ({"arch": "transformer"}, "unknown arch 'transformer'; valid: .*unet"),
    ({"arch": "mlp", "preset": "digits"}, "unknown mlp preset 'digits'; valid: toy"),
    ({"arch": "unet", "preset": "digits", "chanels": 3}, "bad options for arch 'unet'.*chanels"),
    ({"arch": "unet", "in_channels": 1, "image_size": 8, "ch_mult": (1, 2, 2, 2, 2)}, "divisible"),
    ({"arch": "unet", "in_channels": 1, "image_size": 8, "ch_mult": (1, 2)}, "attn_resolutions"),
    ({}, "'arch'.*'preset'"),
])
def test_build_errors(config, match):
    with pytest.raises(ValueError, match=match):
        build_model(config)


def test_forward_errors():
    unet, mlp = build_model({"preset": "digits"}), build_model({"preset": "toy"})
    with pytest.raises(ValueError, match=r"x must have shape \[n, 1, 8, 8\]"):
        unet(torch.zeros(2, 1, 16, 16), torch.ones(2))
    with pytest.raises(ValueError, match=r"x must have shape \[n, 2\]"):
        mlp(torch.zeros(2, 3), torch.ones(2))
    with pytest.raises(ValueError, match=r"t must be a scalar or have shape \[2\]"):
        mlp(torch.zeros(2, 2), torch.ones(3))


def test_attention_is_softmax_attention():
    """AttnBlock against a direct evaluation of x + proj(softmax(q k^T / sqrt(c)) v) over positions."""
    from scoregen.models.nets.unet import AttnBlock

    torch.manual_seed(0)
    block = AttnBlock(8).double()
    x = torch.randn(2, 8, 3, 4, dtype=torch.float64)
    h = block.norm(x).flatten(2)  # [b, c, hw]
    w, b = block.qkv.weight[:, :, 0, 0], block.qkv.bias
    q, k, v = (torch.einsum("oc,bcn->bon", w, h) + b[None, :, None]).chunk(3, dim=1)
    a = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / math.sqrt(8), dim=-1)
    out = torch.einsum("bij,bcj->bci", a, v)
    expected = x + block.proj(out.reshape(x.shape))
    torch.testing.assert_close(block(x), expected)
