"""EDM's Heun sampler and predictor-corrector sampling against closed forms: the exact PF-ODE map of a
Gaussian (order 2), the identities with DDIM, torchdiffeq's Heun, DDPM and Euler-Maruyama, and the
Gaussian-mixture oracle's exact density (mean log-density z-score, covariance error over its floor)."""
import math

import pytest
import torch

import scoregen.samplers as S
from scoregen.core.flow import Model
from scoregen.samplers.grids import sampling_grid
from scoregen.samplers.heun import sample_heun
from scoregen.samplers.pc import sample_pc
from scoregen.core.sde import VPSDE

from oracle import F64, GAUSS, GMM, N, SDE, distance, exact_flow, gen, rms


def counting(calls, eps_model):
    def model(x, t):
        calls.append(t)
        return eps_model(x, t)
    return model


# --- heun: order 2 and its identities --------------------------------------------------------------

def test_heun_converges_at_order_2_to_the_exact_gaussian_flow():
    """On the quadratic grid t_i = (i / K)^2 the steps are uniform in s = sigma / alpha near the data, so the
    last (Euler, onto s = 0) step's error, ~ s(t_1)^2 ~ beta_min / K^2, is of the Heun steps' order. (On the
    uniform grid s(t_1)^2 ~ beta_min / K and the slope is near -1.5; on karras / log_snr the last step from
    t_min to 0 is the same for every K, an error floor that bends the slope.) Measured: 5.6e-2, 1.2e-2,
    2.9e-3, 7.0e-4; slopes -2.20, -2.09, -2.04."""
    n, steps = 200, (10, 20, 40, 80)
    x1 = torch.randn(n, 2, generator=gen(), dtype=F64)
    errs = [rms(S.sample(GAUSS.eps_model(SDE), SDE, (n, 2), "heun", k, grid="quadratic", generator=gen(),
                         dtype=F64).x, exact_flow(x1, 0.0)) for k in steps]
    slopes = [math.log(errs[i + 1] / errs[i]) / math.log(2) for i in range(3)]
    assert errs[-1] < 1e-3, errs
    assert all(-2.3 < s < -1.9 for s in slopes) and abs(slopes[-1] + 2) < 0.1, (errs, slopes)


def test_heun_on_a_grid_ending_above_zero_is_heuns_method_for_the_pf_ode_in_s():
    """Every step a Heun step (2K calls): torchdiffeq's heun2 on dy/ds = eps (``ode``, variable "edm")."""
    t, _ = sampling_grid(SDE, "karras", 7, None, onto_zero=False)
    kw = dict(grid=t, dtype=F64)
    heun = S.sample(GMM.eps_model(SDE), SDE, (300, 2), "heun", generator=gen(), **kw)
    ode = S.sample(GMM.eps_model(SDE), SDE, (300, 2), "ode", solver="heun2", variable="edm", final_denoise=False,
                   generator=gen(), **kw)
    assert heun.nfe == ode.nfe == 14 and (heun.x - ode.x).abs().max() < 1e-9


def test_heun_last_euler_step_is_x0_hat_and_one_step_is_ddim():
    model = Model(GMM.eps_model(SDE), SDE, torch.device("cpu"), F64)
    x = torch.randn(100, 2, generator=gen(), dtype=F64)
    out = sample_heun(model, x, torch.tensor([0.3, 0.0], dtype=F64))
    assert model.nfe == 1 and (out - model.x0(x, 0.3)).abs().max() < 1e-12
    heun = S.sample(GMM.eps_model(SDE), SDE, (100, 2), "heun", 1, generator=gen(), dtype=F64)
    ddim = S.sample(GMM.eps_model(SDE), SDE, (100, 2), "ddim", 1, generator=gen(), dtype=F64)
    assert heun.nfe == ddim.nfe == 1 and (heun.x - ddim.x).abs().max() < 1e-12


@pytest.mark.parametrize("grid, onto_zero, nfe", [("karras", True, 2 * 6 - 1), ("uniform", True, 2 * 6 - 1),
                                                  ("karras", False, 2 * 6)])
def test_heun_nfe_counts_every_call(grid, onto_zero, nfe):
    calls = []
    t, _ = sampling_grid(SDE, grid, 6, None, onto_zero)
    res = S.sample(counting(calls, GMM.eps_model(SDE)), SDE, (16, 2), "heun", grid=t, generator=gen())
    assert res.nfe == len(calls) == nfe
    assert all(c.shape == (16,) and bool(((c > 0) & (c <= 1)).all()) for c in calls)


