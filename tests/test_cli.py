"""The `scoregen sample` and `scoregen likelihood` commands on the shipped digits models."""
import errno
import json
import os
import re
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from scoregen.app.cli import main
from scoregen.evaluation.compare.settings import parse_steps

SHIPPED = Path(str(resources.files("scoregen") / "checkpoints"))


def test_sample_writes_npz_with_the_counted_nfe_and_png(tmp_path, capsys):
    main(["sample", str(SHIPPED / "digits.pt"), "--method", "ddim", "--steps", "3", "-n", "4", "--device", "cpu",
          "--out", str(tmp_path / "x.npz")])
    f = np.load(tmp_path / "x.npz")
    assert f["x"].shape == (4, 1, 8, 8) and int(f["nfe"]) == 3 and np.isfinite(f["x"]).all()
    assert json.loads(str(f["options"]))["method"] == "ddim"
    main(["sample", "--ckpt", str(SHIPPED / "digits-vae.pt"), "--n", "16", "--device", "cpu",
          "--out", str(tmp_path / "x.png")])
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"
    assert "16 samples by vae (1 NFE)" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npz", "x.png"]  # no temporary files left


def test_a_vae_is_sampled_by_its_own_decoder_with_its_own_options(tmp_path, capsys):
    main(["sample", str(SHIPPED / "digits-vae.pt"), "-o", "mean=False", "-n", "8", "--device", "cpu",
          "--out", str(tmp_path / "x.npz")])
    f = np.load(tmp_path / "x.npz")
    assert int(f["nfe"]) == 1 and json.loads(str(f["options"])) == {"kind": "vae", "mean": False}
    assert np.allclose((f["x"] + 1) * 8, np.round((f["x"] + 1) * 8), atol=1e-5)  # draws lie on the 17-level grid
    assert "8 samples by vae (1 NFE)" in capsys.readouterr().out


def test_likelihood_table_of_the_shipped_vae(tmp_path):
    main(["likelihood", "--vae-ckpt", str(SHIPPED / "digits-vae.pt"), "-n", "32", "--iwae-k", "50",
          "--device", "cpu", "--out", str(tmp_path / "ll.json")])
    rows = {r["quantity"]: r for r in json.loads((tmp_path / "ll.json").read_text())}
    elbo, iwae = rows["ELBO"], rows["IWAE (k=50)"]
    # IWAE is the tighter bound; both lie between a good model and uniform over the 17 levels (4.087)
    assert iwae["bpd"] < elbo["bpd"] < np.log2(17) and iwae["bpd"] > 1.0 and iwae["nfe"] == 50


