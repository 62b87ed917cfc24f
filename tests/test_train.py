"""The training loop against closed forms: bit-exact resume, checkpoint errors, NaN stop, the Gaussian's eps."""
import argparse
import json
import pickle
import warnings
import signal

import numpy as np
import pytest
import torch

from scoregen.models.checkpoint import (CheckpointError, TrainConfig, export_ema, load_checkpoint, read_checkpoint,
                                 save_checkpoint)
from scoregen.app.cli import main
from scoregen.data import load_dataset
from scoregen.models.nets import ARCHS, MLP, build_model
from scoregen.core.sde import VPSDE
from scoregen.models.train import Batches, Interrupted, model_config_for, train

GAUSS = {"mixture": "gauss2d", "n_train": 2048, "n_test": 16}


def config(out, **kw):
    base = dict(dataset="gmm", dataset_options=GAUSS, model={"arch": "mlp", "hidden": 32, "depth": 2},
                steps=12, batch_size=64, lr=1e-2, warmup=3, ema_decay=0.9, sample_every=0, ckpt_every=4,
                log_every=1, out=str(out))
    return TrainConfig(**{**base, **kw})


class Faulty(MLP):
    """An MLP with dropout (drawing on the global RNG) whose ``fail_at``-th training forward raises
    KeyboardInterrupt (a kill), sends the process SIGINT (Ctrl-C) or returns NaN."""

    def __init__(self, fail_at: int = 0, mode: str = "", **kw):
        super().__init__(**kw)
        self.fail_at, self.mode, self.calls = fail_at, mode, 0

    def forward(self, x, t):
        self.calls += self.training
        if self.calls == self.fail_at and self.mode == "interrupt":
            raise KeyboardInterrupt
        if self.calls == self.fail_at and self.mode == "ctrl-c":
            signal.raise_signal(signal.SIGINT)
        eps = torch.nn.functional.dropout(super().forward(x, t), 0.2, self.training)
        return eps * float("nan") if self.calls == self.fail_at and self.mode == "nan" else eps


def faulty(fail_at=0, mode=""):
    return lambda **kw: Faulty(fail_at, mode, **kw)


def assert_same_state(a, b):
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), (key, name)
    oa, ob = a["optimizer"]["state"], b["optimizer"]["state"]
    assert oa.keys() == ob.keys()
    for i in oa:
        for name in oa[i]:
            assert torch.equal(torch.as_tensor(oa[i][name]), torch.as_tensor(ob[i][name])), (i, name)
    assert torch.equal(a["rng"]["generator"], b["rng"]["generator"]) and a["step"] == b["step"]


def losses(run):
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


def test_killed_then_resumed_equals_uninterrupted(tmp_path, monkeypatch):
    """Killed at step 10 (last checkpoint at 8), resumed to 12: bit-exact equal to a straight run of 12,
    weights, EMA, Adam moments, generator state and the logged losses alike; dropout's global RNG too."""
    monkeypatch.setitem(ARCHS, "flaky", faulty())
    model = {"arch": "flaky", "dim": 2, "hidden": 32, "depth": 2}
    train(config(tmp_path / "straight", model=model), progress=False)

    monkeypatch.setitem(ARCHS, "flaky", faulty(10, "interrupt"))
    with pytest.raises(KeyboardInterrupt):
        train(config(tmp_path / "resumed", model=model), progress=False)
    assert read_checkpoint(tmp_path / "resumed" / "ckpt.pt")["step"] == 8
    monkeypatch.setitem(ARCHS, "flaky", faulty())
    with pytest.raises(FileExistsError, match="resume"):
        train(config(tmp_path / "resumed", model=model), progress=False)
    with pytest.raises(ValueError, match="cannot resume: lr"):
        train(config(tmp_path / "resumed", model=model, lr=1.0), resume=True, progress=False)
    train(config(tmp_path / "resumed", model=model), resume=True, progress=False)

    a, b = (read_checkpoint(tmp_path / run / "ckpt.pt") for run in ("straight", "resumed"))
    assert_same_state(a, b)
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed") and len(losses(tmp_path / "resumed")) == 12


