"""Samplers against closed forms: the exact PF-ODE map of a Gaussian, DDPM's Algorithm 2, and the
Gaussian-mixture oracle's exact density (mean log-density z-score, whose noise floor is its standard
error, and the covariance error, whose floor is that of exact draws of the same size)."""
import math

import pytest
import torch

import scoregen.samplers as S
from scoregen.models.nets.vae import build_vae
from scoregen.core.flow import Model
from scoregen.samplers.grids import GRIDS, sampling_grid, time_grid
from scoregen.samplers.ode import odeint_pf
from scoregen.core.sde import VPSDE

from oracle import F64, GAUSS, GMM, N, SDE, distance, exact_flow, gen, slopes


# --- deterministic maps: order of convergence against the exact Gaussian flow --------------------

@pytest.mark.parametrize("method, options, steps, order", [
    ("ddim", {}, (20, 40, 80), 1),
    ("ode", {"solver": "euler", "variable": "t"}, (20, 40, 80), 1),
    ("ode", {"solver": "euler", "variable": "edm"}, (20, 40, 80), 1),
    ("ode", {"solver": "midpoint", "variable": "t"}, (20, 40, 80), 2),
    ("ode", {"solver": "heun2", "variable": "log_snr"}, (20, 40, 80), 2),
    ("ode", {"solver": "heun3", "variable": "t"}, (20, 40, 80), 3),
    ("ode", {"solver": "rk4", "variable": "t"}, (10, 20, 40), 4),
    ("ode", {"solver": "rk4", "variable": "edm"}, (10, 20, 40), 4),
])
def test_deterministic_samplers_converge_at_their_order(method, options, steps, order):
    n = 200
    x1 = torch.randn(n, 2, generator=gen(), dtype=F64)        # what sample() draws first
    end = 0.0 if method == "ddim" else S.T_MIN
    if method == "ode":
        options = {**options, "final_denoise": False}
    errs = [(S.sample(GAUSS.eps_model(SDE), SDE, (n, 2), method, k, generator=gen(), dtype=F64, **options).x
             - exact_flow(x1, end)).pow(2).sum(1).mean().sqrt().item() for k in steps]
    assert errs[-1] < 0.05
    for slope in slopes(errs, steps):
        assert -order - 0.2 < slope < -order + 0.2, (errs, slopes(errs, steps))


def test_rk4_beats_euler_at_a_tenth_of_the_nfe_and_adaptive_solvers_meet_their_tolerance():
    n = 200
    x1 = torch.randn(n, 2, generator=gen(), dtype=F64)
    ref = exact_flow(x1, S.T_MIN)

    def run(steps=None, **options):
        res = S.sample(GAUSS.eps_model(SDE), SDE, (n, 2), "ode", steps, generator=gen(), dtype=F64,
                       final_denoise=False, **options)
        return (res.x - ref).abs().max().item(), res.nfe

    (e_rk4, nfe_rk4), (e_euler, nfe_euler) = run(10, solver="rk4"), run(400, solver="euler")
    assert nfe_rk4 * 9 < nfe_euler and e_rk4 * 3 < e_euler
    for solver in ("dopri5", "bosh3", "adaptive_heun", "dopri8"):
        e_loose, nfe_loose = run(solver=solver, rtol=1e-3, atol=1e-3)
        e_tight, nfe_tight = run(solver=solver, rtol=1e-6, atol=1e-6)
        assert e_tight < 1e-5 and e_tight < e_loose / 20 and nfe_tight > nfe_loose, (solver, e_loose, e_tight)