def test_heun_churn_is_seeded_and_s_churn_0_draws_no_noise():
    model = Model(GMM.eps_model(SDE), SDE, torch.device("cpu"), F64)
    t, _ = sampling_grid(SDE, "karras", 8, None, onto_zero=True)
    x = torch.randn(200, 2, generator=gen(), dtype=F64)
    g = gen(5)
    plain = sample_heun(model, x, t, generator=g, s_noise=1.1)
    assert torch.equal(g.get_state(), gen(5).get_state())                 # s_churn = 0: no draws
    churned = [sample_heun(model, x, t, s_churn=5.0, generator=gen(seed)) for seed in (1, 1, 2)]
    assert torch.equal(churned[0], churned[1]) and not torch.allclose(churned[0], churned[2])
    assert (churned[0] - plain).abs().mean() > 0.05
    # churn only where s_tmin <= s_i <= s_tmax: a window above every s_i is no churn at all
    assert torch.equal(sample_heun(model, x, t, s_churn=5.0, s_tmin=1e6, generator=gen(1)), plain)
    # gamma = min(s_churn / K, sqrt(2) - 1); t_hat stays <= 1 (the first step cannot churn above t = 1)
    calls = []
    res = S.sample(counting(calls, GMM.eps_model(SDE)), SDE, (16, 2), "heun", 8, grid="karras", s_churn=100.0,
                   generator=gen(), dtype=F64)
    assert res.nfe == len(calls) == 15 and all(bool(((c > 0) & (c <= 1)).all()) for c in calls)
    assert calls[0][0] == 1 and 1 > calls[2][0] > t[1]                    # step 2 starts at t_hat > t_1


# --- pc: identities --------------------------------------------------------------------------------

def _pc_algorithm_4(eps_model, betas, x, generator, corrector_steps, snr):
    """Song et al. 2021, Algorithm 4 (VP), written from the paper, from index N down to 1, then x0_hat at
    t = 1 / N; the corrector's alpha is 1 - beta_{i+1}, the predictor's beta (see ``sample_pc``)."""
    n, abar = len(betas), torch.cumprod(1 - betas, 0)

    def score(x, i):                                   # s_theta(x, i) at t = i / N
        return -eps_model(x, torch.full((x.shape[0],), i / n, dtype=F64)) / (1 - abar[i - 1]).sqrt()

    def norm(v):
        return v.norm(dim=1).mean()

    for i in reversed(range(1, n)):
        beta = betas[i]                                # beta_{i+1}
        x = (2 - (1 - beta).sqrt()) * x + beta * score(x, i + 1)
        x = x + beta.sqrt() * torch.randn(x.shape, generator=generator, dtype=F64)
        for _ in range(corrector_steps):
            g = score(x, i)
            z = torch.randn(x.shape, generator=generator, dtype=F64)
            e = 2 * (1 - beta) * (snr * norm(z) / norm(g)) ** 2
            x = x + e * g + (2 * e).sqrt() * z
    eps = eps_model(x, torch.full((x.shape[0],), 1 / n, dtype=F64))
    return (x - (1 - abar[0]).sqrt() * eps) / abar[0].sqrt()


@pytest.mark.parametrize("corrector_steps", [0, 2])
def test_pc_on_the_discrete_schedule_is_algorithm_4(corrector_steps):
    betas = torch.linspace(1e-3, 0.2, 50, dtype=F64)
    sde = VPSDE.from_ddpm_betas(betas)
    t = torch.arange(50, 0, -1, dtype=F64) / 50        # 1, ..., 1 / N

    def eps_model(x, t):                               # any smooth function: the identity is exact
        return torch.tanh(x) * t[:, None] + 0.1 * x.flip(1)

    g = gen()
    ref = _pc_algorithm_4(eps_model, betas, torch.randn(100, 2, generator=g, dtype=F64), g, corrector_steps, 0.3)
    res = S.sample(eps_model, sde, (100, 2), "pc", grid=t, corrector_steps=corrector_steps, snr=0.3,
                   generator=gen(), dtype=F64)
    assert res.nfe == 49 * (1 + corrector_steps) + 1 and (res.x - ref).abs().max() < 1e-10


def test_pc_ancestral_predictor_is_ddpm_with_variance_beta():
    """Draw for draw, except that DDPM adds no noise on its last step."""
    t, _ = sampling_grid(SDE, "log_snr", 30, None, onto_zero=False)
    pc = S.sample(GMM.eps_model(SDE), SDE, (200, 2), "pc", grid=t, predictor="ancestral", corrector_steps=0,
                  final_denoise=False, generator=gen(), dtype=F64)
    ddpm = S.sample(GMM.eps_model(SDE), SDE, (200, 2), "ddpm", grid=t, variance="beta", generator=gen(), dtype=F64)
    g = gen()
    z_last = [torch.randn(200, 2, generator=g, dtype=F64) for _ in range(31)][-1]
    b_last = SDE.transition(t[-2], t[-1])[1]
    assert pc.nfe == ddpm.nfe == 30 and (pc.x - ddpm.x - b_last.sqrt() * z_last).abs().max() < 1e-12


