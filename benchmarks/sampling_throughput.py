"""Sampling throughput and sampler overhead (issue 8), against peers on the same network and device.

For each sampler at a fixed number of network calls (NFE), batch size and network: images/s, ms per
network call, peak memory, and the overhead ratio

    overhead = sampler wall time / (NFE x one network call at the same batch size)

(1.00: the sampler costs nothing beyond its network calls). On the CPU the time spent inside the
network during the timed run is summed as well (``overhead_in_run``: immune to load drifting between
the two measurements), and every run is repeated with a free network (``free_ms_per_call``: the
sampler's own cost per call, so overhead ~ 1 + free_ms_per_call / ms_per_call on any network).
Peers: the ``diffusers`` DDPM and DDIM scheduler loops driving the same network, and the
probability-flow ODE solved by scipy's RK45 on the host with a device round trip per evaluation (as
score_sde_pytorch does) against torchdiffeq's dopri5 on the device at the same tolerance. Weights are untrained (timing only); the zero-initialised output layer is re-initialised
so that eps != 0 and adaptive solvers see a non-trivial vector field.

    python benchmarks/sampling_throughput.py --threads 1           # CPU default, a few minutes
    python benchmarks/sampling_throughput.py --device cuda --dtype bf16 --cuda-graphs \\
        --models digits:64,1024@10,50,100,1000 cifar32:64@10,50,100,1000 --pf-ode digits:64 cifar32:64

Writes results/<device>[-<gpu options>].json and .png next to this file (see README.md).
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import re
from functools import partial
from pathlib import Path

import torch

import scoregen as sg
from scoregen.core.flow import Model, ProbabilityFlow
from scoregen.models.nets import PRESETS, build_model

from harness import CallTimer, GraphedEps, interleaved, machine, positive_int, save_json, shared_options

HERE = Path(__file__).resolve().parent
# sampler -> (method, options, steps giving NFE calls); sde/ode add one call for the final denoising step
SAMPLERS = {
    "ddpm": ("ddpm", {}, lambda nfe: nfe),
    "ddim": ("ddim", {}, lambda nfe: nfe),
    "sde": ("sde", {"solver": "euler"}, lambda nfe: max(1, nfe - 1)),
    "ode": ("ode", {"solver": "rk4"}, lambda nfe: max(1, (nfe - 1) // 4)),  # rk4: 4 calls a step
}
PEERS = ("diffusers-ddpm", "diffusers-ddim")
DDPM_BETAS = dict(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
AMP = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
ACCEL_TOL = {"fp32": 5e-3, "bf16": 3e-2, "fp16": 5e-3}  # rms(eps_accel - eps) / rms(eps); fp32 allows TF32
DEFAULT_MODELS = ("digits:1@10,50,100", "digits:16@10,50,100,1000", "digits:64@10,50,100", "cifar32:2@10")


# --- the network, as the samplers call it ----------------------------------------------------------

def build_net(preset: str, device: torch.device, channels_last: bool) -> tuple[torch.nn.Module, tuple]:
    """An untrained U-Net preset in eval mode, its output layer re-initialised (eps != 0); and its data shape."""
    torch.manual_seed(0)
    net = build_model({"preset": preset})
    net.conv_out.reset_parameters()
    net = net.to(device).eval().requires_grad_(False)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return net, (net.in_channels, net.image_size, net.image_size)


def make_eps(net, amp: str, channels_last: bool, compile_net: bool, cuda_graphs: bool):
    """``eps(x, t)``: ``net`` under the chosen GPU options (autocast, channels-last input,
    torch.compile, CUDA graphs), returning eps in x's dtype and memory layout."""
    fn = torch.compile(net, dynamic=False) if compile_net else net
    amp_dtype = AMP[amp]

    def eps(x, t):
        x_in = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        if amp_dtype is None:
            return fn(x_in, t).contiguous()
        # the autocast weight cache must be off while a CUDA graph is captured (torch.cuda.graphs docs)
        with torch.autocast("cuda", dtype=amp_dtype, cache_enabled=not cuda_graphs):
            return fn(x_in, t).to(x.dtype).contiguous()
    return GraphedEps(eps) if cuda_graphs else eps


def free_network(x, t):
    """A network that costs (almost) nothing: what a sampler costs by itself, per call."""
    return torch.zeros_like(x)


