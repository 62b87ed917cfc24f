"""torch.distributed with gloo: 2 CPU processes started here (as torchrun starts them: RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT), each with a timeout. The commands give the same samples at any world size, bit
for bit; DDP training with global batch B equals one process with batch B; a failing or killed rank ends
the run with rank 0's message and no result file."""
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import scoregen as sg
from scoregen import distributed
from scoregen.checkpoint import TrainConfig, read_checkpoint
from scoregen.cli import main
from scoregen.train import train

DIGITS = str(Path(sg.__file__).parent / "checkpoints" / "digits.pt")
TIMEOUT = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], world: int, cwd, timeout: float = TIMEOUT) -> list[subprocess.CompletedProcess]:
    """``python <args>`` in ``world`` processes of one gloo group; every process is killed at ``timeout``."""
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": str(world),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(sg.__file__).parents[1])}
    procs = [subprocess.Popen([sys.executable, *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(world)]
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    finally:
        for p in procs:
            p.kill()
    return results


def scoregen(argv: list[str], world: int, cwd) -> list[subprocess.CompletedProcess]:
    results = launch(["-m", "scoregen", *argv], world, cwd)
    assert all(r.returncode == 0 for r in results), [r.stderr[-2000:] for r in results]
    return results


SAMPLE = ["sample", DIGITS, "-n", "35", "--batch-size", "10", "--seed", "7", "--device", "cpu"]


@pytest.mark.parametrize("method", ["ddim", "ddpm"])
def test_sample_is_the_same_for_one_and_two_processes(tmp_path, method):
    """35 samples in chunks of 10 (4 chunks, rank 0 draws 0 and 2, rank 1 draws 1 and 3): the 2-process run
    equals this process's, bit for bit, for a deterministic and a stochastic sampler; only rank 0 writes."""
    argv = [*SAMPLE, "--method", method, "--steps", "5"]
    main([*argv, "--out", str(tmp_path / "one.npz")])
    runs = scoregen([*argv, "--out", str(tmp_path / "two.npz")], 2, tmp_path)
    one, two = np.load(tmp_path / "one.npz")["x"], np.load(tmp_path / "two.npz")["x"]
    assert one.shape == (35, 1, 8, 8) and np.array_equal(one, two)
    assert "35 samples by" in runs[0].stdout and runs[1].stdout == ""
    g = torch.Generator().manual_seed(distributed.chunk_seed(7, 3))  # chunk 3: the last 5, drawn by rank 1
    model, sde, info = sg.load_model(DIGITS, device="cpu")
    x = sg.sample(model, sde, (5, 1, 8, 8), method, steps=5, generator=g, t_min=info.t_min).x
    assert np.array_equal(one[30:], x.numpy())


def test_chunk_zero_is_seeded_with_the_seed_and_chunks_differ():
    assert distributed.chunk_seed(5, 0) == 5
    seeds = {distributed.chunk_seed(s, k) for s in range(3) for k in range(1, 100)}
    assert len(seeds) == 297 and all(0 <= s < 2 ** 63 for s in seeds)
    assert distributed.chunks(35, 10) == [(0, 10), (10, 10), (20, 10), (30, 5)]
    with pytest.raises(ValueError, match="chunk .*--batch-size.* positive integer"):
        distributed.chunks(10, 0)


def test_the_torchrun_launcher(tmp_path):
    """torchrun itself (standalone rendezvous): the same samples as one process."""
    argv = [*SAMPLE, "--method", "ddim", "--steps", "3"]
    main([*argv, "--out", str(tmp_path / "one.npz")])
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "scoregen", *argv, "--out", str(tmp_path / "two.npz")], cwd=tmp_path,
                       capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert np.array_equal(np.load(tmp_path / "one.npz")["x"], np.load(tmp_path / "two.npz")["x"])


FAILING = """
import os, signal, sys
from scoregen import samplers
from scoregen.cli import main

def fail(*args, **kwargs):
    if {mode!r} == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise ValueError("the network returned nothing")

if os.environ["RANK"] == "1":
    samplers.METHODS["ddim"] = fail
main(sys.argv[1:])
"""


@pytest.mark.parametrize("mode", ["raise", "kill"])
def test_a_failing_rank_stops_the_run_with_a_message_and_no_file(tmp_path, mode):
    """Rank 1's sampler raises (or rank 1 is killed): rank 0 exits 1 naming what happened, writes nothing."""
    (tmp_path / "failing.py").write_text(FAILING.format(mode=mode))
    out = tmp_path / "samples.npz"
    r0, r1 = launch(["failing.py", *SAMPLE, "--out", str(out)], 2, tmp_path)
    assert r0.returncode == 1 and not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "failing.py"]
    if mode == "raise":
        assert "scoregen: rank 0: error: rank 1 of 2 failed while computing samples: ValueError: the network " \
               "returned nothing; nothing was written" in r0.stderr
        assert r1.returncode == 2 and "scoregen: rank 1: error: the network returned nothing" in r1.stderr
    else:
        assert "a process of the run stopped" in r0.stderr and "nothing was written" in r0.stderr
        assert r1.returncode == -9
    assert "Traceback" not in r0.stderr