def test_pc_reverse_diffusion_predictor_is_euler_maruyama_to_first_order():
    """Same Brownian draws as ``sde`` (euler): pathwise distance on the Gaussian falls like 1 / K (measured
    0.099, 0.048, 0.023 at 50, 100, 200 steps)."""
    def run(method, k, **options):
        return S.sample(GAUSS.eps_model(SDE), SDE, (200, 2), method, k, generator=gen(), dtype=F64, **options).x

    d = [rms(run("pc", k, corrector_steps=0), run("sde", k, solver="euler")) for k in (50, 100, 200)]
    assert d[-1] < 0.03 and all(1.8 < a / b < 2.2 for a, b in zip(d, d[1:])), d


# --- distributions against the mixture oracle ---------------------------------------------------


def gmm_distance(method, k, floors, **options):
    return distance(S.sample(GMM.eps_model(SDE), SDE, (N, 2), method, k, generator=gen(), **options).x, floors)


@pytest.mark.parametrize("predictor", ["reverse_diffusion", "ancestral"])
def test_pc_converges_in_distribution_and_the_corrector_helps(predictor, floors):
    """Quadratic grid, float32. |z| falls with K (measured, reverse_diffusion: 52.6, 16.7, 1.2; ancestral:
    41.4, 13.7, 1.2 at 10, 20, 200 steps) and is within the floor at 200 steps. At 20 steps each Langevin
    step cuts |z| by ~40% (26.5, 16.7, 9.7 and 22.7, 13.7, 8.1 for 0, 1, 2 corrector steps)."""
    kw = dict(grid="quadratic", predictor=predictor)
    z = [abs(gmm_distance("pc", k, floors, **kw)[0]) for k in (10, 20)]
    z_fine, c_fine = gmm_distance("pc", 200, floors, **kw)
    assert z[0] > 30 and z[1] < z[0] / 2 and abs(z_fine) < 4 and c_fine < 3, (z, z_fine, c_fine)
    z0, z1, z2 = (abs(gmm_distance("pc", 20, floors, corrector_steps=m, **kw)[0]) for m in (0, 1, 2))
    assert z1 == z[1] and z1 < 0.8 * z0 and z2 < 0.8 * z1, (z0, z1, z2)


@pytest.mark.parametrize("s_churn", [0.0, 10.0])
def test_heun_converges_in_distribution(s_churn, floors):
    """Karras grid (EDM's), float32: |z| 24.1 (deterministic) / 54.3 (churn) at 10 steps, within the floor at
    80 (measured -0.8 / -0.1)."""
    z = abs(gmm_distance("heun", 10, floors, grid="karras", s_churn=s_churn)[0])
    z_fine, c_fine = gmm_distance("heun", 80, floors, grid="karras", s_churn=s_churn)
    assert z > 10 and abs(z_fine) < 4 and c_fine < 3, (z, z_fine, c_fine)


# --- bookkeeping: NFE, seeds, dtypes, grids, trajectories, no host reads, bad options ---------------

@pytest.mark.parametrize("predictor", ["reverse_diffusion", "ancestral"])
@pytest.mark.parametrize("corrector_steps, final_denoise", [(0, True), (1, True), (3, False)])
def test_pc_nfe_and_seeds(predictor, corrector_steps, final_denoise):
    calls, k = [], 5
    kw = dict(predictor=predictor, corrector_steps=corrector_steps, final_denoise=final_denoise)
    a = S.sample(counting(calls, GMM.eps_model(SDE)), SDE, (64, 2), "pc", k, generator=gen(1), **kw)
    assert a.nfe == len(calls) == k * (1 + corrector_steps) + final_denoise
    assert all(c.shape == (64,) and bool(((c > 0) & (c <= 1)).all()) for c in calls)
    b = S.sample(GMM.eps_model(SDE), SDE, (64, 2), "pc", k, generator=gen(1), **kw)
    c = S.sample(GMM.eps_model(SDE), SDE, (64, 2), "pc", k, generator=gen(2), **kw)
    assert torch.equal(a.x, b.x) and not torch.allclose(a.x, c.x)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("method, options", [("heun", {}), ("heun", {"s_churn": 2.0}), ("pc", {}),
                                             ("pc", {"predictor": "ancestral", "corrector_steps": 2})])