def test_gaussian_moments_match_within_the_discretisation_error_which_shrinks():
    """Same prior noise: DDIM's and the PF-ODE's sample mean/cov against the exact map's, and those
    against the data's (mean, cov) within the sampling floor."""
    n = 20000
    x1 = torch.randn(n, 2, generator=gen(), dtype=F64)
    exact = exact_flow(x1, 0.0)
    floor = 3 * (GAUSS.covs[0].diagonal().max() * 2 / n) ** 0.5
    assert (exact.mean(0) - GAUSS.means[0]).abs().max() < floor
    assert (torch.cov(exact.T) - GAUSS.covs[0]).abs().max() < floor
    for method, options in (("ddim", {}), ("ode", {"solver": "euler"})):
        errs = []
        for k in (5, 20, 80):
            x = S.sample(GAUSS.eps_model(SDE), SDE, (n, 2), method, k, generator=gen(), dtype=F64, **options).x
            errs.append(max((x.mean(0) - exact.mean(0)).abs().max(), (torch.cov(x.T) - torch.cov(exact.T)).abs().max()))
        assert errs[1] < errs[0] / 2.5 and errs[2] < errs[1] / 2.5 and errs[2] < 0.05, (method, errs)


# --- exact identities -----------------------------------------------------------------------------

def _ddpm_algorithm_2(eps_model, betas, x, generator, variance):
    """Ho et al. 2020, Algorithm 2, written from the paper (index i is t = (i + 1) / N)."""
    alphas, abar = 1 - betas, torch.cumprod(1 - betas, 0)
    for i in reversed(range(len(betas))):
        eps = eps_model(x, torch.full((x.shape[0],), (i + 1) / len(betas), dtype=F64))
        z = torch.randn(x.shape, generator=generator, dtype=F64)
        var = betas[i] if variance == "beta" else betas[i] * (1 - abar[i - 1]) / (1 - abar[i]) if i else 0.0
        x = (x - betas[i] / (1 - abar[i]).sqrt() * eps) / alphas[i].sqrt() + (var if i else 0.0) ** 0.5 * z
    return x


@pytest.mark.parametrize("variance", ["posterior", "beta"])
def test_ddpm_on_the_discrete_schedule_is_ddpm_algorithm_2(variance):
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    sde = VPSDE.from_ddpm_betas(betas)

    def eps_model(x, t):                          # any smooth function: the identity is exact
        return torch.tanh(x) * t[:, None] + 0.1 * x.flip(1)

    g = gen()
    ref = _ddpm_algorithm_2(eps_model, betas, torch.randn(100, 2, generator=g, dtype=F64), g, variance)
    res = S.sample(eps_model, sde, (100, 2), "ddpm", 1000, variance=variance, generator=gen(), dtype=F64)
    assert res.nfe == 1000 and (res.x - ref).abs().max() < 1e-9


@pytest.mark.parametrize("grid", ["uniform", "log_snr", "karras"])
def test_ddim_with_eta_1_is_ancestral_ddpm_draw_for_draw(grid):
    kw = dict(grid=grid, generator=gen(), dtype=F64)
    ddim = S.sample(GMM.eps_model(SDE), SDE, (500, 2), "ddim", 40, eta=1.0, **kw).x
    kw["generator"] = gen()
    ddpm = S.sample(GMM.eps_model(SDE), SDE, (500, 2), "ddpm", 40, variance="posterior", **kw).x
    assert (ddim - ddpm).abs().max() < 1e-10


def test_ddim_is_euler_in_the_edm_variable():
    """y = x / alpha, s = sigma / alpha: dy/ds = eps, so K DDIM steps are K - 1 Euler steps from 1 to
    t_1 = 1 / K and the final x0_hat jump."""
    k = 12
    ddim = S.sample(GMM.eps_model(SDE), SDE, (500, 2), "ddim", k, generator=gen(), dtype=F64)
    ode = S.sample(GMM.eps_model(SDE), SDE, (500, 2), "ode", k - 1, solver="euler", variable="edm",
                   t_min=1 / k, generator=gen(), dtype=F64)
    assert ddim.nfe == ode.nfe == k and (ddim.x - ode.x).abs().max() < 1e-12


def test_probability_flow_round_trip_returns_the_prior_noise():
    n = 200
    model = Model(GMM.eps_model(SDE), SDE, torch.device("cpu"), F64)
    res = S.sample(GMM.eps_model(SDE), SDE, (n, 2), "ode", solver="dopri5", rtol=1e-7, atol=1e-7,
                   final_denoise=False, generator=gen(), dtype=F64)
    x1 = torch.randn(n, 2, generator=gen(), dtype=F64)
    back = odeint_pf(model, res.x, torch.tensor([S.T_MIN, 1.0], dtype=F64), solver="dopri5",
                     variable="t", rtol=1e-7, atol=1e-7)
    assert (back - x1).abs().max() < 1e-3
    assert (res.x - x1).abs().max() > 0.5                       # it went somewhere