def network_block(eps, shape, device, calls: int):
    """``calls`` network calls on one batch (for ms per call)."""
    x = torch.randn(shape, device=device, generator=torch.Generator(device).manual_seed(1))
    t = torch.full((shape[0],), 0.5, device=device)

    def block():
        with torch.no_grad():
            for _ in range(calls):
                eps(x, t)
    return block


# --- the runs: scoregen samplers and peers ---------------------------------------------------------

def run_sampler(eps, sde, shape, device, name: str, nfe: int):
    method, options, steps = SAMPLERS[name]
    g = torch.Generator(device).manual_seed(0)
    res = sg.sample(eps, sde, shape, method, steps(nfe), generator=g, device=device, dtype=torch.float32, **options)
    return res.x, res.nfe


def run_diffusers(eps, shape, device, name: str, nfe: int):
    """The loop of diffusers' DDPMPipeline / DDIMPipeline (DDPM posterior variance, DDIM eta = 0) on
    DDPM's linear betas with "trailing" spacing, the grid t_i = i / K of scoregen's uniform grid:
    step k is t = (k + 1) / 1000. As there, the timesteps live on the host and each one is copied
    to the device for the network (UNet2DModel does ``timesteps.to(sample.device)``)."""
    from diffusers import DDIMScheduler, DDPMScheduler
    cls = DDPMScheduler if name == "diffusers-ddpm" else DDIMScheduler
    scheduler = cls(**DDPM_BETAS, clip_sample=False, timestep_spacing="trailing")
    scheduler.set_timesteps(nfe)
    g = torch.Generator(device).manual_seed(0)
    x = torch.randn(shape, generator=g, device=device)
    with torch.no_grad():
        for k in scheduler.timesteps:
            t = ((k + 1) / scheduler.config.num_train_timesteps).to(device=device, dtype=x.dtype).expand(shape[0])
            x = scheduler.step(eps(x, t), k, x, generator=g).prev_sample
    return x, len(scheduler.timesteps)


def diffusers_missing() -> str | None:
    if importlib.util.find_spec("diffusers") is None:
        return "diffusers is not installed (optional peer: pip install diffusers); its loops were skipped"
    return None


def scipy_pf_ode(eps, sde, shape, device, rtol: float, atol: float, t_min: float):
    """The PF-ODE from t = 1 to t_min by scipy's RK45 on a float64 host state, one device round trip
    per evaluation (score_sde_pytorch's ``get_ode_sampler``); the right-hand side is scoregen's."""
    from scipy.integrate import solve_ivp
    flow = ProbabilityFlow(Model(eps, sde, device, torch.float32), "t")
    x1 = sde.prior_sample(shape, generator=torch.Generator(device).manual_seed(0), device=device)

    def rhs(t, y):
        x = torch.from_numpy(y).reshape(shape).to(device=device, dtype=torch.float32)
        return flow(torch.tensor(t, dtype=torch.float64), x).reshape(-1).cpu().numpy()
    with torch.no_grad():
        sol = solve_ivp(rhs, (1.0, t_min), x1.reshape(-1).cpu().numpy(), method="RK45", rtol=rtol, atol=atol)
    return torch.from_numpy(sol.y[:, -1]).reshape(shape).to(device=device, dtype=torch.float32), sol.nfev


def torchdiffeq_pf_ode(eps, sde, shape, device, rtol: float, atol: float, t_min: float):
    g = torch.Generator(device).manual_seed(0)
    res = sg.sample(eps, sde, shape, "ode", generator=g, device=device, dtype=torch.float32, solver="dopri5",
                    rtol=rtol, atol=atol, t_min=t_min, final_denoise=False)
    return res.x, res.nfe


# --- the benchmark ---------------------------------------------------------------------------------

def parse_spec(spec: str, default_nfe=None) -> tuple[str, list[int], list[int]]:
    """'name:b1,b2[@n1,n2]' -> (name, batches, nfes)."""
    m = re.fullmatch(r"(\w+):([\d,]+)(?:@([\d,]+))?", spec)
    if not m:
        raise argparse.ArgumentTypeError(f"expected MODEL:BATCH[,BATCH...][@NFE[,NFE...]]; got {spec!r}")
    nfes = [int(n) for n in m[3].split(",")] if m[3] else default_nfe
    return m[1], [int(b) for b in m[2].split(",")], nfes