def test_dtypes_explicit_grids_and_trajectories(method, options, dtype):
    onto_zero = method == "heun"
    t, _ = sampling_grid(SDE, "karras", 6, None, onto_zero)
    kw = dict(dtype=dtype, **options)
    named = S.sample(GMM.eps_model(SDE), SDE, (32, 2), method, 6, grid="karras", generator=gen(), **kw)
    explicit = S.sample(GMM.eps_model(SDE), SDE, (32, 2), method, grid=t, return_trajectory=True, generator=gen(),
                        **kw)
    assert named.x.dtype == dtype and torch.equal(named.x, explicit.x) and named.nfe == explicit.nfe
    assert explicit.options["grid"] == "explicit" and explicit.options["steps"] == 6
    times, xs = explicit.trajectory
    assert times[0] == 1 and times[-1] == 0 and bool((times[1:] < times[:-1]).all())
    assert len(times) == 7 + (not onto_zero) and torch.equal(xs[-1], explicit.x)
    odd = torch.tensor([0.9, 0.5, 0.2, 0.05, 0.01], dtype=F64)     # any decreasing grid, starting below 1
    res = S.sample(GMM.eps_model(SDE), SDE, (32, 2), method, grid=odd, generator=gen(), **kw)
    assert bool(torch.isfinite(res.x).all()) and res.nfe == {"heun": 8, "pc": 4 * (1 + options.get(
        "corrector_steps", 1)) + 1}[method]


def test_the_loops_never_read_a_device_value():
    """On the meta device tensors have no values: ``.item()``, ``bool()``, ``float()`` of one raise. A CPU
    stand-in for tests/test_gpu_sync.py's CUDA check."""
    meta = torch.device("meta")
    model = Model(lambda x, t: torch.tanh(x) * t[:, None], SDE, meta, torch.float32)
    x = torch.empty(8, 2, device=meta)
    for onto_zero in (True, False):
        t, _ = sampling_grid(SDE, "karras", 5, None, onto_zero)
        assert sample_heun(model, x, t, s_churn=10.0).device == meta
    assert sample_pc(model, x, t, corrector_steps=2).device == meta
    assert sample_pc(model, x, t, predictor="ancestral").device == meta


def test_registry_entries():
    assert S.method_options("heun") == {"s_churn": 0.0, "s_tmin": 0.0, "s_tmax": math.inf, "s_noise": 1.0}
    assert S.method_options("pc") == {"predictor": "reverse_diffusion", "corrector_steps": 1, "snr": 0.16,
                                      "final_denoise": True}
    assert S.choices("pc") == {"predictor": ("reverse_diffusion", "ancestral"), "final_denoise": (True, False)}
    text = S.describe()
    assert "heun: EDM's Heun sampler (Karras et al. 2022, Algorithm 2)" in text
    assert "pc: Predictor-corrector sampling (Song et al. 2021, Algorithm 4)" in text


@pytest.mark.parametrize("method, kwargs, match", [
    ("heun", {"s_churn": -1.0}, r"s_churn must be a number in \[0.0, inf\); got -1.0"),
    ("heun", {"s_churn": math.inf}, r"s_churn must be a number in \[0.0, inf\)"),
    ("heun", {"s_noise": 0.0}, r"s_noise must be a number in \(0.0, inf\); got 0.0"),
    ("heun", {"s_tmin": -0.5}, r"s_tmin must be a number in \[0.0, inf\)"),
    ("heun", {"s_tmax": "big"}, r"s_tmax must be a number in \[0.0, inf\]; got 'big'"),
    ("heun", {"s_tmin": 2.0, "s_tmax": 1.0}, "s_tmin must not exceed s_tmax"),
    ("heun", {"eta": 0.5}, "option.s. eta do not belong to method 'heun'"),
    ("pc", {"predictor": "euler"}, "predictor must be one of 'reverse_diffusion', 'ancestral'; got 'euler'"),
    ("pc", {"corrector_steps": -1}, "corrector_steps must be a non-negative integer; got -1"),
    ("pc", {"corrector_steps": 1.5}, "corrector_steps must be a non-negative integer; got 1.5"),
    ("pc", {"corrector_steps": True}, "corrector_steps must be a non-negative integer; got True"),
    ("pc", {"snr": 0.0}, r"snr must be a number in \(0.0, inf\); got 0.0"),
    ("pc", {"snr": -0.1}, r"snr must be a number in \(0.0, inf\)"),
    ("pc", {"final_denoise": 1}, "final_denoise must be one of True, False; got 1"),
    ("pc", {"grid": torch.tensor([1.0, 0.5, 0.0], dtype=F64)}, "grid must end above t = 0"),
])
def test_bad_options_raise_named_errors(method, kwargs, match):
    steps = None if "grid" in kwargs else 4
    with pytest.raises(ValueError, match=match):
        S.sample(GMM.eps_model(SDE), SDE, (8, 2), method, steps, **kwargs)