# --- distributions against the mixture oracle ---------------------------------------------------


@pytest.mark.parametrize("method, options, coarse, fine", [
    ("ddpm", {"variance": "posterior"}, (30,), 1000),
    ("ddpm", {"variance": "beta"}, (30,), 200),
    ("ddim", {"grid": "quadratic"}, (5, 20), 100),
    ("sde", {"solver": "euler"}, (10, 30, 100), None),
    ("sde", {"solver": "heun", "grid": "log_snr"}, (5,), 100),
    ("sde", {"solver": "srk"}, (5, 10), 100),
    ("ode", {"solver": "rk4"}, (3,), 20),
])
def test_samples_converge_in_distribution_to_the_noise_floor(method, options, coarse, fine, floors):
    """|z| falls as steps grow and, at fine steps, is within the floor (|z| < 4, cov error < 3 floors)."""
    def dist(k):
        return distance(S.sample(GMM.eps_model(SDE), SDE, (N, 2), method, k, generator=gen(), **options).x, floors)

    z = [abs(dist(k)[0]) for k in coarse]
    assert z[0] > 8 and all(b < a for a, b in zip(z, z[1:])), z
    if fine is not None:
        z_fine, c_fine = dist(fine)
        assert abs(z_fine) < 4 and c_fine < 3, (z, z_fine, c_fine)


# --- bookkeeping: seeds, NFE, trajectories, devices and dtypes ----------------------------------

SDE_NFE = {"euler": 1, "milstein": 1, "srk": 2, "heun": 2, "midpoint": 2}
ODE_NFE = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4}
CASES = ([("ddpm", {}), ("ddpm", {"variance": "beta"}), ("ddim", {}), ("ddim", {"eta": 0.5})]
         + [("sde", {"solver": s}) for s in S.choices("sde")["solver"]]
         + [("ode", {"solver": s}) for s in S.choices("ode")["solver"]])


@pytest.mark.parametrize("method, options", CASES, ids=lambda c: str(c))
def test_same_seed_same_samples_and_nfe_counts_every_call(method, options):
    calls = []

    def counting(x, t):
        calls.append(t)
        return GMM.eps(x, t, SDE)

    k = 4
    adaptive = options.get("solver") in ("dopri5", "bosh3", "adaptive_heun", "dopri8")
    steps = None if adaptive else k
    if adaptive:
        options = {**options, "rtol": 1e-3, "atol": 1e-3}
    a = S.sample(counting, SDE, (64, 2), method, steps, generator=gen(1), **options)
    assert a.nfe == len(calls) and a.x.shape == (64, 2) and a.x.dtype == torch.float32
    assert all(c.shape == (64,) and bool(((c > 0) & (c <= 1)).all()) for c in calls)
    b = S.sample(counting, SDE, (64, 2), method, steps, generator=gen(1), **options)
    c = S.sample(counting, SDE, (64, 2), method, steps, generator=gen(2), **options)
    assert torch.equal(a.x, b.x) and not torch.allclose(a.x, c.x)
    solver = options.get("solver")
    expected = {"ddpm": k, "ddim": k, "sde": k * SDE_NFE.get(solver, 1) + 1 + (solver == "reversible_heun"),
                "ode": None if adaptive else k * ODE_NFE.get(solver, 0) + 1}[method]
    assert expected is None or a.nfe == expected
    assert a.options["method"] == method and a.options["steps"] == (S.STEPS["ode"] if adaptive else steps)


def test_trajectories_run_from_noise_to_the_samples():
    for method, options, times in (("ddim", {}, 6), ("ddpm", {}, 6), ("sde", {}, 7), ("ode", {"solver": "rk4"}, 7),
                                   ("ode", {"solver": "dopri5"}, None)):
        res = S.sample(GMM.eps_model(SDE), SDE, (32, 2), method, None if options.get("solver") == "dopri5" else 5,
                       generator=gen(), return_trajectory=True, **options)
        t, x = res.trajectory
        assert t[0] == 1 and t[-1] == 0 and bool((t[1:] < t[:-1]).all()) and x.shape == (len(t), 32, 2)
        assert times is None or len(t) == times
        assert torch.equal(x[0], torch.randn(32, 2, generator=gen())) and torch.equal(x[-1], res.x)