def test_ctrl_c_saves_at_the_step_boundary_and_resumes_bit_exactly(tmp_path, monkeypatch, capsys):
    """Ctrl-C during step 7 (checkpoints every 4): the step finishes, a checkpoint at 7 is written, the
    command says so in one line (status 130); resumed, the run equals an uninterrupted one."""
    monkeypatch.setitem(ARCHS, "flaky", faulty())
    model = {"arch": "flaky", "dim": 2, "hidden": 32, "depth": 2}
    train(config(tmp_path / "straight", model=model), progress=False)
    monkeypatch.setitem(ARCHS, "flaky", faulty(7, "ctrl-c"))
    with pytest.raises(Interrupted, match="interrupted at step 7; checkpoint .*ckpt.pt, continue with --resume"):
        train(config(tmp_path / "resumed", model=model), progress=False)
    assert read_checkpoint(tmp_path / "resumed" / "ckpt.pt")["step"] == 7
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    monkeypatch.setitem(ARCHS, "flaky", faulty())
    train(config(tmp_path / "resumed", model=model), resume=True, progress=False)
    assert_same_state(*(read_checkpoint(tmp_path / run / "ckpt.pt") for run in ("straight", "resumed")))
    assert losses(tmp_path / "straight") == losses(tmp_path / "resumed")

    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(config(tmp_path / "cli", model=model).to_dict()))
    monkeypatch.setitem(ARCHS, "flaky", faulty(3, "ctrl-c"))
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--config", str(cfg), "--no-progress"])
    err = capsys.readouterr().err
    assert exit_.value.code == 130 and err.count("\n") == 1 and err.startswith("scoregen: interrupted at step 3")


def test_resume_refuses_fewer_steps_and_drops_a_partial_log_line(tmp_path, capsys):
    out = tmp_path / "run"
    train(config(out, steps=8), progress=False)
    saved_config = (out / "config.json").read_text()
    with pytest.raises(ValueError, match="cannot resume to steps=5: .* already at step 8; give steps > 8"):
        train(config(out, steps=5), resume=True, progress=False)
    assert (out / "config.json").read_text() == saved_config
    with (out / "log.jsonl").open("a") as f:
        f.write('{"step": 9, "lo')  # a run killed while writing its log
    train(config(out, steps=10), resume=True, progress=False)
    assert [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()] == list(range(1, 11))
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--out", str(out), "--resume", "--steps", "5", "--no-progress"])
    assert exit_.value.code == 2 and capsys.readouterr().err.startswith("scoregen: error: cannot resume to steps=5")


def test_cli_resume_extends_a_run(tmp_path, capsys):
    """`scoregen train` then `--resume --steps 8` continues the saved config; settings other than the
    step budget and cadence cannot change on resume."""
    out = tmp_path / "run"
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({k: v for k, v in config(out).to_dict().items() if k not in ("out", "steps")}))
    main(["train", "--config", str(cfg), "--out", str(out), "--steps", "4", "--no-progress"])
    main(["train", "--out", str(out), "--resume", "--steps", "8", "--no-progress"])
    ckpt = read_checkpoint(out / "ckpt.pt")
    assert ckpt["step"] == 8 and ckpt["config"]["lr"] == 1e-2 and ckpt["config"]["model"]["dim"] == 2
    assert json.loads((out / "config.json").read_text())["steps"] == 8
    with pytest.raises(SystemExit):
        main(["train", "--out", str(out), "--resume", "--steps", "9", "--seed", "1", "--no-progress"])
    assert capsys.readouterr().err.startswith("scoregen: error: cannot resume: seed differ")


