"""How sampling and training scale with the number of torchrun processes, and what one rank's call costs.

For each world size W (``--worlds``), ``torchrun --standalone --nproc_per_node=W`` runs

    sampling   ``scoregen sample`` of the shipped digits U-Net: ``--n`` samples by DDIM at 10 NFE in chunks of
               ``--chunk`` (the time it prints: sampling and the gather to rank 0, not process start-up);
    training   ``scoregen train`` of the digits U-Net at global batch 128 (steps/s of the last log lines),

each process at one thread, so W processes use W cores; a run of one process at W threads is the baseline
that uses the same cores without torch.distributed. The per-call cost of one rank is the median time of one
network call at batch ``--chunk`` for the digits U-Net and DDPM's CIFAR-10 U-Net (``cifar32``, untrained; at
batch 64 at most on a CPU), with its FLOPs per sample counted by ``torch.utils.flop_counter``; from it, the
expected time of 50,000 CIFAR-size samples at 10 NFE on ``--project-gpus`` processes of this device is

    ceil(50,000 / (P chunk)) chunks per process x 10 calls x (one call at batch chunk),

and, as an estimate beside it, the FLOPs of those 500,000 calls over P devices that each sustain
``--assume-tflops`` (an assumption, not a measurement: a GPU run of this script measures the per-call cost).

    python benchmarks/distributed_scaling.py                      # CPU: 1 and 2 gloo processes, ~4 min
    python benchmarks/distributed_scaling.py --device cuda --worlds 1 --chunk 500   # one GPU: its per-call cost

Writes results/distributed_<device>.json and .png next to this file.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

import scoregen as sg
from scoregen.models.nets import build_model

from harness import interleaved, machine, save_json, shared_options

HERE = Path(__file__).parent
DIGITS = Path(sg.__file__).parent / "checkpoints" / "digits.pt"


def torchrun(world: int, argv: list[str], threads: int, cwd: Path) -> str:
    """stdout of ``scoregen <argv>`` on ``world`` processes of ``threads`` threads each."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={world}",
           "-m", "scoregen", *argv]
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return r.stdout


def sampling_seconds(world: int, threads: int, args, cwd: Path) -> float:
    out = torchrun(world, ["sample", str(DIGITS), "-n", str(args.n), "--batch-size", str(args.chunk), "--method",
                           "ddim", "--steps", "10", "--device", args.device, "--out", str(cwd / "x.npz")], threads, cwd)
    return float(re.search(r"in ([0-9.]+) s", out).group(1))


def training_rate(world: int, threads: int, args, cwd: Path) -> float:
    run = cwd / f"train{world}x{threads}"
    torchrun(world, ["train", "--dataset", "digits", "--steps", str(args.train_steps), "--batch-size", "128",
                     "--sample-every", "0", "--ckpt-every", "0", "--device", args.device, "--no-progress",
                     "--out", str(run)], threads, cwd)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return statistics.mean(r["steps_per_s"] for r in rows[1:])  # the first interval holds the warm-up


def per_call(preset: str, batch: int, device: torch.device, repeats: int) -> dict:
    """Median ms of one network call at ``batch``, its peak memory and the FLOPs of one sample's call."""
    from torch.utils.flop_counter import FlopCounterMode

    net = build_model({"preset": preset}).to(device).eval()
    shape = (net.in_channels, net.image_size, net.image_size)
    with torch.no_grad():
        with FlopCounterMode(display=False) as counter:
            net(torch.zeros((1, *shape), device=device), torch.full((1,), 0.5, device=device))
        x, t = torch.randn((batch, *shape), device=device), torch.full((batch,), 0.5, device=device)
        net(x, t)  # warm-up
        stats, _ = interleaved({"call": lambda: net(x, t)}, device, repeats)["call"]
    return {"batch": batch, "ms_per_call": 1e3 * stats["seconds"], "gflop_per_sample": counter.get_total_flops() / 1e9,
            "peak_mem_mib": stats["peak_mem_mib"]}


