"""torch.distributed with gloo: 2 CPU processes started here (as torchrun starts them: RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT), each with a timeout. The commands give the same samples at any world size, bit
for bit; DDP training with global batch B equals one process with batch B; a failing or killed rank ends
the run with rank 0's message and no result file."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import scoregen as sg
from scoregen.runtime import distributed
from scoregen.models.checkpoint import TrainConfig, read_checkpoint
from scoregen.app.cli import main
from scoregen.models.train import train

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


# bit-identical at equal threads per process: torchrun's (launch) run one each, and so does this process
SAMPLE = ["sample", DIGITS, "-n", "35", "--batch-size", "10", "--seed", "7", "--device", "cpu", "--threads", "1"]


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
    g = torch.Generator().manual_seed(7)  # chunk 0 is seeded with the seed itself
    x = sg.sample(model, sde, (10, 1, 8, 8), method, steps=5, generator=g, t_min=info.t_min).x
    assert np.array_equal(one[:10], x.numpy())


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
from scoregen.app.cli import main

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


def train_config(out, **kw) -> TrainConfig:
    """An MLP on a 2-D Gaussian without dropout (which draws per rank), 20 steps of global batch 64."""
    base = dict(dataset="gmm", dataset_options={"mixture": "gauss2d", "n_train": 2048, "n_test": 16},
                model={"arch": "mlp", "hidden": 32, "depth": 2}, steps=20, batch_size=64, lr=1e-2, warmup=3,
                ema_decay=0.9, sample_every=0, ckpt_every=10, log_every=5, out=str(out))
    return TrainConfig(**{**base, **kw})


def train_ranks(cfg: TrainConfig, world: int, cwd, *extra: str):
    path = Path(cwd) / "config.json"
    path.write_text(json.dumps(cfg.to_dict()))
    return scoregen(["train", "--config", str(path), "--no-progress", "--device", "cpu", *extra], world, cwd)


def max_difference(a: dict, b: dict) -> float:
    """The largest difference of the weights, the EMA and Adam's moments of two training checkpoints."""
    pairs = [(a[k][n], b[k][n]) for k in ("model", "ema") for n in a[k]]
    pairs += [(a["optimizer"]["state"][i][n], b["optimizer"]["state"][i][n]) for i in a["optimizer"]["state"]
              for n in ("exp_avg", "exp_avg_sq")]
    return max((x - y).abs().max().item() for x, y in pairs)


def test_ddp_training_equals_one_process_and_resumes_at_any_world_size(tmp_path):
    """20 steps of global batch 64 on 2 gloo processes (32 rows each) equal 20 single-process steps of batch 64
    to 1e-5; a 2-process run stopped at step 10 and resumed on 2 processes equals the straight one bit for bit,
    and resumed on 1 process, to 1e-5. The checkpoint records the world size and the global batch."""
    train(train_config(tmp_path / "one"), progress=False)
    train_ranks(train_config(tmp_path / "two"), 2, tmp_path)
    one, two = read_checkpoint(tmp_path / "one" / "ckpt.pt"), read_checkpoint(tmp_path / "two" / "ckpt.pt")
    assert one["step"] == two["step"] == 20 and max_difference(one, two) < 1e-5
    assert two["config"]["world_size"] == 2 and two["config"]["batch_size"] == 64 and two["world_size"] == 2
    assert one["config"]["world_size"] == 1

    train_ranks(train_config(tmp_path / "half", steps=10), 2, tmp_path)
    for world in (2, 1):
        (tmp_path / f"resumed{world}").mkdir()
        (tmp_path / f"resumed{world}" / "ckpt.pt").write_bytes((tmp_path / "half" / "ckpt.pt").read_bytes())
        train_ranks(train_config(tmp_path / f"resumed{world}", steps=10), world, tmp_path, "--resume", "--steps", "20")
    resumed2, resumed1 = (read_checkpoint(tmp_path / f"resumed{w}" / "ckpt.pt") for w in (2, 1))
    assert max_difference(resumed2, two) == 0 and resumed2["step"] == 20
    assert max_difference(resumed1, two) < 1e-5 and resumed1["config"]["world_size"] == 1
    logged = [json.loads(line)["step"] for line in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert logged == [5, 10, 15, 20]


def test_ddp_refuses_a_global_batch_that_does_not_split(tmp_path):
    r0, r1 = launch(["-m", "scoregen", "train", "--dataset", "gmm", "--batch-size", "63", "--steps", "2",
                     "--device", "cpu", "--out", str(tmp_path / "run")], 2, tmp_path)
    assert r0.returncode == 2 and "batch_size is the global batch, split over the 2 processes: it must be a " \
                                  "multiple of 2; got 63" in r0.stderr
    assert not (tmp_path / "run").exists()


def test_compare_on_two_processes_measures_the_same_samples(tmp_path):
    """``scoregen compare`` on 2 processes (4 chunks of 100 per row, a tuned-grid row tuned by rank 0 alone): the
    same table as one process, every metric equal, and only rank 0 writes and prints."""
    train(train_config(tmp_path / "model", steps=30), progress=False)
    argv = ["compare", "--dataset", "gmm", "--dataset-option", "mixture=gauss2d", "--quick", "--samplers",
            "ddim,sde,dpmpp-tuned", "--batch-size", "100", "--model", str(tmp_path / "model" / "ckpt.pt"),
            "--device", "cpu", "--no-progress", "--threads", "1"]
    main([*argv, "--out", str(tmp_path / "one"), "--cache-dir", str(tmp_path / "cache1")])
    r0, r1 = scoregen([*argv, "--out", str(tmp_path / "two"), "--cache-dir", str(tmp_path / "cache2")], 2, tmp_path)
    one, two = (json.loads((tmp_path / d / "compare.json").read_text()) for d in ("one", "two"))
    assert one["world_size"] == 1 and two["world_size"] == 2 and two["chunk"] == 100
    assert len(one["rows"]) == len(two["rows"]) == 5  # the data floor, ddim at 10 and 100, sde, dpmpp-tuned
    for a, b in zip(one["rows"], two["rows"]):
        assert {k: v for k, v in a.items() if k != "wall_s"} == {k: v for k, v in b.items() if k != "wall_s"}
    assert "| ddim |" in r0.stdout and r1.stdout == "" and "wrote" not in r1.stderr
    assert len(list((tmp_path / "cache2" / "grids").iterdir())) == 1


def test_likelihood_on_two_processes_gives_the_same_table(tmp_path):
    """``scoregen likelihood`` of 10 held-out digits in chunks of 5 (PF-ODE with 2 Hutchinson probes, the DDPM
    bound on 20 steps, the VAE's ELBO and IWAE): every number but the wall time equal for 1 and 2 processes."""
    argv = ["likelihood", "--ckpt", DIGITS, "--vae-ckpt", DIGITS.replace("digits.pt", "digits-vae.pt"), "-n", "10",
            "--batch-size", "5", "--probes", "2", "--bound-steps", "20", "--iwae-k", "3", "--device", "cpu",
            "--threads", "1"]
    main([*argv, "--out", str(tmp_path / "one.json")])
    r0, r1 = scoregen([*argv, "--out", str(tmp_path / "two.json")], 2, tmp_path)
    one, two = (json.loads((tmp_path / f).read_text()) for f in ("one.json", "two.json"))
    assert [r["quantity"] for r in one] == ["PF-ODE (Hutchinson x2, t_min=0.001)", "DDPM bound (K=20)", "ELBO",
                                            "IWAE (k=3)"] and all(r["n"] == 10 for r in one)
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in one] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in two]
    assert "PF-ODE" in r0.stdout and r1.stdout == ""