def test_a_warmup_of_the_whole_run_warns(tmp_path):
    with pytest.warns(UserWarning, match="warmup 12 >= steps 12: the learning rate rises for the whole run and never "
                                         "holds at its peak lr 0.01"):
        train(config(tmp_path / "a", warmup=12), progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(config(tmp_path / "b", warmup=11), progress=False)
    assert not [w for w in caught if "warmup" in str(w.message)]


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setitem(ARCHS, "nan", faulty(7, "nan"))
    run = config(tmp_path, model={"arch": "nan", "dim": 2, "hidden": 32, "depth": 2}, log_every=50, ckpt_every=5)
    with pytest.raises(FloatingPointError, match="not finite at step 7"):
        train(run, progress=False)
    monkeypatch.setitem(ARCHS, "nan", faulty())
    model = load_checkpoint(tmp_path / "ckpt.pt", device="cpu")[0]
    assert read_checkpoint(tmp_path / "ckpt.pt")["step"] == 5
    assert all(bool(p.isfinite().all()) for p in model.parameters()) and not model.training


def test_checkpoint_file_errors(tmp_path):
    cfg = config(tmp_path, model={"arch": "mlp", "dim": 2, "hidden": 32, "depth": 2})
    good = save_checkpoint({"step": 3, "config": cfg.to_dict(),
                            "ema": MLP(dim=2, hidden=32, depth=2).state_dict()}, tmp_path / "good.pt")
    model, sde, cfg = load_checkpoint(good)
    assert isinstance(model, MLP) and isinstance(sde, VPSDE) and cfg.dataset == "gmm"

    data = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "truncated.pt")
    torch.save({"a": 1}, tmp_path / "foreign.pt")
    with pytest.raises(CheckpointError, match="not a scoregen checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")
    save_checkpoint({"version": 99}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        read_checkpoint(tmp_path / "future.pt")
    # a write that fails half-way leaves the previous file in place, and no temp file behind
    with pytest.raises((pickle.PicklingError, AttributeError)):  # a lambda does not pickle
        save_checkpoint({"step": 4, "bad": lambda: 0}, good)
    assert read_checkpoint(good)["step"] == 3 and sorted(p.name for p in tmp_path.iterdir()) == \
        ["foreign.pt", "future.pt", "good.pt", "truncated.pt"]


def test_a_checkpoint_of_pickled_objects_or_of_another_pickle_protocol(tmp_path, recwarn):
    """Objects are refused as such (not as corruption); a protocol other than torch.save's loads without torch's
    note on it."""
    torch.save({"format": "scoregen-checkpoint", "args": argparse.Namespace(lr=1)}, tmp_path / "objects.pt")
    with pytest.raises(CheckpointError, match=r"holds Python objects \(argparse.Namespace\), which are not loaded"):
        read_checkpoint(tmp_path / "objects.pt")
    torch.save({"format": "scoregen-checkpoint", "version": 1, "step": 2}, tmp_path / "p3.pt", pickle_protocol=3)
    assert read_checkpoint(tmp_path / "p3.pt")["step"] == 2
    assert not recwarn.list


def test_config_errors():
    with pytest.raises(ValueError, match="unknown config keys \\['stepz'\\]"):
        TrainConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="ema_decay must be in"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="device must be"):
        TrainConfig(device="tpu")
    for t_min in (0.0, 1.0, -0.1):  # the samplers' and the likelihoods' range
        with pytest.raises(ValueError, match=rf"t_min must be a number in \(0.0, 1.0\); got {t_min}"):
            TrainConfig(t_min=t_min)
    with pytest.raises(ValueError, match="model 'unet' takes images, and data set 'gmm' holds vectors: use --model "
                                         "mlp"):
        TrainConfig(dataset="gmm", model={"arch": "unet"})
    with pytest.raises(ValueError, match="model 'mlp' takes vectors, and data set 'digits' holds images"):
        TrainConfig(dataset="digits", model={"preset": "toy"})
    with pytest.raises(ValueError, match="config field 'steps' must be an integer; got '10' \\(str\\)"):
        TrainConfig.from_dict({"steps": "10"})
    with pytest.raises(ValueError, match="config field 'amp' must be true or false; got 1"):
        TrainConfig.from_dict({"amp": 1})
    with pytest.raises(ValueError, match="must be a JSON object of TrainConfig fields; got a list"):
        TrainConfig.from_dict([1])
    assert TrainConfig.from_dict({"lr": 1}).lr == 1  # JSON has one number type


@pytest.mark.parametrize("size, levels, attn", [(4, 3, 4), (8, 4, 8), (28, 3, 14), (32, 4, 16), (64, 4, 16)])
def test_the_default_unet_fits_any_image_size(size, levels, attn):
    config = model_config_for({}, "npz-x", (1, size, size))
    assert len(config["ch_mult"]) == levels and config["attn_resolutions"] == (attn,)
    net = build_model(config)
    assert net(torch.zeros(2, 1, size, size), torch.full((2,), 0.5)).shape == (2, 1, size, size)