def error_of(argv, capsys, status=2) -> str:
    """Run the command, expect it to fail with ``status`` and one line on stderr; return that line."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == status and err.count("\n") == 1, err
    return err.strip()


DIGITS, VAE = str(SHIPPED / "digits.pt"), str(SHIPPED / "digits-vae.pt")


@pytest.mark.parametrize("argv, message", [
    (["sample", DIGITS, "--device", "tpu"], "device must be 'cpu', 'cuda' or 'cuda:N'; got 'tpu'"),
    (["sample", DIGITS, "--method", "ode", "-o", "eta=0.5"], "eta do not belong to method 'ode'"),
    (["sample", DIGITS, "-o", "eta"], "-o/--option takes KEY=VALUE; got 'eta'"),
    (["sample", DIGITS, "-o", "steps=7"], "-o/--option steps=7: steps has its own option, --steps"),
    (["sample", DIGITS, "--out", "x.jpg"], r"--out must end in .png or .npz; got x.jpg"),
    (["sample", DIGITS, "-n", "0"], "argument -n/--n: must be an integer >= 1; got '0'"),
    (["sample", VAE, "--method", "ddim"], "checkpoint .*digits-vae.pt holds a VAE, sampled in one decoder call: "
                                          "--method/--steps/--grid/--dtype do not apply"),
    (["sample", VAE, "--steps", "3"], "--method/--steps/--grid/--dtype do not apply"),
    (["sample", VAE, "-o", "eta=0.5"], "option\\(s\\) eta do not belong to a VAE's sampling .*its options: mean"),
    (["sample", VAE, "-o", "mean=false"], "mean must be True or False; got 'false'"),
    (["sample", str(SHIPPED)], "checkpoints is a folder, not a checkpoint file"),
    (["sample", "missing.pt"], "no model at missing.pt: give a scoregen checkpoint or a local diffusers folder"),
    (["sample", DIGITS, "--grid", "unifrom"], "--grid unifrom: neither a named grid \\(uniform, quadratic, log_snr, "
                                               "karras\\) nor a grid file"),
    (["tune-grid", DIGITS, "--steps", "3"], "the following arguments are required: --method"),
    (["tune-grid", DIGITS, "--method", "ddpm", "--steps", "3"], "method 'ddpm' with options {} is not a deterministic "
                                                                 "map of the prior draw"),
    (["tune-grid", DIGITS, "--method", "ddim", "--steps", "3", "-o", "eta=0.5"], "is not a deterministic map"),
    (["tune-grid", DIGITS, "--method", "ddim", "--steps", "3", "-o", "seed=1"], "seed has its own option, --seed"),
    (["tune-grid", VAE, "--method", "ddim", "--steps", "3"], "checkpoint .*digits-vae.pt holds a VAE, not an eps-net"),
    (["likelihood"], "give --ckpt and/or --vae-ckpt"),
    (["likelihood", "--vae-ckpt", DIGITS], "--vae-ckpt .*digits.pt holds an eps-network, not a VAE; use it as --ckpt"),
    (["likelihood", "--ckpt", VAE], "--ckpt .*digits-vae.pt holds a VAE, not an eps-network"),
    (["likelihood", "--vae-ckpt", VAE, "-n", "-1"], "argument -n: must be an integer >= 1; got '-1'"),
    pytest.param(["likelihood", "--vae-ckpt", VAE, "--device", "cuda:0"], "CUDA is not available here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here")),
    (["likelihood", "--vae-ckpt", VAE, "--batch-size", "0"], "argument --batch-size: must be an integer >= 1"),
    (["train", "--steps", "ten"], "argument --steps: must be an integer >= 1; got 'ten'"),
    (["compare", "--samplers", "ddpm,gan", "--quick"], "unknown sampler.*'gan'"),
])
def test_user_errors_are_one_line_and_write_nothing(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    out = [] if argv[0] in ("train", "compare") or "--out" in argv else ["--out", "x.png"]
    err = error_of(argv + (["--device", "cpu"] if "--device" not in argv else []) + out, capsys)
    assert err.startswith(("scoregen: error: ", f"scoregen {argv[0]}: error: ")) and re.search(message, err), err
    assert not list(tmp_path.iterdir())


def test_tune_grid_writes_a_grid_file_that_sample_runs_on(tmp_path, capsys):
    grid = tmp_path / "grid.json"
    main(["tune-grid", DIGITS, "--method", "ddim", "--steps", "3", "-n", "8", "--max-evals", "6", "--device", "cpu",
          "--no-progress", "--out", str(grid)])
    info = json.loads(grid.read_text())
    assert len(info["t"]) == 4 and (info["t"][0], info["t"][-1]) == (1.0, 0.0)
    assert {k: info[k] for k in ("method", "steps", "options", "n", "seed", "t_min")} == dict(
        method="ddim", steps=3, options={}, n=8, seed=0, t_min=1e-3)
    tuning, held_out = info["errors"]["tuning"], info["errors"]["held_out"]
    assert tuning.keys() == held_out.keys() == {"tuned", "uniform", "quadratic", "log_snr", "karras"}
    assert tuning["tuned"] <= min(tuning.values()) and info["evaluations"] <= 6
    out = capsys.readouterr().out
    assert re.search(r"tuning \(n=8, seed 0\): ode_err .* tuned vs .* best named \(\w+\)", out), out
    assert "held out (n=8, seed 1): ode_err" in out and f"ddim, 3 steps, tuned in {info['evaluations']} runs" in out
    main(["sample", DIGITS, "--method", "ddim", "--grid", str(grid), "-n", "4", "--device", "cpu",
          "--out", str(tmp_path / "x.npz")])
    f = np.load(tmp_path / "x.npz")
    assert int(f["nfe"]) == 3 and json.loads(str(f["options"]))["grid"] == "explicit"
    err = error_of(["sample", DIGITS, "--grid", str(grid), "--steps", "3", "--out", str(tmp_path / "y.png")], capsys)
    assert err == f"scoregen: error: --grid {grid} is a grid file, which fixes the steps: give no --steps"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.json", "x.npz"]


def test_parse_steps():
    assert parse_steps(None) is None
    assert parse_steps(["10,20"]) == [10, 20]
    assert parse_steps(["ddim=10,20", "ode-dopri5=1e-3"]) == {"ddim": [10, 20], "ode-dopri5": [1e-3]}
    with pytest.raises(ValueError, match="once as N,N"):
        parse_steps(["10", "ddim=5"])
    with pytest.raises(ValueError, match="'x' is not a number"):
        parse_steps(["10,x"])


def test_bad_files_are_named_in_one_line(tmp_path, capsys):
    (tmp_path / "random.pt").write_bytes(bytes(range(256)) * 8)
    err = error_of(["sample", str(tmp_path / "random.pt"), "--out", str(tmp_path / "x.png")], capsys)
    assert err == f"scoregen: error: {tmp_path / 'random.pt'} is not a readable checkpoint: truncated, corrupt " \
                  "or not written by torch.save"
    (tmp_path / "config.json").write_text("[1, 2]")
    err = error_of(["train", "--config", str(tmp_path / "config.json")], capsys)
    assert err.endswith("must hold a JSON object of TrainConfig fields; got a list")
    (tmp_path / "config.json").write_text('{"steps": "10"}')
    err = error_of(["train", "--config", str(tmp_path / "config.json"), "--out", str(tmp_path / "run")], capsys)
    assert err == "scoregen: error: config field 'steps' must be an integer; got '10' (str)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "random.pt"]


def test_export_refuses_to_overwrite_its_source(tmp_path, capsys):
    ckpt = tmp_path / "ckpt.pt"
    ckpt.write_bytes((SHIPPED / "digits.pt").read_bytes())
    err = error_of(["export", str(ckpt), str(tmp_path / "." / "ckpt.pt")], capsys)
    assert err.endswith("is the source checkpoint itself; choose another file")
    assert ckpt.read_bytes() == (SHIPPED / "digits.pt").read_bytes()


@pytest.mark.parametrize("argv", [["sample", "missing.pt", "--out"], ["likelihood", "--ckpt", "missing.pt", "--out"],
                                  ["compare", "--dataset", "gmm", "--quick", "--out"]])
def test_an_unwritable_destination_fails_before_any_work(tmp_path, capsys, argv):
    """The destination is checked first: a missing checkpoint is not even looked at."""
    (tmp_path / "file").write_text("")
    dest = tmp_path / "file" / ("res" if argv[0] == "compare" else "x.png" if argv[0] == "sample" else "ll.json")
    err = error_of(argv + [str(dest), "--device", "cpu"], capsys)
    assert err.startswith(f"scoregen: error: cannot write {dest}")


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    from scoregen.runtime import outputs

    def full_disk(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(outputs.os, "fsync", full_disk)
    err = error_of(["sample", DIGITS, "--steps", "2", "-n", "2", "--device", "cpu", "--out", str(tmp_path / "x.png")],
                   capsys, status=1)
    assert err == f"scoregen: error: cannot write {tmp_path / 'x.png'}: No space left on device"
    assert not list(tmp_path.iterdir())


def test_ctrl_c_is_one_line_with_status_130(monkeypatch, capsys):
    from scoregen.app import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "sample", (cli.COMMANDS["sample"][0], interrupted))
    assert error_of(["sample"], capsys, status=130) == "scoregen: interrupted"


def test_likelihood_of_the_face_models_puts_pixels_latents_and_the_vae_in_one_table(tmp_path, capsys):
    """cartoon-pixel.pt and cartoon.pt: the pixel model's PF-ODE and DDPM rows, the latent model's own VAE (N(0, I)
    prior) and that VAE with the diffusion prior; IWAE below ELBO, the diffusion prior below (better than) N(0, I),
    the pixel model best, as in the README's table; two latent models at once are refused."""
    main(["likelihood", "--ckpt", str(SHIPPED / "cartoon-pixel.pt"), "--ckpt", str(SHIPPED / "cartoon.pt"),
          "--dataset", "cartoon", "-n", "4", "--bound-steps", "100", "--prior-k", "2", "--iwae-k", "2",
          "--prior-divergence", "hutchinson", "--device", "cpu", "--out", str(tmp_path / "ll.json")])
    rows = {(r["model"], r["quantity"]): r for r in json.loads((tmp_path / "ll.json").read_text())}
    assert len(rows) == 6
    vae, prior = rows["VAE", "ELBO"]["bpd"], rows["VAE + diffusion prior", "ELBO, PF-ODE prior (Hutchinson)"]
    assert 4 < prior["bpd"] < vae < 6 and prior["nfe"] > 20
    assert rows["VAE + diffusion prior", "IWAE (k=2), PF-ODE prior (Hutchinson)"]["bpd"] < prior["bpd"]
    pf_ode, ddpm = rows["diffusion", "PF-ODE (Hutchinson x1, t_min=0.001)"], rows["diffusion", "DDPM bound (K=100)"]
    assert pf_ode["bpd"] < ddpm["bpd"] < prior["bpd"] and ddpm["nfe"] == 100
    with pytest.raises(SystemExit, match="^2$"):
        main(["--debug", "likelihood", "--ckpt", str(SHIPPED / "cartoon.pt"), "--ckpt", str(SHIPPED / "cartoon.pt"),
              "--dataset", "cartoon", "--device", "cpu"])
    assert "ValueError: --ckpt is given two latent diffusion models" in capsys.readouterr().err