def main():
    shared = shared_options(None, repeats=5, out_help="JSON path; the plot goes beside it "
                            "(default: results/distributed_<device>.json here)")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                parents=[shared])
    p.add_argument("--worlds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--n", type=int, default=4000, help="samples of the sampling runs (default: 4000)")
    p.add_argument("--chunk", type=int, default=250, help="samples per chunk (--batch-size; default: 250)")
    p.add_argument("--train-steps", type=int, default=300)
    p.add_argument("--project-gpus", type=int, default=8)
    p.add_argument("--assume-tflops", type=float, default=200.0,
                   help="sustained TFLOP/s per GPU of the FLOP-bound estimate (default: 200, a fifth of an H100's "
                        "dense bf16 peak)")
    args = p.parse_args()
    if args.train_steps < 100:
        p.error(f"--train-steps must be at least 100 (two of training's 50-step log intervals, the first of them "
                f"warm-up); got {args.train_steps}")
    device = torch.device(args.device)
    info = machine(device)
    # W processes of one thread each, and the baseline on the same cores: one process of W threads
    setups = [(1, 1)] + [setup for w in args.worlds if w > 1 for setup in ((w, 1), (1, w))]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for processes, threads in setups:
            rows.append({"processes": processes, "threads_each": threads,
                         "sample_s": sampling_seconds(processes, threads, args, Path(tmp)),
                         "train_steps_per_s": training_rate(processes, threads, args, Path(tmp))})
            print(rows[-1], flush=True)
    torch.set_num_threads(1)
    cifar_batch = min(args.chunk, 64) if device.type == "cpu" else args.chunk  # a CPU call of 500 takes a minute
    calls = {"digits": per_call("digits", args.chunk, device, args.repeats),
             "cifar32": per_call("cifar32", cifar_batch, device, args.repeats)}
    cifar = calls["cifar32"]
    chunks_each = math.ceil(50_000 / (args.project_gpus * cifar["batch"]))
    projection = {"samples": 50_000, "nfe": 10, "processes": args.project_gpus, "chunk": cifar["batch"],
                  "seconds": chunks_each * 10 * cifar["ms_per_call"] / 1e3,
                  "tflop_total": 50_000 * 10 * cifar["gflop_per_sample"] / 1e3, "assumed_tflops": args.assume_tflops}
    projection["seconds_at_assumed_tflops"] = projection["tflop_total"] / (args.project_gpus * args.assume_tflops)
    base = next(r for r in rows if r["processes"] == 1 and r["threads_each"] == 1)
    for r in rows:
        r["sample_speedup"] = base["sample_s"] / r["sample_s"]
        r["train_speedup"] = r["train_steps_per_s"] / base["train_steps_per_s"]
    result = {"machine": info, "device": info["device"], "cpu": info["cpu"], "torch": info["torch"],
              "gpu": info.get("gpu"), "n": args.n, "chunk": args.chunk, "runs": rows, "per_call": calls,
              "projection_cifar_50k": projection}
    out = save_json(args.out or HERE / "results" / f"distributed_{device.type}.json", result)
    plot(rows, out.with_suffix(".png"), result)
    print(json.dumps(result, indent=1))


def plot(rows: list[dict], path: Path, result: dict):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['processes']} proc x {r['threads_each']} thr" for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.2))
    xs = range(len(rows))
    ax.bar([x - 0.2 for x in xs], [r["sample_speedup"] for r in rows], 0.4, label="sampling")
    ax.bar([x + 0.2 for x in xs], [r["train_speedup"] for r in rows], 0.4, label="training")
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("speed-up over 1 process x 1 thread")
    ax.set_title(f"digits U-Net, {result['device']}: {result['n']} samples in chunks of {result['chunk']}", fontsize=9)
    ax.axhline(1, color="grey", lw=0.5)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