def test_train_takes_its_data_path_on_the_command_line(tmp_path, capsys):
    images = np.random.default_rng(0).integers(0, 256, (20, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "faces.npz", x=images)
    main(["train", "--dataset", "npz", "--data-path", str(tmp_path / "faces.npz"), "--dataset-option",
          "test_fraction=0.25", "--steps", "2", "--warmup", "1", "--batch-size", "4", "--sample-every", "0", "--out",
          str(tmp_path / "run"), "--device", "cpu", "--no-progress"])
    saved = read_checkpoint(tmp_path / "run" / "ckpt.pt")["config"]
    assert saved["dataset_options"] == {"path": str(tmp_path / "faces.npz"), "test_fraction": 0.25}
    assert saved["model"]["image_size"] == 8 and saved["model"]["attn_resolutions"] == [8]
    with pytest.raises(SystemExit):
        main(["train", "--dataset", "npz", "--data-path", "a.npz", "--dataset-option", "path=b.npz"])
    assert capsys.readouterr().err.startswith("scoregen: error: give the data path once")


def test_training_learns_the_exact_gaussian_eps(tmp_path):
    """For data N(m, C) the ideal eps-network is linear, E[eps | x_t] = sigma C_t^{-1} (x_t - alpha m),
    C_t = alpha^2 C + sigma^2 I. The trained EMA network's squared error to it at t = 0.5 (summed over the
    2 dimensions) falls with the number of steps: 1.93 untrained (it predicts 0), ~0.05 after 25 steps,
    ~5e-4 after 600."""
    data = load_dataset("gmm", **GAUSS)
    sde, t = VPSDE(), 0.5
    x_t = data.oracle.sample(4000, generator=torch.Generator().manual_seed(1), t=t, sde=sde).float()
    target = data.oracle.eps(x_t.double(), t, sde).float()

    def error(model):
        with torch.no_grad():
            return (model(x_t, torch.full((len(x_t),), t)) - target).pow(2).sum(1).mean().item()

    run = config(tmp_path, model={"arch": "mlp", "hidden": 64, "depth": 2}, batch_size=256, lr=3e-3, warmup=20,
                 ema_decay=0.99, log_every=50, ckpt_every=0, steps=25)
    untrained = error(MLP(dim=2, hidden=64, depth=2))
    train(run, progress=False)
    early = error(load_checkpoint(tmp_path / "ckpt.pt", device="cpu")[0])
    run.steps = 600
    train(run, resume=True, progress=False)
    model = load_checkpoint(export_ema(tmp_path / "ckpt.pt", tmp_path / "ema.pt"), device="cpu")[0]
    late = error(model)
    assert untrained == pytest.approx(target.pow(2).sum(1).mean().item()) and untrained > 1.5
    assert early < 0.2 and late < 0.005 and late < early / 10, (untrained, early, late)


def test_shipped_digits_model():
    """scoregen/checkpoints/digits.pt: the committed config, <= 5 MB, and a held-out denoising loss far
    below the untrained network's E||eps||^2 = 1 (measured 0.077)."""
    from pathlib import Path

    from scoregen.models.train import denoising_loss

    path = Path(__file__).parents[1] / "scoregen" / "checkpoints" / "digits.pt"
    model, sde, cfg = load_checkpoint(path, device="cpu")
    committed = json.loads((path.parents[2] / "configs" / "digits.json").read_text())
    assert {k: v for k, v in cfg.to_dict().items() if k in committed} == committed
    assert path.stat().st_size <= 5e6 and not model.training
    data = load_dataset("digits")
    with torch.no_grad():
        loss = denoising_loss(model, data.test, generator=torch.Generator().manual_seed(0), sde=sde).item()
    assert loss < 0.1


def test_sample_grid_places_each_image_in_its_tile(tmp_path):
    """The PNG grid: image i at row i // 8, column i % 8, in a 1-pixel grey frame, upscaled by 256 // 80 = 3."""
    from PIL import Image

    from scoregen.models.train import save_samples

    levels = torch.randint(0, 17, (64, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    x = levels / 8 - 1

    class Drawn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.p = torch.nn.Parameter(torch.zeros(1))

        def sample(self, n, generator=None):
            return x[:n]

    save_samples(Drawn(), VPSDE(), (1, 8, 8), tmp_path / "grid.png")
    img = torch.from_numpy(np.array(Image.open(tmp_path / "grid.png"))).long()
    assert img.shape == (240, 240)
    tiles = img[::3, ::3].reshape(8, 10, 8, 10).permute(0, 2, 1, 3).reshape(64, 10, 10)
    assert torch.equal(tiles[:, 1:-1, 1:-1], ((x[:, 0] + 1) * 127.5).round().long())
    assert bool((tiles[:, 0] == 128).all())


def test_batches_walk_a_seeded_permutation_per_epoch():
    """10 items in batches of 3: 3 batches an epoch (the tail dropped), no item twice within an epoch, another
    permutation the next epoch, the same for the same seed whatever the step order (resume reads any step)."""
    batches = Batches(10, 3, seed=4, device=torch.device("cpu"))
    epoch0 = torch.cat([batches(step) for step in range(3)])
    assert epoch0.unique().numel() == 9 and not torch.equal(torch.cat([batches(s) for s in range(3, 6)]), epoch0)
    assert torch.equal(Batches(10, 3, seed=4, device=torch.device("cpu"))(4), batches(4))
    with pytest.raises(ValueError, match="batch_size must be at most the 10 training items; got 11"):
        Batches(10, 11, seed=0, device=torch.device("cpu"))