def benchmark(args) -> dict:
    device = torch.device(args.device)
    sde = sg.VPSDE()
    out = dict(machine={**machine(device), "contention": args.note},
               options={k: v for k, v in vars(args).items() if k not in ("note", "out")},
               weights="untrained, output layer re-initialised (eps != 0): timing only",
               networks={}, network_calls=[], runs=[], pf_ode=[], notes=[])
    peers = [] if args.no_peers else list(PEERS)
    if peers and (note := diffusers_missing()):
        out["notes"].append(note)
        peers = []
    log = print if not args.quiet else (lambda *a, **k: None)
    plan = {}  # model -> [(batch, nfes)], in the order given
    for name, batches, nfes in (parse_spec(spec, args.nfe) for spec in args.models):
        plan.setdefault(name, []).extend((b, nfes) for b in batches)
    for name, jobs in plan.items():
        net, data_shape = build_net(name, device, args.channels_last)
        eps = make_eps(net, args.dtype, args.channels_last, args.compile, args.cuda_graphs)
        out["networks"][name] = dict(params=sum(p.numel() for p in net.parameters()), data_shape=data_shape)
        for batch, nfes in jobs:
            shape = (batch, *data_shape)
            if args.dtype != "fp32" or args.compile or args.cuda_graphs or args.channels_last:
                out["notes"].append(check_accel(net, eps, shape, device, args.dtype, name))
            samplers = [s for s in [*SAMPLERS, *peers] if s in args.samplers or s in peers]
            calls, rows = bench_batch(eps, sde, shape, device, name, samplers, nfes, args, log)
            out["network_calls"].append(calls)
            out["runs"] += rows
        for pf_name, pf_batches, _ in map(parse_spec, args.pf_ode):
            for batch in pf_batches if pf_name == name else []:
                out["pf_ode"].append(pf_ode_pair(eps, sde, (batch, *data_shape), device, name, args, log))
    out["checks"] = checks(out, device, args)
    return out


def bench_batch(eps, sde, shape, device, name: str, samplers: list, nfes: list, args, log) -> tuple[dict, list]:
    """ms per network call and one row per (sampler, NFE) at one batch size, all interleaved;
    NFEs in ``--ddpm-only-nfe`` run the DDPM samplers only."""
    timer = CallTimer(eps) if device.type == "cpu" else None
    jobs = [(s, n) for n in nfes for s in samplers if n not in args.ddpm_only_nfe or "ddpm" in s]
    fns = {"network": network_block(eps, shape, device, args.calls),
           **{(s, n): partial(run_one, timer or eps, sde, shape, device, s, n) for s, n in jobs}}
    for s in dict.fromkeys(s for s, _ in jobs):  # warm-up: one short run each (and CUDA graph capture)
        run_one(eps, sde, shape, device, s, min(nfes))
    fns["network"]()
    results = interleaved(fns, device, args.repeats, timer)
    free = interleaved({job: partial(run_one, free_network, sde, shape, device, *job) for job in jobs}, device,
                       args.repeats)
    net = results.pop("network")[0]
    call_ms = net["seconds"] / args.calls * 1e3
    calls = dict(model=name, batch=shape[0], ms_per_call=call_ms,
                 ms_repeats=[s / args.calls * 1e3 for s in net["seconds_repeats"]])
    log(f"{name} batch {shape[0]}: {call_ms:.2f} ms per network call")
    rows = []
    for (s, target), (stats, (_, nfe)) in results.items():
        network_s = stats["network_seconds"] if timer else nfe * call_ms / 1e3
        rows.append(dict(model=name, batch=shape[0], sampler=s, peer=s in PEERS, nfe_target=target, nfe=nfe, **stats,
                         images_per_s=shape[0] / stats["seconds"], ms_per_call=call_ms,
                         overhead=stats["seconds"] / (nfe * call_ms / 1e3),
                         overhead_in_run=timer and stats["seconds"] / network_s,
                         extra_ms_per_call=(stats["seconds"] - network_s) / nfe * 1e3,
                         free_ms_per_call=free[s, target][0]["seconds"] / nfe * 1e3))
        r = rows[-1]
        log(f"  {s:15s} NFE {nfe:4d}: {r['images_per_s']:9.2f} img/s  overhead {r['overhead']:.3f}"
            f" (in run {r['overhead_in_run'] or math.nan:.3f}, +{r['extra_ms_per_call']:.3f} ms a call;"
            f" free network {r['free_ms_per_call']:.3f} ms a call)  peak {r['peak_mem_mib']:.0f} MiB")
    return calls, rows


