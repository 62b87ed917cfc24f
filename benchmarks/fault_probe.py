"""The fault probe: bad inputs and faults, through the CLI and the Python API, each checked for the answer a
user should get.

A CLI case passes when the command exits with the expected status and prints one line on stderr, with no
traceback, that matches what it must say (the real cause, the argument's name); ``--debug`` keeps the status.
An API case passes when the call raises the expected exception whose message matches, or, where the input is
fine, returns. A fault (a file the user made, a full disk, a killed writer) passes when no result is lost or
mixed. Writes ``results/fault_probe.json`` (every case, and the counts) and prints the failures.

    python benchmarks/fault_probe.py            # about 3 minutes on the 2-core CPU
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np
import torch

from harness import machine, save_json

ROOT = Path(__file__).resolve().parents[1]
DIGITS, VAE = "scoregen/checkpoints/digits.pt", "scoregen/checkpoints/digits-vae.pt"


def cli_cases(d: Path) -> list[tuple]:
    """``(name, argv, status, what the line must match)``; files the cases read are made here in ``d``."""
    (d / "a_file").write_text("not a folder")
    np.savez(d / "empty.npz", images=np.zeros((0, 1, 8, 8), np.float32))
    torch.save({"obj": Path("x")}, d / "objects.pt")  # a pickle of an object that is not a tensor
    (d / "truncated.pt").write_bytes((ROOT / DIGITS).read_bytes()[:1000])
    return [
        ("train --t-min 0", ["train", "--dataset", "gmm", "--t-min", "0", "--out", f"{d}/t0"], 2, r"t.min"),
        ("train --out <file>", ["train", "--dataset", "gmm", "--out", f"{d}/a_file"], 2, r"folder"),
        ("train gmm with a unet", ["train", "--dataset", "gmm", "--model", "unet", "--out", f"{d}/u"], 2,
         r"unet|image"),
        ("train --steps 0", ["train", "--dataset", "gmm", "--steps", "0", "--out", f"{d}/s"], 2, r"--steps"),
        ("train --lr -1", ["train", "--dataset", "gmm", "--lr", "-1", "--out", f"{d}/s"], 2, r"\blr\b"),
        ("train --threads 0", ["train", "--dataset", "gmm", "--threads", "0", "--out", f"{d}/s"], 2, r"--threads"),
        ("train an empty npz", ["train", "--dataset", "npz", "--data-path", f"{d}/empty.npz", "--out", f"{d}/e"], 2,
         r"empty\.npz.*(no|0) (images|items)|(no|0) (images|items).*empty\.npz"),
        ("compare --tols abc", ["compare", "--tols", "abc"], 2, r"--tols"),
        ("compare --steps abc", ["compare", "--steps", "abc"], 2, r"--steps"),
        ("compare --cache-dir <file>", ["compare", "--dataset", "gmm", "--quick", "--cache-dir", f"{d}/a_file",
                                        "--out", f"{d}/c"], 2, r"a_file"),
        ("compare --out <file>", ["compare", "--dataset", "gmm", "--quick", "--out", f"{d}/a_file"], 2, r"a_file"),
        ("compare --n 1", ["compare", "--n", "1"], 2, r"\bn\b"),
        ("compare unknown sampler", ["compare", "--samplers", "nope"], 2, r"nope"),
        ("sample a missing file", ["sample", f"{d}/missing.pt"], 2, r"missing\.pt"),
        ("sample a truncated checkpoint", ["sample", f"{d}/truncated.pt"], 2, r"truncated|corrupt"),
        ("sample a pickle of objects", ["sample", f"{d}/objects.pt"], 2, r"object"),
        ("sample a VAE with a sampler", ["sample", VAE, "--method", "ddim"], 2, r"VAE"),
        ("sample --steps 0", ["sample", DIGITS, "--steps", "0"], 2, r"--steps|steps"),
        ("sample -n 1e11", ["sample", DIGITS, "-n", "100000000000", "--out", f"{d}/x.npz"], 2, r"GB|memory"),
        ("sample -n 0", ["sample", DIGITS, "-n", "0"], 2, r"-n"),
        ("sample unknown method", ["sample", DIGITS, "--method", "nope"], 2, r"nope"),
        ("sample bad option", ["sample", DIGITS, "--method", "ode", "-o", "rtol=-1"], 2, r"rtol"),
        ("sample --out into a file", ["sample", DIGITS, "--out", f"{d}/a_file/x.png"], 2, r"a_file"),
        ("sample --threads abc", ["sample", DIGITS, "--threads", "abc"], 2, r"--threads"),
        ("likelihood -n 0", ["likelihood", "-n", "0"], 2, r"-n"),
        ("likelihood a missing ckpt", ["likelihood", "--ckpt", f"{d}/missing.pt"], 2, r"missing\.pt"),
        ("tune-grid a stochastic sampler", ["tune-grid", DIGITS, "--method", "ddpm", "--steps", "5", "--out", f"{d}/g.json"], 2,
         r"ddpm"),
        ("export onto its source", ["export", DIGITS, DIGITS], 2, r"source|itself|same"),
        ("--debug keeps a user error's status", ["--debug", "sample", f"{d}/missing.pt"], 2, None),
    ]


def run_cli(argv) -> tuple[int, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "scoregen", *argv], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=600)
    return done.returncode, done.stderr


def check_cli(name, argv, status, pattern) -> dict:
    got, err = run_cli(argv)
    lines = [line for line in err.splitlines() if line.strip()]
    debug = argv[0] == "--debug"
    problems = [f"status {got}, not {status}"] if got != status else []
    if not debug:
        if "Traceback" in err:
            problems.append("a traceback")
        elif len(lines) != 1:
            problems.append(f"{len(lines)} lines")
        if pattern and not re.search(pattern, err):
            problems.append(f"the line does not say /{pattern}/")
    return dict(kind="cli", name=name, argv=argv, status=got, stderr=err[-2000:], ok=not problems,
                problems=problems)


def api_cases() -> list[tuple]:
    """``(name, call, exception type or None, what its message must match)``."""
    import scoregen as sg

    sde, mix = sg.VPSDE(), sg.data.preset("gmm2d")
    eps = mix.eps_model(sde)
    x = mix.sample(4, generator=torch.Generator().manual_seed(0))
    nan1 = torch.full((4, 2), math.nan)
    vae = sg.load_model(VAE, device="cpu")[0]
    latent = sg.load_model("scoregen/checkpoints/digits-latent.pt", device="cpu")[0]
    digits = torch.zeros(2, 1, 8, 8)
    elbo = sg.latent_elbo
    return [
        ("log_likelihood rtol < 0", lambda: sg.log_likelihood(eps, sde, x, rtol=-1e-5), ValueError, r"rtol"),
        ("log_likelihood atol < 0", lambda: sg.log_likelihood(eps, sde, x, atol=-1e-5), ValueError, r"atol"),
        ("log_likelihood rtol NaN", lambda: sg.log_likelihood(eps, sde, x, rtol=math.nan), ValueError, r"rtol"),
        ("log_likelihood NaN x", lambda: sg.log_likelihood(eps, sde, nan1), ValueError, r"\bx\b"),
        ("log_likelihood a str model", lambda: sg.log_likelihood("eps", sde, x), ValueError, r"model|callable"),
        ("latent_elbo rtol < 0", lambda: elbo(latent.vae, latent, sde, digits, rtol=-1.0), ValueError, r"rtol"),
        ("latent_elbo NaN x", lambda: elbo(latent.vae, latent, sde, digits * math.nan), ValueError, r"finite|NaN"),
        ("latent_elbo integer x", lambda: elbo(latent.vae, latent, sde, digits.long()), ValueError, r"float"),
        ("latent_elbo x of another shape", lambda: elbo(latent.vae, latent, sde, torch.zeros(2, 3, 32, 32)),
         ValueError, r"shape"),
        ("sample NaN x1", lambda: sg.sample(eps, sde, (4, 2), "ddim", 5, x1=nan1), ValueError, r"x1"),
        ("sample a str model", lambda: sg.sample("eps", sde, (4, 2), "ddim", 5), ValueError, r"model|callable"),
        ("sample grid as a list", lambda: sg.sample(eps, sde, (4, 2), "ddim", grid=[1.0, 0.5, 0.0]), None, None),
        ("sample a huge n", lambda: sg.sample(eps, sde, (10 ** 11, 2), "ddim", 5), ValueError, r"GB|memory"),
        ("sample an unknown method", lambda: sg.sample(eps, sde, (4, 2), "nope", 5), ValueError, r"nope"),
        ("sample steps 0", lambda: sg.sample(eps, sde, (4, 2), "ddim", 0), ValueError, r"steps"),
        ("sample a bad option", lambda: sg.sample(eps, sde, (4, 2), "ddim", 5, eta=-1), ValueError, r"eta"),
        ("vae.sample n 0", lambda: vae.sample(0), ValueError, r"\bn\b"),
    ]


def check_api(name, call, exc, pattern) -> dict:
    try:
        call()
        raised = None
    except Exception as e:  # the probe records whatever came out
        raised = e
    if exc is None:
        problems = [] if raised is None else [f"raised {type(raised).__name__}: {raised}"]
    elif raised is None:
        problems = ["accepted"]
    else:
        problems = [] if isinstance(raised, exc) else [f"{type(raised).__name__}, not {exc.__name__}"]
        if pattern and not re.search(pattern, str(raised)):
            problems.append(f"the message does not say /{pattern}/: {raised}")
    return dict(kind="api", name=name, raised=None if raised is None else f"{type(raised).__name__}: {raised}",
                ok=not problems, problems=problems)


def faults(d: Path) -> list[dict]:
    """Results that must not be lost or mixed: each a dict with ``ok``."""
    from scoregen.runtime.outputs import write_atomic

    out = []

    def fault(name, ok, detail=""):
        out.append(dict(kind="fault", name=name, ok=bool(ok), problems=[] if ok else [detail]))

    # a compare into a folder keeps the user's own pictures, and a full disk leaves the previous run whole
    folder = d / "cmp"
    folder.mkdir()
    (folder / "samples_final.png").write_bytes(b"mine")
    argv = ["compare", "--dataset", "gmm", "--quick", "--samplers", "ddim", "--out", str(folder),
            "--cache-dir", str(d / "cache"), "--no-progress"]
    status, err = run_cli(argv)
    fault("compare keeps the user's samples_final.png", status == 0 and (folder / "samples_final.png").exists(),
          err[-300:])
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    from scoregen.evaluation.compare import CompareSettings, compare
    real = os.fsync
    calls = []

    def full(fd):  # the third file written hits a full disk
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    with mock.patch("os.fsync", full):
        try:
            compare(CompareSettings("gmm", quick=True, samplers=["ddim", "dpmpp"], out=str(folder),
                                    cache_dir=str(d / "cache"), progress=False))
            raised = None
        except OSError as e:
            raised = e
    after = {p.name: p.read_bytes() for p in folder.iterdir()}
    fault("a full disk during compare leaves the previous run whole", raised is not None and after == before,
          f"raised {raised!r}; files {sorted(before)} -> {sorted(after)}")
    # an orphaned temporary file of a killed writer is removed by the next write
    target = d / "ckpt.pt"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = d / f".ckpt.pt.{dead.pid}.{socket.gethostname()}.x1y2z3w4.tmp"
    orphan.write_bytes(b"half a checkpoint")
    write_atomic(target, b"whole")
    fault("an orphaned .tmp of a killed writer is removed", not orphan.exists(), str(sorted(os.listdir(d))))
    return out


def main():
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/fault_probe.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    os.chdir(ROOT)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        cases = [check_cli(*case) for case in cli_cases(d)]
        cases += [check_api(*case) for case in api_cases()]
        cases += faults(d)
    counts = {kind: {"passed": sum(c["ok"] for c in cases if c["kind"] == kind),
                     "cases": sum(c["kind"] == kind for c in cases)} for kind in ("cli", "api", "fault")}
    for c in cases:
        if not c["ok"]:
            print(f"FAIL {c['kind']}: {c['name']}: {'; '.join(c['problems'])}")
    print(json.dumps(counts))
    save_json(args.out, dict(machine=machine(), wall_s=time.perf_counter() - start, counts=counts, cases=cases))


if __name__ == "__main__":
    main()
