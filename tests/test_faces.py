"""The faces pipeline from a folder of PNGs, as for the real Cartoon Set: VAE, latent diffusion on its codes, sampling
and the comparison, each by its command, with the committed configs; and the shipped face models."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scoregen.models.checkpoint import TrainConfig, read_checkpoint
from scoregen.app.cli import main
from scoregen.data.cartoon import render_faces, sample_attributes
from scoregen.models.loading import load_model
from scoregen.models.zoo import shipped_checkpoint
from scoregen.models.nets import PRESETS, LatentDiffusion, build_model
from scoregen.models.nets.vae import PRESETS as VAE_PRESETS
from scoregen.models.train import model_config_for

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_the_faces_pipeline_runs_on_a_folder_of_pngs(tmp_path, capsys):
    faces = tmp_path / "faces"
    faces.mkdir()
    for i, img in enumerate(render_faces(sample_attributes(40, seed=3), size=64)):
        Image.fromarray(img.transpose(1, 2, 0)).save(faces / f"face_{i:03d}.png")
    data = ["--dataset", "folder", "--data-path", str(faces), "--dataset-option", "size=32"]
    short = ["--steps", "3", "--batch-size", "8", "--sample-every", "0", "--device", "cpu", "--no-progress"]
    main(["train", "--config", str(CONFIGS / "vae_cartoon32.json"), *data, *short, "--out", str(tmp_path / "vae")])
    main(["train", "--config", str(CONFIGS / "latent_cartoon32.json"), *data, *short, "--out", str(tmp_path / "ld"),
          "--vae", str(tmp_path / "vae" / "ckpt.pt")])
    saved = read_checkpoint(tmp_path / "ld" / "ckpt.pt")["config"]
    assert saved["dataset_options"] == {"path": str(faces), "size": 32}
    assert saved["model"]["vae_checkpoint"] == str(tmp_path / "vae" / "ckpt.pt")
    assert saved["model"]["vae"] == {"arch": "vae", "preset": "small32", "z_dim": 64, "scale": 0.1}

    capsys.readouterr()
    main(["sample", str(tmp_path / "ld" / "ckpt.pt"), "--method", "dpmpp", "--steps", "5", "-n", "6", "--device",
          "cpu", "--out", str(tmp_path / "x.npz")])
    assert "6 samples by dpmpp (5 NFE + 1 decoder call(s))" in capsys.readouterr().out
    saved = np.load(tmp_path / "x.npz")
    assert saved["x"].shape == (6, 3, 32, 32) and saved["latents"].shape == (6, 64)

    main(["compare", "--dataset", str(faces), "--model", str(tmp_path / "ld" / "ckpt.pt"), "--samplers", "ddim,vae",
          "--steps", "ddim=2", "-n", "8", "--device", "cpu", "--out", str(tmp_path / "cmp"), "--cache-dir",
          str(tmp_path / "cache"), "--no-progress"])
    summary = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [r["sampler"] for r in summary["rows"]] == ["data floor", "ddim", "vae"]
    assert [r.get("decoder_calls") for r in summary["rows"]] == [None, 1, None] and summary["rows"][1]["nfe"] == 2
    assert summary["vae_checkpoint"] == f"{tmp_path / 'ld' / 'ckpt.pt'} (its VAE)"
    assert all(r["fd"] > 0 for r in summary["rows"])


def test_the_shipped_face_models_are_one_vae():
    """cartoon.pt is latent diffusion on cartoon-vae.pt's codes: the same VAE weights, standardised draws."""
    latent, vae = (load_model(shipped_checkpoint(name), device="cpu") for name in ("cartoon.pt", "cartoon-vae.pt"))
    assert isinstance(latent.model, LatentDiffusion) and latent.model.data_shape == (3, 32, 32)
    assert latent.info.shape == (64,) and latent.model.codes == "draw"
    ours, theirs = latent.model.vae.state_dict(), vae.model.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    sizes = [shipped_checkpoint(n).stat().st_size for n in ("cartoon.pt", "cartoon-vae.pt", "cartoon-pixel.pt")]
    assert max(sizes) <= 5e6 and sum(sizes) <= 10e6


def test_the_shipped_pixel_face_model_is_its_committed_config():
    """cartoon-pixel.pt, the faces' pixel-space eps U-Net of the likelihood table: configs/cartoon32.json."""
    path = shipped_checkpoint("cartoon-pixel.pt")
    loaded, committed = load_model(path, device="cpu"), json.loads((CONFIGS / "cartoon32.json").read_text())
    assert loaded.info.config.model == committed["model"] and loaded.info.shape == (3, 32, 32)
    assert read_checkpoint(path)["step"] == committed["steps"] and loaded.info.t_min == committed["t_min"]


@pytest.mark.parametrize("name, shape", [("vae_cartoon32", (3, 32, 32)), ("cartoon32", (3, 32, 32)),
                                         ("vae_cartoon64", (3, 64, 64)),
                                         ("cartoon64", (3, 64, 64))])
def test_the_committed_face_configs_build_the_models_they_name(name, shape):
    """The CPU face VAE, and the seed's pixel-space pair for a GPU: its VAE (four stride-2 convs, z_dim 512, the
    MSE + KL scale) and its U-Net (widths 64..512, self-attention at 32, 16 and 8), built on the meta device."""
    config = TrainConfig.from_dict(json.loads((CONFIGS / f"{name}.json").read_text()))
    assert config.dataset == "cartoon" and config.dataset_options == {"size": shape[-1]}
    with torch.device("meta"):
        model = build_model(model_config_for(config.model, config.dataset, shape))
    assert tuple(model.shape) == shape
    if name == "vae_cartoon64":
        assert model.z_dim == 512 and VAE_PRESETS["seed64"]["scale"] == 0.5 ** 0.5
        assert [m.out_channels for m in model.encoder if isinstance(m, torch.nn.Conv2d)] == [32, 64, 128, 256]
    if name == "cartoon64":
        assert sum(p.numel() for p in model.parameters()) == pytest.approx(63.5e6, rel=0.01)
        preset = PRESETS[config.model["preset"]]
        assert preset["attn_resolutions"] == (32, 16, 8) and preset["ch"] * preset["ch_mult"][-1] == 512