def run_one(eps, sde, shape, device, sampler: str, nfe: int):
    if sampler in PEERS:
        return run_diffusers(eps, shape, device, sampler, nfe)
    return run_sampler(eps, sde, shape, device, sampler, nfe)


def pf_ode_pair(eps, sde, shape, device, name: str, args, log) -> dict:
    """torchdiffeq dopri5 on the device vs scipy RK45 on the host, same rtol/atol, same x_1."""
    row, x = dict(model=name, batch=shape[0], rtol=args.rtol, atol=args.atol, t_min=args.t_min), []
    fns = {solver: partial(fn, eps, sde, shape, device, args.rtol, args.atol, args.t_min)
           for solver, fn in (("torchdiffeq-dopri5", torchdiffeq_pf_ode), ("scipy-rk45", scipy_pf_ode))}
    network_block(eps, shape, device, 1)()  # warm-up at this batch size
    for solver, (stats, (x_end, nfe)) in interleaved(fns, device, args.repeats).items():
        row[solver] = dict(nfe=nfe, **stats, images_per_s=shape[0] / stats["seconds"],
                           ms_per_nfe=stats["seconds"] / nfe * 1e3)
        x.append(x_end)
    # both solve one ODE to rtol/atol: the gap relative to the solution's size is of that order
    row["rel_diff"] = float((x[0] - x[1]).abs().max() / x[0].abs().max())
    row["speedup"] = row["scipy-rk45"]["seconds"] / row["torchdiffeq-dopri5"]["seconds"]
    log(f"  PF-ODE batch {shape[0]} rtol={args.rtol}: torchdiffeq {row['torchdiffeq-dopri5']['seconds']:.2f} s "
        f"({row['torchdiffeq-dopri5']['nfe']} NFE), scipy {row['scipy-rk45']['seconds']:.2f} s "
        f"({row['scipy-rk45']['nfe']} NFE): {row['speedup']:.2f}x, max |dx| / max |x| {row['rel_diff']:.1e}")
    return row


def check_accel(net, eps, shape, device, amp: str, name: str) -> str:
    """The accelerated eps against the fp32 eager network on one batch; an error past ACCEL_TOL[amp]."""
    x = torch.randn(shape, device=device, generator=torch.Generator(device).manual_seed(2))
    t = torch.rand(shape[0], device=device, generator=torch.Generator(device).manual_seed(3))
    with torch.no_grad():
        ref, got = net(x, t), eps(x, t)
    err = float((got - ref).pow(2).mean().sqrt() / ref.pow(2).mean().sqrt())
    if not err <= ACCEL_TOL[amp]:
        raise RuntimeError(f"{name} batch {shape[0]}: accelerated eps differs from fp32 eager by {err:.2e} "
                           f"(rms, relative to rms eps) > {ACCEL_TOL[amp]} allowed for {amp}")
    return f"{name} batch {shape[0]}: accelerated eps vs fp32 eager, rms error / rms eps = {err:.1e}"


