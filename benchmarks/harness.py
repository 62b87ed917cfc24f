"""The benchmarks' one timing harness: the clock, interleaved repeats with medians, the peak-memory probe,
a CUDA-graph wrapper of the network call, the machine description, the shared options and the result file.

The scripts here import it as a sibling module (``python benchmarks/<name>.py`` puts this folder first on
``sys.path``); ``tests/test_harness.py`` loads it from its path.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import torch


# --- timing --------------------------------------------------------------------------------------------

def clock(fn, device: torch.device):
    """(seconds, fn()): CUDA events around fn on a GPU (synchronised before and after), else perf_counter."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        out = fn()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / 1e3, out
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


class CallTimer:
    """``eps`` with the wall time spent inside it summed in ``seconds`` (CPU only: on a GPU a call
    returns before its kernels have run)."""

    def __init__(self, eps):
        self.eps, self.seconds = eps, 0.0

    def __call__(self, x, t):
        start = time.perf_counter()
        out = self.eps(x, t)
        self.seconds += time.perf_counter() - start
        return out


class PeakMemory:
    """Peak memory of a block in MiB: CUDA's peak allocation, or on the CPU the process's peak RSS
    (VmHWM, reset through /proc/self/clear_refs; where that is not allowed, ru_maxrss, the peak so far)."""

    def __init__(self, device: torch.device):
        self.device, self.base = device, None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device) / 2 ** 20
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")
                self.source = "VmHWM"
            except OSError:
                self.source = "ru_maxrss"
            self.base = self.rss()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.peak = torch.cuda.max_memory_allocated(self.device) / 2 ** 20
        else:
            self.peak = self.rss(self.source)
        return False

    @staticmethod
    def rss(field: str = "VmRSS") -> float:
        if field == "ru_maxrss":
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 10
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2 ** 10
        return float("nan")


def interleaved(fns: dict, device: torch.device, repeats: int, timer: CallTimer | None = None) -> dict:
    """Run every fn of ``fns`` once a round for ``repeats`` rounds (load that drifts hits all alike).
    Per key: the median seconds, all seconds, the median in-network seconds (``timer``), the highest
    peak and the first base memory (MiB); and the key's last output."""
    runs, outs = {k: [] for k in fns}, {}
    for _ in range(repeats):
        for k, fn in fns.items():
            if timer is not None:
                timer.seconds = 0.0
            with PeakMemory(device) as mem:
                seconds, outs[k] = clock(fn, device)
            runs[k].append((seconds, timer.seconds if timer is not None else None, mem))
    stats = {}
    for k, r in runs.items():
        seconds = [s for s, _, _ in r]
        stats[k] = dict(seconds=statistics.median(seconds), seconds_repeats=seconds,
                        network_seconds=statistics.median(n for _, n, _ in r) if timer is not None else None,
                        peak_mem_mib=max(m.peak for _, _, m in r), base_mem_mib=r[0][2].base)
    return {k: (stats[k], outs[k]) for k in fns}


class GraphedEps:
    """``eps(x, t)`` replayed from a CUDA graph captured on the first call of each input shape:
    copy x and t into static buffers, replay, return a copy of the static output (RK solvers
    keep several evaluations alive). Fixed-step samplers at a fixed batch replay one graph."""

    def __init__(self, eps):
        self.eps, self.graphs = eps, {}

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.dtype)
        if key not in self.graphs:
            self.graphs[key] = self.capture(x, t)
        graph, x_static, t_static, eps_static = self.graphs[key]
        x_static.copy_(x)
        t_static.copy_(t)
        graph.replay()
        return eps_static.clone()

    def capture(self, x: torch.Tensor, t: torch.Tensor):
        x_static = x.clone()
        t_static = torch.empty(x.shape[0], dtype=t.dtype, device=x.device).copy_(t)  # t may come from the host
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the default stream, as torch.cuda.graphs asks
            for _ in range(3):
                self.eps(x_static, t_static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            eps_static = self.eps(x_static, t_static)
        return graph, x_static, t_static, eps_static


# --- the record ----------------------------------------------------------------------------------------

def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine(device: torch.device | str = "cpu") -> dict:
    """What ran the benchmark: device, CPU model and count, torch's intra-op threads, torch and Python
    versions, the load average now (``load_avg_start``); on CUDA the GPU's name and CUDA's version."""
    device = torch.device(device)
    info = dict(device=str(device), cpu=cpu_model(), cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(),
                torch=torch.__version__, python=platform.python_version(), load_avg_start=os.getloadavg())
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda)
    return info


def save_json(path: Path, result: dict) -> Path:
    """Write ``result`` as indented JSON to ``path`` (folders made), headed by the date, the command line
    and the machine: ``result["machine"]`` (take ``machine(device)`` when the run starts), else this
    machine's CPU description now; either way with the load average at the end (``load_avg_end``)."""
    path = Path(path)
    info = dict(result.get("machine") or machine(), load_avg_end=os.getloadavg())
    record = {"date": datetime.now().astimezone().isoformat(timespec="seconds"),
              "command": shlex.join([Path(sys.executable).name, *sys.argv]), "machine": info,
              **{k: v for k, v in result.items() if k != "machine"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=float) + "\n")
    return path


# --- the options ---------------------------------------------------------------------------------------

def device_name(name: str) -> str:
    """A ``--device`` value: a torch device name, CUDA only where it is available."""
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{name}: CUDA is not available (torch {torch.__version__}, "
                                         f"cuda {torch.version.cuda}); use --device cpu")
    return name


def positive_int(text: str) -> int:
    """An option's integer, at least 1."""
    if int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {text}")
    return int(text)


def shared_options(out: Path | None, out_help: str = "result JSON (default: %(default)s)", *, device: bool = True,
                   repeats: int | None = None) -> argparse.ArgumentParser:
    """The options the benchmarks share, as an argparse parent (``parents=[shared_options(...)]``): ``--out``
    (default ``out``), ``--device`` (cpu or an available cuda[:i]) unless ``device=False``, and
    ``--repeats`` where a default is given."""
    p = argparse.ArgumentParser(add_help=False)
    if device:
        p.add_argument("--device", type=device_name, default="cpu", help="cpu or cuda[:i] (default: cpu)")
    p.add_argument("--out", type=Path, default=out, help=out_help)
    if repeats is not None:
        p.add_argument("--repeats", type=positive_int, default=repeats,
                       help="timed repeats; the median is reported (default: %(default)s)")
    return p