def test_an_nn_module_fixes_device_and_dtype():
    class Eps(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones((), dtype=F64))

        def forward(self, x, t):
            assert t.dtype == F64
            return self.w * GAUSS.eps(x, t, SDE)

    res = S.sample(Eps(), SDE, (16, 2), "ddim", 3, generator=gen())
    assert res.x.dtype == F64 and res.x.device.type == "cpu" and not res.x.requires_grad
    with pytest.raises(ValueError, match="dtype=torch.float32 contradicts eps_model"):
        S.sample(Eps(), SDE, (16, 2), "ddim", 3, dtype=torch.float32)


def test_grids_are_their_closed_forms():
    k = 10
    i = torch.arange(k, -1, -1, dtype=F64)
    assert torch.allclose(time_grid(SDE, "uniform", k, 0.0), i / k, atol=1e-15)
    assert torch.allclose(time_grid(SDE, "quadratic", k, 0.0), (i / k) ** 2, atol=1e-15)
    lam = SDE.log_snr(time_grid(SDE, "log_snr", k, 1e-3))
    assert torch.allclose(lam.diff(), lam.diff()[:1].expand(k), atol=1e-9)
    s = torch.exp(-SDE.log_snr(time_grid(SDE, "karras", k, 1e-3)) / 7)
    assert torch.allclose(s.diff(), s.diff()[:1].expand(k), atol=1e-9)
    for grid in GRIDS:
        t = time_grid(SDE, grid, k, 1e-3)
        assert t[0] == 1 and t[-1] == 1e-3 and bool((t.diff() < 0).all())
        onto_zero, t_min = sampling_grid(SDE, grid, k, 0.01, onto_zero=True)  # t_min: where log_snr, karras end
        t_lo = 0.0 if grid in ("uniform", "quadratic") else 0.01
        assert t_min == 0.01 and onto_zero[-1] == 0 and torch.equal(onto_zero[:-1], time_grid(SDE, grid, k, t_lo)[:-1])
        assert torch.equal(sampling_grid(SDE, grid, k, None, onto_zero=False)[0], time_grid(SDE, grid, k, S.T_MIN))
    res = S.sample(GMM.eps_model(SDE), SDE, (8, 2), "ddpm", 4, grid="karras", return_trajectory=True)
    assert res.options["t_min"] == S.T_MIN and res.trajectory.t[-2].item() == pytest.approx(
        time_grid(SDE, "karras", 4, S.T_MIN)[-2].item(), rel=1e-6) and res.trajectory.t[-1] == 0


