"""The command line's messages for bad input (issue 35): one line, ``scoregen: error: <message>``, status 2, that
names the cause and what is allowed; what a finished command records."""
import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from scoregen.app.cli import main
from scoregen.models.checkpoint import TrainConfig, save_checkpoint
from scoregen.models.nets import MLP

TRAIN = ["train", "--steps", "2", "--batch-size", "8", "--warmup", "1", "--sample-every", "0", "--device", "cpu",
         "--no-progress"]
GMM = ["--dataset", "gmm", "--dataset-option", "n_train=64", "--dataset-option", "n_test=16"]


def error_of(argv, capsys) -> str:
    """Run the command, expect status 2 and one line on stderr (nothing before it); return that line."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("scoregen: error: "), err
    return err.strip()


def mlp_checkpoint(path, **config):
    """A checkpoint of an untrained 2-D MLP; ``config`` overrides fields of its saved config, unchecked."""
    saved = {**TrainConfig(dataset="gmm", model={"arch": "mlp", "dim": 2, "hidden": 16, "depth": 2}).to_dict(),
             **config}
    return save_checkpoint({"step": 1, "config": saved, "ema": MLP(dim=2, hidden=16, depth=2).state_dict()}, path)


def test_t_min_out_of_the_samplers_range_is_refused_at_training_and_named_in_an_old_checkpoint(tmp_path, capsys):
    assert "t_min must be a number in (0.0, 1.0); got 0.0" in error_of(
        [*TRAIN, *GMM, "--t-min", "0", "--out", str(tmp_path / "run")], capsys)
    assert not (tmp_path / "run").exists()
    old = mlp_checkpoint(tmp_path / "old.pt", t_min=0.0)  # written before training refused it
    for argv in (["sample", str(old), "--method", "ode"], ["sample", str(old), "--method", "sde"],
                 ["likelihood", "--ckpt", str(old), "--dataset", "gmm"]):
        err = error_of([*argv, "-n", "2", "--device", "cpu", "--out", str(tmp_path / "x.npz")], capsys)
        assert f"checkpoint {old} holds a training config that is no longer valid (t_min must be a number in " \
               "(0.0, 1.0); got 0.0); retrain the model" in err


def test_out_must_be_a_folder(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert error_of([*TRAIN, *GMM, "--out", str(tmp_path / "file")], capsys).endswith(
        f"--out {tmp_path / 'file'} is an existing file; --out must be a folder, the run's (it gets ckpt.pt, "
        "log.jsonl, config.json, samples)")


@pytest.mark.parametrize("dataset, model, want", [("gmm", "unet", "mlp"), ("toy", "unet", "mlp"),
                                                  ("digits", "mlp", "unet"), ("digits", "toy", "unet")])
def test_a_model_that_does_not_take_the_data_is_refused_up_front(tmp_path, capsys, dataset, model, want):
    argv = [*TRAIN, "--dataset", dataset, "--out", str(tmp_path / "run"),
            *(["--preset", model] if model == "toy" else ["--model", model])]
    err = error_of(argv, capsys)
    arch, kinds = ("mlp" if model == "toy" else model), {"unet": "images", "mlp": "vectors"}
    assert f"model {arch!r} takes {kinds[arch]}, and data set {dataset!r} holds {kinds[want]}: use --model {want} " \
           "(unet for images: digits, cartoon, folder; mlp for vectors: gmm, toy)" in err


def test_a_pickle_of_python_objects_is_not_called_corrupt(tmp_path, capsys):
    torch.save({"format": "scoregen-checkpoint", "args": argparse.Namespace(lr=1)}, tmp_path / "objects.pt")
    err = error_of(["sample", str(tmp_path / "objects.pt"), "--out", str(tmp_path / "x.npz")], capsys)
    assert err == (f"scoregen: error: {tmp_path / 'objects.pt'} holds Python objects (argparse.Namespace), which "
                   "are not loaded, for safety; a scoregen checkpoint holds only tensors and plain values")
    data = (tmp_path / "objects.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[:len(data) // 2])
    assert "truncated, corrupt or not written by torch.save" in error_of(
        ["sample", str(tmp_path / "cut.pt"), "--out", str(tmp_path / "x.npz")], capsys)


def test_an_npz_without_items_is_named(tmp_path, capsys):
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 8, 8), np.uint8))
    err = error_of([*TRAIN, "--dataset", "npz", "--data-path", str(tmp_path / "empty.npz"), "--out",
                    str(tmp_path / "run")], capsys)
    assert err.endswith(f"npz: {tmp_path / 'empty.npz'} holds no images or other items: its array 'x' has shape "
                        "(0, 8, 8)")


def test_a_diffusers_scheduler_field_of_the_wrong_type_is_named(tmp_path, capsys):
    diffusers = pytest.importorskip("diffusers")
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    diffusers.DDPMPipeline(unet=unet, scheduler=diffusers.DDPMScheduler()).save_pretrained(tmp_path / "pipe")
    config = tmp_path / "pipe" / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "num_train_timesteps": "abc"}))
    assert error_of(["sample", str(tmp_path / "pipe"), "--out", str(tmp_path / "x.npz")], capsys).endswith(
        f"{config}: field 'num_train_timesteps' must be an integer; got 'abc' (str)")


def test_an_adaptive_solvers_samples_record_its_tolerances_and_nfe_not_steps(tmp_path, capsys):
    ckpt = mlp_checkpoint(tmp_path / "m.pt")
    for solver, steps in (("dopri5", None), ("rk4", 4)):
        main(["sample", str(ckpt), "--method", "ode", "--steps", "4", "-o", f"solver={solver}", "-n", "2",
              "--device", "cpu", "--out", str(tmp_path / "x.npz")])
        f = np.load(tmp_path / "x.npz")
        options = json.loads(str(f["options"]))
        assert options["steps"] == steps and f"({int(f['nfe'])} NFE)" in capsys.readouterr().out
        assert (options["rtol"], options["atol"]) == ((1e-5, 1e-5) if steps is None else (None, None))


def test_a_sample_count_beyond_memory_is_refused_before_any_work(tmp_path, capsys):
    digits = Path(__file__).parents[1] / "scoregen/checkpoints/digits.pt"
    err = error_of(["sample", str(digits), "-n", "100000000000", "--device", "cpu",
                    "--out", str(tmp_path / "x.npz")], capsys)
    assert "shape (100000000000, 1, 8, 8) of torch.float32 needs about 102,400.0 GB" in err
    assert not (tmp_path / "x.npz").exists()
