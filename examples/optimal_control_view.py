"""The reverse SDE as an optimally controlled process (Berner, Richter & Ullrich 2022), checked on the
Gaussian-mixture oracle, where every quantity has an exact value. Float64 throughout.

1. HJB: V = log p_t solves dV/dt = beta/2 (Lap V + |grad V|^2 + x . grad V + d) to round-off.
2. The optimal control is the score: the controlled SDE with u* = g grad log p_t lands on the mixture.
3. Control cost is KL: KL(p_0 || p_0^u) <= KL(p_1 || N(0, I)) + E 1/2 int |u - u*|^2 ds, tight for a score
   perturbation, loose for a constant push.
4. Path-space log Z: importance weights along controlled paths; zero variance in the limit with u*.
5. The PF-ODE log-density (sg.log_likelihood, from t_min = T_MIN) equals the exact mixture log-density up to
   the O(sigma(t_min)^2) bias of starting at t_min and the N(0, I) stand-in for p_1.

    python examples/optimal_control_view.py                 # the README's numbers and figures
    python examples/optimal_control_view.py --quick         # smoke run: smaller sizes, saves nothing
    python examples/optimal_control_view.py --quick --out /tmp/oc

Prints each check with its number; the full run saves optimal_control_{paths,kl,logz}.png and
optimal_control.json (every printed number) to --out, by default docs/figures/ (the README's). A --quick run
saves only where --out says.
"""
import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

import scoregen as sg
from scoregen.evaluation.control import (
    control_cost,
    gaussian_endpoint,
    hjb_residual,
    log_normalizer,
    log_path_weights,
    optimal_control,
    prior_control,
    simulate,
)
from scoregen.data import GaussianMixture, gaussian, preset
from scoregen.evaluation.metrics import gaussian_kl, sliced_wasserstein

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"
T_MIN = 1e-5  # PF-ODE start time: the oracle's eps is exact down to t = 0, so take t_min far below training's 1e-3
MIX1D = GaussianMixture([0.4, 0.6], [[-1.5], [1.0]], [0.05, 0.15])  # for the (t, x) picture


def hjb(sde, mix):
    """Relative residual of the log Fokker-Planck / HJB equation on a 21 x 21 x 12 grid of (x, t)."""
    xs = torch.linspace(-3, 3, 21, dtype=torch.float64)
    grid = torch.cartesian_prod(xs, xs)
    ts = torch.linspace(0.01, 1, 12, dtype=torch.float64)
    x, t = grid.repeat(len(ts), 1), ts.repeat_interleave(len(grid))
    shift = torch.tensor([0.1, 0.0], dtype=torch.float64)
    moved = GaussianMixture(mix.weights, mix.means + 0.2, mix.covs)
    candidates = {
        "exact log p_t": lambda x, t: mix.log_prob(x, t, sde),
        "log p_t(x - 0.1 e1) (wrong)": lambda x, t: mix.log_prob(x - shift, t, sde),
        "other data, diffused exactly": lambda x, t: moved.log_prob(x, t, sde),
    }
    out = {}
    for name, log_p in candidates.items():
        residual, scale = hjb_residual(log_p, sde, x, t)
        rel = residual.abs() / scale
        out[name] = {"max_rel": rel.max().item(), "median_rel": rel.median().item()}
        print(f"  {name:30s} max |residual|/scale {rel.max():.2e}   median {rel.median():.2e}")
    return out


def endpoints(sde, mix, n, steps, g):
    """Controlled end points from exact p_1 and from N(0, I), with u* and with u = 0."""
    u_star = optimal_control(mix.eps_model(sde), sde)
    controls = {"u*": u_star, "u=0": lambda x, t: torch.zeros_like(x)}
    starts = {"p_1": lambda: mix.sample(n, generator=g, t=1.0, sde=sde),
              "N(0,I)": lambda: sde.prior_sample((n, mix.dim), generator=g, dtype=torch.float64)}
    seed = 1234  # the same projections for every distance
    reference = mix.sample(n, generator=g)
    floors = torch.tensor([sliced_wasserstein(mix.sample(n, generator=g), reference,
                                              generator=torch.Generator().manual_seed(seed)) for _ in range(5)])
    floor = floors.mean().item()
    print(f"  noise floor: SW2 of 5 fresh exact draws of {n} to the reference draw: {floor:.4f} "
          f"(range {floors.min():.4f}-{floors.max():.4f})")
    out, ends = {"sw2_floor": floor, "sw2_floor_max": floors.max().item()}, {}
    for cname, control in controls.items():
        for sname, start in starts.items():
            x0 = simulate(control, sde, start(), steps, generator=g).x[-1]
            row = {"sw2": sliced_wasserstein(x0, reference, generator=torch.Generator().manual_seed(seed)),
                   "mean_err": (x0.mean(0) - mix.mean()).abs().max().item(),
                   "cov_err": (torch.cov(x0.T) - mix.covariance()).abs().max().item(),
                   "weight_err": (mix.responsibilities(x0).mean(0) - mix.weights).abs().max().item()}
            out[f"{cname} from {sname}"], ends[cname, sname] = row, x0
            print(f"  {cname:4s} from {sname:6s}: SW2 {row['sw2']:.4f} ({row['sw2'] / floor:.1f} x floor)  "
                  f"|mean err| {row['mean_err']:.3f}  |cov err| {row['cov_err']:.3f}  "
                  f"|weight err| {row['weight_err']:.3f}")
    return out, ends