def checks(out: dict, device: torch.device, args) -> list[dict]:
    """The issue's targets, PASS/MISS with the measured ratio (n/a where this run cannot measure one)."""
    gpu = device.type == "cuda"
    key = "overhead" if gpu else "overhead_in_run"  # CPU: the call time measured inside the same run
    rows = []

    for sampler, limit in (("ddpm", 1.03 if gpu else 1.05), ("ddim", 1.03 if gpu else 1.05),
                           ("sde", 1.10), ("ode", 1.10)):
        runs = [r for r in out["runs"] if r["sampler"] == sampler]
        if runs:
            r = max(runs, key=lambda r: r[key])
            rows.append(dict(target=f"{sampler} {key} <= {limit}x network-bound (worst config)", value=r[key],
                             limit=limit, at=f"{r['model']} b{r['batch']} NFE {r['nfe']}",
                             status="PASS" if r[key] <= limit else "MISS"))
    pairs = []
    for r in out["runs"]:
        peer = next((p for p in out["runs"] if p["sampler"] == "diffusers-ddim" and p["model"] == r["model"]
                     and p["batch"] == r["batch"] and p["nfe"] == r["nfe"]), None)
        if r["sampler"] == "ddim" and peer:
            pairs.append((r["images_per_s"] / peer["images_per_s"], r))
    if pairs:
        ratio, r = min(pairs, key=lambda p: p[0])
        on = gpu and args.dtype == "bf16" and args.cuda_graphs
        rows.append(dict(target="ddim >= 1.3x diffusers DDIM images/s (GPU, bf16 + CUDA graphs; worst config)",
                         value=ratio, limit=1.3, at=f"{r['model']} b{r['batch']} NFE {r['nfe']}",
                         status=("PASS" if ratio >= 1.3 else "MISS") if on else "n/a"))
    if out["pf_ode"]:
        r = min(out["pf_ode"], key=lambda p: p["speedup"])
        rows.append(dict(target="on-device PF-ODE >= 5x faster than scipy host loop (GPU; worst config)",
                         value=r["speedup"], limit=5.0, at=f"{r['model']} b{r['batch']} rtol {r['rtol']}",
                         status=("PASS" if r["speedup"] >= 5 else "MISS") if gpu else "n/a"))
    return rows


def plot(out: dict, path: Path) -> None:
    """images/s vs NFE, one panel per (network, batch): samplers solid, their diffusers peers dashed in
    the same colour, adaptive PF-ODE solvers as single points."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    colour = {s: f"C{i}" for i, s in enumerate(SAMPLERS)}
    colour.update({p: colour[p.split("-")[1]] for p in PEERS})
    panels = list(dict.fromkeys((r["model"], r["batch"]) for r in out["runs"]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels) + 2.5, 3.6), squeeze=False, layout="constrained")
    for ax, (model, batch) in zip(axes[0], panels):
        runs = [r for r in out["runs"] if (r["model"], r["batch"]) == (model, batch)]
        for s in dict.fromkeys(r["sampler"] for r in runs):
            pts = sorted((r["nfe"], r["images_per_s"]) for r in runs if r["sampler"] == s)
            ax.plot(*zip(*pts), "--" if s in PEERS else "-", color=colour[s], marker="o", ms=3, label=s)
        for p in out["pf_ode"]:
            if (p["model"], p["batch"]) == (model, batch):
                for solver, marker in (("torchdiffeq-dopri5", "*"), ("scipy-rk45", "x")):
                    ax.plot(p[solver]["nfe"], p[solver]["images_per_s"], marker, color="k", ms=8, ls="none",
                            label=f"PF-ODE {solver}, rtol {p['rtol']:g}")
        ax.set(xscale="log", yscale="log", xlabel="NFE (network calls)", ylabel="images / s",
               title=f"{model} ({out['networks'][model]['params'] / 1e6:.1f}M params), batch {batch}")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines()}
    fig.legend(handles.values(), handles.keys(), loc="outside right center", fontsize=7)
    m = out["machine"]
    fig.suptitle(f"{m.get('gpu', m['cpu'])}, {m['torch_threads']} threads, torch {m['torch']}, "
                 f"{out['options']['dtype']}; untrained weights", fontsize=9)
    fig.savefig(path, dpi=110)


def markdown(out: dict) -> str:
    """The runs as a markdown table: a row per (network, batch, NFE asked for), a column per sampler
    holding "images/s (overhead)"; the overhead is the in-run one on the CPU."""
    key = "overhead" if out["machine"]["device"].startswith("cuda") else "overhead_in_run"
    samplers = list(dict.fromkeys(r["sampler"] for r in out["runs"]))
    ms = {(c["model"], c["batch"]): c["ms_per_call"] for c in out["network_calls"]}
    lines = ["| network | batch | ms/call | peak MiB | NFE | " + " | ".join(samplers) + " |",
             "|---" * (5 + len(samplers)) + "|"]
    for model, batch, nfe in dict.fromkeys((r["model"], r["batch"], r["nfe_target"]) for r in out["runs"]):
        runs = [r for r in out["runs"] if (r["model"], r["batch"], r["nfe_target"]) == (model, batch, nfe)]
        cells = {r["sampler"]: f"{r['images_per_s']:.3g} ({r[key]:.3f})" for r in runs}
        lines.append(f"| {model} | {batch} | {ms[model, batch]:.3g} | {max(r['peak_mem_mib'] for r in runs):.0f} "
                     f"| {nfe} | " + " | ".join(cells.get(s, "") for s in samplers) + " |")
    return "\n".join(lines)


def result_name(args) -> str:
    """'cpu', or the GPU's name and the GPU options: 'nvidia-h100-80gb-hbm3-bf16-graphs'."""
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    options = [args.dtype if args.dtype != "fp32" else "", "cl" if args.channels_last else "",
               "compile" if args.compile else "", "graphs" if args.cuda_graphs else ""]
    return re.sub(r"[^a-z0-9]+", "-", " ".join([name, *options]).lower()).strip("-")