# --- bad input ------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, kwargs, match", [
    (("gan", 10), {}, "unknown method 'gan'; valid: ddpm, ddim, sde, ode"),
    (("ddim", 10), {"grid": "cubic"}, "unknown grid 'cubic'; valid: uniform, quadratic, log_snr, karras"),
    (("ddim", 0), {}, "steps must be a positive integer; got 0"),
    (("ddim", 2.5), {}, "steps must be a positive integer"),
    (("ode", 10), {"eta": 0.5}, "option.s. eta do not belong to method 'ode'"),
    (("ode", 10), {"solver": "rk45"}, "solver must be one of .*'dopri5'.*; got 'rk45'"),
    (("sde", 10), {"solver": "log_ode"}, "solver must be one of 'euler', .*; got 'log_ode'"),
    (("ddpm", 10), {"variance": "learned"}, "variance must be one of 'posterior', 'beta'; got 'learned'"),
    (("ddim", 10), {"eta": 1.5}, r"eta must be a number in \[0.0, 1.0\]"),
    (("ode", 10), {"t_min": 0.0}, r"t_min must be a number in \(0.0, 1.0\)"),
    (("ddpm", 10), {"grid": "uniform", "t_min": 0.0}, r"t_min must be a number in \(0.0, 1.0\)"),
    (("ode", 10), {"solver": "rk4", "rtol": 1e-3}, "rtol/atol apply to adaptive solvers"),
    (("ode", 10), {"final_denoise": 1}, "final_denoise must be one of True, False; got 1"),
    (("sde",), {"grid": torch.tensor([1.0, 0.5, 0.0], dtype=F64)}, "grid must end above t = 0"),
    (("ddim",), {"grid": torch.tensor([1.0, 0.5, 0.6], dtype=F64)}, "at least two strictly decreasing times"),
    (("ddim",), {"grid": torch.tensor([1.5, 0.0], dtype=F64)}, r"decreasing times in \[0, 1\]"),
    (("ddim", 4), {"grid": torch.tensor([1.0, 0.0], dtype=F64)}, "an explicit grid fixes the steps"),
    (("ddim", 10), {"device": "meta"}, "device must be 'cpu', 'cuda' or 'cuda:N'; got 'meta'"),
    (("ddim", 10), {"dtype": torch.int64}, "dtype must be a floating torch.dtype"),
    (("ddim", 10), {"generator": 0}, "generator must be a torch.Generator or None; got 0"),
    pytest.param(("ddim", 10), {"device": "cuda"}, "device='cuda' but CUDA is not available here",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here")),
])
def test_bad_input_raises_a_named_error(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        S.sample(GMM.eps_model(SDE), SDE, (8, 2), *args, **kwargs)


def test_bad_sde_shape_and_model_kind_are_named():
    with pytest.raises(ValueError, match="sde must be a VPSDE .*; got NoneType"):
        S.sample(GMM.eps_model(SDE), None, (8, 2), "ddim", 10)
    with pytest.raises(ValueError, match=r"shape must be \(batch, \*data_shape\) of positive integers; got 4"):
        S.sample(GMM.eps_model(SDE), SDE, 4, "ddim", 10)
    vae = build_vae(preset="digits")
    with pytest.raises(ValueError, match=r"eps_model is a VAE: sample it with its own one decoder call, vae.sample\(n"):
        S.sample(vae, SDE, (2, 1, 8, 8), "ddim", 10)


def test_bad_models_are_caught():
    with pytest.raises(ValueError, match=r"eps_model must return a tensor of the input's shape \(8, 2\); got \(8, 1\)"):
        S.sample(lambda x, t: x[:, :1], SDE, (8, 2), "ode", 3)
    with pytest.raises(ValueError, match="method 'sde' produced non-finite samples"):
        S.sample(lambda x, t: x / 0, SDE, (8, 2), "sde", 3)


def test_an_explicit_grid_is_the_named_grid_and_any_other_runs():
    """``grid=`` a tensor: the named grid's own times give the same samples; other times run every method."""
    for method, onto_zero in (("ddim", True), ("ddpm", True), ("sde", False), ("ode", False)):
        t, _ = sampling_grid(SDE, "karras", 6, None, onto_zero)
        named = S.sample(GMM.eps_model(SDE), SDE, (8, 2), method, 6, grid="karras", generator=gen(), dtype=F64)
        explicit = S.sample(GMM.eps_model(SDE), SDE, (8, 2), method, grid=t, generator=gen(), dtype=F64)
        assert torch.equal(named.x, explicit.x) and named.nfe == explicit.nfe, method
        assert explicit.options["grid"] == "explicit" and explicit.options["steps"] == 6
    odd = torch.tensor([0.9, 0.5, 0.2, 0.05, 0.0], dtype=F64)  # starts below 1: x is drawn from N(0, I) there
    res = S.sample(GMM.eps_model(SDE), SDE, (8, 2), "ddim", grid=odd, generator=gen(), return_trajectory=True)
    assert res.nfe == 4 and torch.allclose(res.trajectory.t, odd.float())


def test_the_registry_is_read_from_the_signatures():
    """Options, defaults and allowed values come from each sampler's keyword-only parameters."""
    assert S.method_options("ddim") == {"eta": 0.0}
    assert S.method_options("ode") == {"solver": "rk4", "variable": "t", "rtol": None, "atol": None,
                                       "final_denoise": True}
    assert S.choices("ddpm") == {"variance": ("posterior", "beta")}
    assert S.choices("sde")["final_denoise"] == (True, False)
    res = S.sample(GMM.eps_model(SDE), SDE, (8, 2), "ode", 3)
    assert res.options == {"method": "ode", "steps": 3, "grid": "uniform", "t_min": S.T_MIN, "solver": "rk4",
                           "variable": "t", "rtol": None, "atol": None, "final_denoise": True}
    text = S.describe()
    assert all(f"{name}: " in text and f"steps = {S.STEPS[name]}" in text for name in S.METHODS)
    assert "variable = 't'  ('t', 'log_snr', 'edm')" in text and "DDIM (Song et al. 2021, eq. 12)" in text


def test_x1_grid_lists_models_and_sizes_are_checked_up_front():
    """A NaN in x1 used to run and blame the model; a list grid to fail with "unhashable type: 'list'"; a string
    model with "'str' object is not callable"; 10^11 samples to fill the memory before failing."""
    x1 = torch.randn(8, 2, generator=gen())
    x1[3, 1] = math.nan
    for method in ("ddim", "ode"):
        with pytest.raises(ValueError, match=r"x1 has NaN/inf values \(1 of 16 values, the first at index \(3, 1\)\)"):
            S.sample(GMM.eps_model(SDE), SDE, (8, 2), method, 3, x1=x1)
    with pytest.raises(ValueError, match="x1 has NaN/inf values"):
        S.pf_ode_solution(GMM.eps_model(SDE), SDE, x1)
    times = [1.0, 0.6, 0.25, 0.0]
    tensor = S.sample(GMM.eps_model(SDE), SDE, (8, 2), "ddim", grid=torch.tensor(times, dtype=F64), generator=gen())
    for grid in (times, tuple(times)):
        res = S.sample(GMM.eps_model(SDE), SDE, (8, 2), "ddim", grid=grid, generator=gen())
        assert torch.equal(res.x, tensor.x) and res.options["grid"] == "explicit" and res.nfe == 3
    with pytest.raises(ValueError, match=r"grid given as a list must hold numbers \(decreasing times\); got \['a'"):
        S.sample(GMM.eps_model(SDE), SDE, (8, 2), "ddim", grid=["a", 0.0])
    with pytest.raises(ValueError, match="decreasing times"):
        S.sample(GMM.eps_model(SDE), SDE, (8, 2), "ddim", grid=[0.0, 1.0])
    with pytest.raises(ValueError, match=r"unknown grid \{\}; valid: uniform"):
        S.sample(GMM.eps_model(SDE), SDE, (8, 2), "ddim", grid={})
    with pytest.raises(ValueError, match=r"eps_model must be a torch module or a callable eps\(x, t\); got str"):
        S.sample("digits.pt", SDE, (8, 2), "ddim", 3)
    with pytest.raises(ValueError, match=r"shape \(100000000000, 2\) of torch.float32 needs about 3,200.0 GB of "
                                         r"sampler state but cpu has .* GB: ask for fewer samples \(a smaller n\) or "
                                         "shard them"):
        S.sample(GMM.eps_model(SDE), SDE, (10 ** 11, 2), "ddim", 3)


def test_the_memory_check_counts_the_working_state_against_free_cuda_memory(monkeypatch):
    """On CUDA the budget is the free memory plus what torch's cache holds unused (read without a GPU here)."""
    from scoregen.samplers.common import WORKING_COPIES, check_memory

    gb = 10 ** 9
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (3 * gb, 80 * gb))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 2 * gb)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 1 * gb)
    cuda, n = torch.device("cuda"), 4 * gb // (4 * WORKING_COPIES)          # n samples of 4 bytes: 4 GB of state
    check_memory((n, 1), torch.float32, cuda)
    with pytest.raises(ValueError, match="needs about 4.0 GB of sampler state but cuda has 4.0 GB"):
        check_memory((n + 1, 1), torch.float32, cuda)
    with pytest.raises(ValueError, match="needs about 4.5 GB"):                  # a latent model's decoded samples
        check_memory((n // 2, 1), torch.float32, cuda, data_shape=(5,))