def _raising(error):
    def raise_(*args, **kwargs):
        raise error
    return raise_


@pytest.mark.parametrize("error, status", [(ValueError("a bad argument"), 2), (FloatingPointError("diverged"), 1),
                                           (OSError(errno.ENOSPC, "No space left on device"), 1),
                                           (KeyboardInterrupt(), 130)])
def test_debug_shows_the_traceback_with_the_same_exit_status(monkeypatch, capsys, error, status):
    from scoregen.app import cli

    monkeypatch.setitem(cli.COMMANDS, "sample", (cli.COMMANDS["sample"][0], _raising(error)))
    for argv, env in ((["sample", "--debug"], "0"), (["--debug", "sample"], ""), (["sample"], "1")):
        monkeypatch.setenv("SCOREGEN_DEBUG", env)
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == status and err.startswith("Traceback (most recent call last):"), err
        assert err.endswith(f"{type(error).__name__}{': ' if str(error) else ''}{error}\n"), err


@pytest.mark.parametrize("command, required", [("train", []), ("export", ["a.pt", "b.pt"]), ("sample", []),
                                               ("tune-grid", ["a.pt", "--method", "ddim", "--steps", "3"]),
                                               ("likelihood", []), ("compare", [])])
def test_every_command_runs_on_the_threads_it_is_given(monkeypatch, command, required):
    from scoregen.app import cli

    threads, seen = torch.get_num_threads(), []
    monkeypatch.setitem(cli.COMMANDS, command, (cli.COMMANDS[command][0],
                                                lambda args: seen.append(torch.get_num_threads())))
    main([command, "--threads", "3", *required])
    main(["--threads", "2", command, *required])
    assert seen == [3, 2] and torch.get_num_threads() == threads  # set while the command runs