def parse_args(argv=None):
    shared = shared_options(None, repeats=3, out_help="JSON path; the plot goes beside it "
                            "(default results/<device>[-<gpu options>].json here)")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], parents=[shared],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), metavar="MODEL:BATCHES[@NFES]",
                   help="U-Net preset (digits, cifar32, ...), batch sizes, NFEs; default %(default)s")
    p.add_argument("--nfe", type=lambda s: [int(n) for n in s.split(",")], default=[10, 50, 100],
                   help="NFEs for a model given without @NFES (default 10,50,100)")
    p.add_argument("--ddpm-only-nfe", type=lambda s: [int(n) for n in s.split(",")], default=[1000],
                   help="NFEs run by the DDPM samplers only: the original 1000-step DDPM (default 1000)")
    p.add_argument("--samplers", type=lambda s: s.split(","), default=list(SAMPLERS),
                   help=f"subset of {','.join(SAMPLERS)}")
    p.add_argument("--no-peers", action="store_true", help="skip the diffusers loops")
    p.add_argument("--pf-ode", nargs="*", default=["digits:16"], metavar="MODEL:BATCHES",
                   help="PF-ODE torchdiffeq-vs-scipy pairs (model must be in --models); default %(default)s")
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--t-min", type=float, default=sg.T_MIN)
    p.add_argument("--calls", type=positive_int, default=10, help="network calls per timed block for ms/call")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--dtype", choices=list(AMP), default="fp32", help="autocast dtype (bf16/fp16: CUDA only)")
    p.add_argument("--channels-last", action="store_true", help="channels-last network (CUDA only)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network (CUDA only)")
    p.add_argument("--cuda-graphs", action="store_true", help="replay the network call from a CUDA graph")
    p.add_argument("--note", default="", help="stored in the JSON, e.g. how loaded the machine was")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    gpu_only = [flag for flag, on in (("--dtype " + args.dtype, args.dtype != "fp32"), ("--channels-last",
                args.channels_last), ("--compile", args.compile), ("--cuda-graphs", args.cuda_graphs)) if on]
    if gpu_only and not args.device.startswith("cuda"):
        p.error(f"{', '.join(gpu_only)}: GPU-only, needs --device cuda (CUDA available: "
                f"{torch.cuda.is_available()})")
    unknown = set(args.samplers) - set(SAMPLERS)
    if unknown:
        p.error(f"--samplers: unknown {', '.join(sorted(unknown))}; valid: {', '.join(SAMPLERS)}")
    unets = sorted(k for k, v in PRESETS.items() if v["arch"] == "unet")
    for spec in [*args.models, *args.pf_ode]:
        try:
            name = parse_spec(spec)[0]
        except argparse.ArgumentTypeError as e:
            p.error(str(e))
        if name not in unets:
            p.error(f"{spec!r}: {name!r} is not a U-Net preset; valid: {', '.join(unets)}")
    missing = {parse_spec(s)[0] for s in args.pf_ode} - {parse_spec(s)[0] for s in args.models}
    if missing:
        p.error(f"--pf-ode: {', '.join(sorted(missing))} not in --models")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out = benchmark(args)
    path = save_json(args.out or HERE / "results" / f"{result_name(args)}.json", out)
    if not args.no_plot:
        plot(out, path.with_suffix(".png"))
    print(markdown(out))
    for c in out["checks"]:
        print(f"{c['status']:4s} {c['target']}: {c['value']:.3f} (limit {c['limit']}, at {c['at']})")
    for note in out["notes"]:
        print("note:", note)
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