def kl_bound(sde, n, steps, sizes, g):
    """KL(p_0 || p_0^u) against the prior term plus the extra control cost, for Gaussian data (closed forms)."""
    data = preset("gauss2d")
    m, s = data.means[0], data.covs[0]
    u_star = optimal_control(data.eps_model(sde), sde)
    zero, direction = torch.zeros(1, 2, dtype=torch.float64), torch.tensor([1.0, 0.0], dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    p_1 = (sde.alpha(one) * m, sde.alpha(one) ** 2 * s + sde.sigma(one) ** 2 * torch.eye(2, dtype=torch.float64))
    prior_kl = gaussian_kl(*p_1, torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    paths_star = simulate(u_star, sde, data.sample(n, generator=g, t=1.0, sde=sde), steps, generator=g)

    def score_family(eps):  # u = g grad log q_t, q_0 = N(m + eps e1, S): a score of another marginal path
        u = optimal_control(gaussian(m + eps * direction, s).eps_model(sde), sde)
        return u, lambda t: u(zero.expand(len(t), 2), t) - u_star(zero.expand(len(t), 2), t)

    def push_family(eps):  # u = u* + eps e1: a constant push, the score of no path
        return (lambda x, t: u_star(x, t) + eps * direction), (lambda t: (eps * direction).expand(len(t), 2))

    print(f"  prior term KL(p_1 || N(0,I)) = {prior_kl:.2e}")
    out = {"prior_kl": prior_kl, "sizes": sizes}
    for fname, family in (("score of q_t", score_family), ("constant push", push_family)):
        rows = []
        for eps in sizes:
            u, push = family(eps)
            end = gaussian_endpoint(data, sde, torch.zeros(2, dtype=torch.float64),
                                    torch.eye(2, dtype=torch.float64), push)
            x0 = simulate(u, sde, sde.prior_sample((n, 2), generator=g, dtype=torch.float64), steps, generator=g).x[-1]
            row = {"eps": eps, "kl": gaussian_kl(m, s, end.mean, end.cov), "cost": end.push_cost.item(),
                   "cost_paths": control_cost(paths_star, u).mean().item(),
                   "sim_mean_err": (x0.mean(0) - end.mean).abs().max().item(),
                   "sim_cov_err": (torch.cov(x0.T) - end.cov).abs().max().item()}
            row["ratio"] = row["kl"] / (prior_kl + row["cost"])
            rows.append(row)
            print(f"  {fname:13s} eps {eps:4.2f}: KL(p_0||p_0^u) {row['kl']:.5f} <= prior + cost "
                  f"{prior_kl + row['cost']:.5f} (ratio {row['ratio']:.4f}); cost on {steps}-step paths "
                  f"{row['cost_paths']:.5f}; simulated end point vs closed form: mean {row['sim_mean_err']:.3f} "
                  f"cov {row['sim_cov_err']:.3f}")
        out[fname] = rows
    return out


def log_z(sde, mix, n, steps_list, g, log_z_true=1.5):
    """log Z of rho = Z p_0 from importance weights along controlled paths started at N(0, I)."""
    moved = GaussianMixture(mix.weights, mix.means + torch.tensor([0.15, -0.1], dtype=torch.float64), mix.covs)
    controls = {"u*": optimal_control(mix.eps_model(sde), sde),
                "u* of shifted means": optimal_control(moved.eps_model(sde), sde),
                "prior control -g x": prior_control(sde)}
    log_target = lambda x: mix.log_prob(x) + log_z_true
    out, log_ws = {"log_z": log_z_true}, {}
    for steps in steps_list:
        for name, control in controls.items():
            if name != "u*" and steps != steps_list[-1]:
                continue
            paths = simulate(control, sde, sde.prior_sample((n, 2), generator=g, dtype=torch.float64),
                             steps, generator=g)
            log_w = log_path_weights(paths, sde, log_target)
            est = log_normalizer(log_w)
            row = {"steps": steps, "lower_bound": est.lower_bound.item(), "log_z": est.log_z.item(),
                   "ess_frac": est.ess.item() / n, "var_log_w": est.log_variance.item()}
            out[f"{name}, {steps} steps"], log_ws[name, steps] = row, log_w
            print(f"  {name:20s} {steps:5d} steps: E log w {row['lower_bound']:.4f} <= log Z {log_z_true}; "
                  f"log mean w {row['log_z']:.4f}; ESS {row['ess_frac']:.3f} N; Var log w {row['var_log_w']:.4f}")
    return out, log_ws


def pf_ode(sde, mix, g, n=8, t_min=T_MIN, tol=1e-9):
    """PF-ODE log-density of n exact draws (sg.log_likelihood from t_min, rtol = atol = tol) against the exact
    mixture log-density log p_0; the ODE's prior N(0, I) stands for p_1, so also swap in the exact log p_1(x_1).
    With the exact p_1 the error left is the ODE tolerance and log p_{t_min} - log p_0 = O(sigma(t_min)^2)."""
    x = mix.sample(n, generator=g)
    ll = sg.log_likelihood(mix.eps_model(sde), sde, x, rtol=tol, atol=tol, t_min=t_min)
    exact = mix.log_prob(x)
    with_p1 = ll.logp - ll.prior_logp + mix.log_prob(ll.x1, 1.0, sde)
    out = {"n": n, "t_min": t_min, "tol": tol, "max_abs_err": (ll.logp - exact).abs().max().item(),
           "max_abs_err_exact_p1": (with_p1 - exact).abs().max().item(), "nfe": ll.nfe}
    print(f"  max |log p_ODE - log p| over {n} points: {out['max_abs_err']:.1e} with prior N(0,I), "
          f"{out['max_abs_err_exact_p1']:.1e} with the exact p_1 ({ll.nfe} model calls, t_min = {t_min:g}, "
          f"rtol = atol = {tol:g})")
    return out


def plot_paths(sde, ends, g, steps, mix, out):
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    t = torch.linspace(1e-3, 1, 100, dtype=torch.float64)
    xs = torch.linspace(-3, 3, 121, dtype=torch.float64)
    tt, xx = torch.meshgrid(t, xs, indexing="ij")
    dens = MIX1D.log_prob(xx.reshape(-1, 1), tt.reshape(-1), sde).exp().reshape(tt.shape)
    axes[0].pcolormesh(t, xs, dens.T, cmap="magma", shading="auto")
    u_star = optimal_control(MIX1D.eps_model(sde), sde)
    paths = simulate(u_star, sde, MIX1D.sample(2000, generator=g, t=1.0, sde=sde), steps, generator=g)
    axes[0].plot(paths.t[::2], paths.x[::2, :15, 0], color="c", lw=0.5)
    axes[0].set(xlim=(1, 0), xlabel="t (generation runs 1 -> 0)", ylabel="x",
                title="p_t and paths with u* = g grad log p_t")
    grid = torch.linspace(-3, 3, 400, dtype=torch.float64)[:, None]
    axes[1].hist(paths.x[-1, :, 0], bins=60, density=True, alpha=0.6, label="controlled end points")
    axes[1].plot(grid[:, 0], MIX1D.log_prob(grid).exp(), "k", label="exact p_0")
    axes[1].set(title="1-D end points (u*, from p_1)", xlabel="x")
    axes[1].legend()
    a, b = torch.meshgrid(torch.linspace(-2.5, 2.5, 120, dtype=torch.float64),
                          torch.linspace(-2, 2.8, 120, dtype=torch.float64), indexing="ij")
    p0 = mix.log_prob(torch.stack([a.reshape(-1), b.reshape(-1)], 1)).exp().reshape(a.shape)
    x0 = ends["u*", "N(0,I)"][:1500]
    axes[2].scatter(x0[:, 0], x0[:, 1], s=2, alpha=0.4)
    axes[2].contour(a, b, p0, levels=8, colors="k", linewidths=0.7)
    spread = ends["u=0", "N(0,I)"].std().item()
    axes[2].set(title=f"gmm2d: u* from N(0,I) over p_0 (u = 0: std {spread:.0f})", xlim=(-2.5, 2.5), ylim=(-2, 2.8))
    fig.tight_layout()
    fig.savefig(out / "optimal_control_paths.png", dpi=80)
    plt.close(fig)


def plot_kl(kl, out):
    fig, ax = plt.subplots(figsize=(6, 4.2))
    sizes = kl["sizes"]
    for (fname, rows), c in zip(((k, kl[k]) for k in ("score of q_t", "constant push")), ("C0", "C1")):
        ax.loglog(sizes, [r["kl"] for r in rows], "o-", color=c, label=f"{fname}: KL(p_0 || p_0^u)")
        ax.loglog(sizes, [kl["prior_kl"] + r["cost"] for r in rows], "--", color=c, label=f"{fname}: prior + cost")
        ax.loglog(sizes, [r["cost_paths"] for r in rows], "x", color=c, label=f"{fname}: cost on EM paths")
    ax.set(xlabel="perturbation size eps", ylabel="nats", title="Cost bounds the KL gap (gauss2d); equal for a score")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "optimal_control_kl.png", dpi=80)
    plt.close(fig)


def plot_log_z(lz, log_ws, steps_list, out):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (name, steps), log_w in log_ws.items():
        if steps == steps_list[-1]:
            axes[0].hist(log_w.clamp(min=lz["log_z"] - 8), bins=80, histtype="step", density=True, label=name)
    axes[0].axvline(lz["log_z"], color="k", ls=":", label="log Z")
    axes[0].set(xlabel="log w", title=f"path log-weights, {steps_list[-1]} steps (clamped at log Z - 8)")
    axes[0].legend(fontsize=8)
    var = [lz[f"u*, {k} steps"]["var_log_w"] for k in steps_list]
    axes[1].loglog(steps_list, var, "o-", label="Var log w with u*")
    axes[1].loglog(steps_list, [var[0] * steps_list[0] / k for k in steps_list], "k:", label="slope -1")
    axes[1].set(xlabel="Euler-Maruyama steps", title="zero variance in the limit")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / "optimal_control_logz.png", dpi=80)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run); saves nothing without --out")
    parser.add_argument("--out", type=Path, help="folder for the figures and JSON (default: docs/figures/ for a full "
                                                 "run, nowhere for --quick)")
    args = parser.parse_args()
    out = args.out if args.out is not None or args.quick else FIGURES
    n, steps = (1000, 200) if args.quick else (4000, 500)
    steps_list = [100, 200] if args.quick else [125, 250, 500, 1000]
    sizes = [0.1, 0.5, 1.0] if args.quick else [0.1, 0.2, 0.5, 1.0, 2.0]
    torch.set_num_threads(1)  # tiny tensors: threads only add synchronisation (and thrash on a busy CPU)
    sde, mix, g = sg.VPSDE(), preset("gmm2d"), torch.Generator().manual_seed(0)
    start, results = time.time(), {"quick": args.quick, "n": n, "steps": steps}
    print("1. HJB / log Fokker-Planck residual (gmm2d, autograd)")
    results["hjb"] = hjb(sde, mix)
    print(f"2. controlled end points, {n} paths, {steps} Euler-Maruyama steps (gmm2d)")
    results["endpoints"], ends = endpoints(sde, mix, n, steps, g)
    print("3. KL(p_0 || p_0^u) vs prior term + extra control cost (gauss2d, closed forms)")
    results["kl_bound"] = kl_bound(sde, n, steps, sizes, g)
    print(f"4. log Z from path weights ({n} paths from N(0,I), gmm2d target)")
    results["log_z"], log_ws = log_z(sde, mix, n, steps_list, g)
    print("5. PF-ODE log-density vs exact mixture log-density (gmm2d)")
    results["pf_ode"] = pf_ode(sde, mix, torch.Generator().manual_seed(0))  # the same 8 points in every run
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        plot_paths(sde, ends, g, steps, mix, out)
        plot_kl(results["kl_bound"], out)
        plot_log_z(results["log_z"], log_ws, steps_list, out)
    results["seconds"] = time.time() - start
    if out is not None:
        (out / "optimal_control.json").write_text(json.dumps(results, indent=1))
        print(f"figures and numbers in {out}")
    print(f"total {results['seconds']:.0f} s")


if __name__ == "__main__":
    main()
