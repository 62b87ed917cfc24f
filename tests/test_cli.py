"""The `scoregen sample` and `scoregen likelihood` commands on the shipped digits models."""
import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from scoregen.cli import main

SHIPPED = Path(str(resources.files("scoregen") / "checkpoints"))


def test_sample_writes_npz_with_the_counted_nfe_and_png(tmp_path, capsys):
    main(["sample", str(SHIPPED / "digits.pt"), "--method", "ddim", "--steps", "3", "-n", "4", "--device", "cpu",
          "--out", str(tmp_path / "x.npz")])
    f = np.load(tmp_path / "x.npz")
    assert f["x"].shape == (4, 1, 8, 8) and int(f["nfe"]) == 3 and np.isfinite(f["x"]).all()
    assert json.loads(str(f["options"]))["method"] == "ddim"
    main(["sample", "--ckpt", str(SHIPPED / "digits-vae.pt"), "--method", "vae", "--n", "16", "--device", "cpu",
          "--out", str(tmp_path / "x.png")])
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"
    assert "16 samples by vae (1 NFE)" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz", "x.png"]  # no temporary files left


def test_sample_option_errors_are_named(tmp_path):
    with pytest.raises(ValueError, match="eta.*do not belong to method 'ode'"):
        main(["sample", str(SHIPPED / "digits.pt"), "--method", "ode", "-o", "eta=0.5", "--device", "cpu",
              "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        main(["sample", str(SHIPPED / "digits.pt"), "-o", "eta", "--out", str(tmp_path / "x.png")])
    with pytest.raises(SystemExit, match=r"\.png or \.npz"):
        main(["sample", str(SHIPPED / "digits.pt"), "--out", str(tmp_path / "x.jpg")])


def test_likelihood_table_of_the_shipped_vae(tmp_path):
    main(["likelihood", "--vae-ckpt", str(SHIPPED / "digits-vae.pt"), "-n", "32", "--iwae-k", "50",
          "--device", "cpu", "--out", str(tmp_path / "ll.json")])
    rows = {r["quantity"]: r for r in json.loads((tmp_path / "ll.json").read_text())}
    elbo, iwae = rows["ELBO"], rows["IWAE (k=50)"]
    # IWAE is the tighter bound; both lie between a good model and uniform over the 17 levels (4.087)
    assert iwae["bpd"] < elbo["bpd"] < np.log2(17) and iwae["bpd"] > 1.0 and iwae["nfe"] == 50
    with pytest.raises(SystemExit, match="--ckpt and/or --vae-ckpt"):
        main(["likelihood"])


def test_every_command_names_a_bad_device(tmp_path):
    with pytest.raises(ValueError, match="device must be 'cpu', 'cuda' or 'cuda:N'; got 'tpu'"):
        main(["sample", str(SHIPPED / "digits.pt"), "--device", "tpu", "--out", str(tmp_path / "x.png")])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available here"):
            main(["likelihood", "--vae-ckpt", str(SHIPPED / "digits-vae.pt"), "--device", "cuda:0"])
    assert not list(tmp_path.iterdir())