def test_auto_threads_leave_the_cores_that_the_load_keeps_busy(monkeypatch):
    from scoregen.app import cli

    threads = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    torch.set_num_threads(4)  # torch's default
    try:
        for load, auto in ((0.3, 4), (4.6, 3), (6.8, 1), (20.0, 1)):
            monkeypatch.setattr(os, "getloadavg", lambda: (load, 0.0, 0.0))
            assert cli.auto_threads() == auto, load
        monkeypatch.setenv("OMP_NUM_THREADS", "4")  # given (torchrun gives 1): torch's default, whatever the load
        assert cli.auto_threads() == 4
    finally:
        torch.set_num_threads(threads)


def test_threads_below_one_are_refused(capsys):
    err = error_of(["likelihood", "--threads", "0"], capsys)
    assert err.endswith("argument --threads: must be an integer >= 1 or auto; got '0' (see scoregen likelihood --help)")


def test_a_bad_tolerance_names_tols(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert error_of(["compare", "--tols", "1e-3,abc", "--device", "cpu"], capsys) == \
        "scoregen: error: --tols: 'abc' is not a number"
    assert error_of(["compare", "--steps", "ddim=5,x", "--device", "cpu"], capsys) == \
        "scoregen: error: --steps ddim: 'x' is not a number"
    assert not list(tmp_path.iterdir())


def test_a_cache_dir_that_is_a_file_fails_before_any_work(tmp_path, monkeypatch, capsys):
    from scoregen.models import zoo

    monkeypatch.setattr(zoo, "model_for", _raising(AssertionError("a model was looked for")))
    (tmp_path / "cache").write_text("")
    err = error_of(["compare", "--dataset", "gmm", "--quick", "--cache-dir", str(tmp_path / "cache"), "--out",
                    str(tmp_path / "out"), "--device", "cpu"], capsys)
    assert err == f"scoregen: error: cannot write into {tmp_path / 'cache'}: it exists and is not a folder"
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]
