"""DEIS and iPNDM: order of convergence against the exact Gaussian PF-ODE map, order 1 is DDIM, basis "rho" is
iPNDM, iPNDM against a transcription of k-diffusion's ``sample_ipndm_v``, basis "log_rho" against diffusers'
DEISMultistepScheduler, the quadrature of the coefficients, and bookkeeping: NFE, records, dtypes, bad options."""
import pytest
import torch

import scoregen.samplers as S
from scoregen.core.sde import VPSDE
from scoregen.samplers.deis import ab_coefficients
from scoregen.samplers.grids import sampling_grid, time_grid

from oracle import F64, GAUSS, GMM, SDE, TinyNet, exact_flow, gen, rms, slopes


# --- order of convergence on the exact Gaussian flow ----------------------------------------------
#
# Uniform grids from t = 1 to T_END = 0.3 (where x0_hat along the flow is still curved; see test_dpmpp_unipc.py).
# The slopes approach the order from below. The warm-up (step i has order <= i + 1) starts with an Euler step whose
# O(h^2) error is small at t = 1 (eps hardly changes with rho at high noise) but stays: at much finer grids it takes
# over (iPNDM order 4: -3.74 from 160 to 320 steps, -3.43 from 320 to 640, where the error left by its first step is
# half the total). Measured slopes are in the comments.

T_END = 0.3
COARSE, FINE = (10, 20, 40), (40, 80, 160)


@pytest.mark.parametrize("method, options, steps, order", [
    ("deis", {"order": 1, "basis": "t"}, COARSE, 1),                    # -0.99 -0.99
    ("deis", {"order": 2, "basis": "t"}, (20, 40, 80), 2),              # -1.88 -1.94
    ("deis", {"order": 3, "basis": "t"}, FINE, 3),                      # -2.90 -2.94
    ("deis", {"order": 1, "basis": "rho"}, COARSE, 1),
    ("deis", {"order": 2, "basis": "rho"}, (20, 40, 80), 2),            # -1.84 -1.91
    ("deis", {"order": 3, "basis": "rho"}, FINE, 3),                    # -2.81 -2.90
    ("deis", {"order": 1, "basis": "log_rho"}, COARSE, 1),
    ("deis", {"order": 2, "basis": "log_rho"}, (20, 40, 80), 2),        # -1.88 -1.94
    ("deis", {"order": 3, "basis": "log_rho"}, FINE, 3),                # -2.92 -2.95
    ("ipndm", {"order": 1}, COARSE, 1),
    ("ipndm", {"order": 2}, (20, 40, 80), 2),                           # = deis rho
    ("ipndm", {"order": 3}, FINE, 3),
    ("ipndm", {"order": 4}, FINE, 4),                                   # -3.68 -3.79
])
def test_solvers_converge_at_their_order(method, options, steps, order):
    n = 100
    x1 = torch.randn(n, 2, generator=gen(), dtype=F64)
    errs = [rms(S.sample(GAUSS.eps_model(SDE), SDE, (n, 2), method, grid=time_grid(SDE, "uniform", k, T_END), x1=x1,
                         dtype=F64, **options).x, exact_flow(x1, T_END)) for k in steps]
    assert errs[-1] < 0.01
    for slope in slopes(errs, steps):
        assert -order - 0.35 < slope < -order + 0.35, (errs, slopes(errs, steps))


# --- relations: DDIM, iPNDM, k-diffusion's ipndm_v ------------------------------------------------

EXPLICIT = [torch.tensor([1.0, 0.7, 0.45, 0.2, 0.08, 0.01, 0.0], dtype=F64),   # odd steps, onto the data
            torch.tensor([0.9, 0.5, 0.2, 0.05], dtype=F64)]                    # starts below 1, ends above 0
GRIDS = ["uniform", "log_snr", "karras", *EXPLICIT]


def run(method, grid, steps=12, **options):
    steps = None if isinstance(grid, torch.Tensor) else steps
    return S.sample(GMM.eps_model(SDE), SDE, (300, 2), method, steps, grid=grid, generator=gen(), dtype=F64,
                    **options).x


@pytest.mark.parametrize("grid", GRIDS, ids=str)
def test_first_order_is_ddim(grid):
    ddim = run("ddim", grid)
    for basis in ("t", "rho", "log_rho"):
        assert (run("deis", grid, order=1, basis=basis) - ddim).abs().max() < 1e-10, basis
    assert (run("ipndm", grid, order=1) - ddim).abs().max() < 1e-10


@pytest.mark.parametrize("grid", GRIDS, ids=str)
def test_basis_rho_is_ipndm(grid):
    for order in (1, 2, 3):
        assert (run("deis", grid, order=order, basis="rho") - run("ipndm", grid, order=order)).abs().max() < 1e-12


def ipndm_v_coefficients(sigma, i, order):
    """[coeff1, ..., coeff_order] of step i of ``sample_ipndm_v`` (ComfyUI's k-diffusion, from zju-pi/diff-sampler's
    ``ipndm_v_sampler``), transcribed: x_next = x_cur + (t_next - t_cur) sum_j coeff_j d_j, d_0 = d_cur."""
    t_steps, t_cur, t_next = sigma, sigma[i], sigma[i + 1]
    if order == 1:
        return [1.0]
    h_n = (t_next - t_cur)
    h_n_1 = (t_cur - t_steps[i - 1])
    if order == 2:
        coeff1 = (2 + (h_n / h_n_1)) / 2
        coeff2 = -(h_n / h_n_1) / 2
        return [coeff1, coeff2]
    h_n_2 = (t_steps[i - 1] - t_steps[i - 2])
    temp = (1 - h_n / (3 * (h_n + h_n_1)) * (h_n * (h_n + h_n_1)) / (h_n_1 * (h_n_1 + h_n_2))) / 2
    if order == 3:
        coeff1 = (2 + (h_n / h_n_1)) / 2 + temp
        coeff2 = -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp
        coeff3 = temp * h_n_1 / h_n_2
        return [coeff1, coeff2, coeff3]
    h_n_3 = (t_steps[i - 2] - t_steps[i - 3])
    temp1 = temp
    temp2 = ((1 - h_n / (3 * (h_n + h_n_1))) / 2
             + (1 - h_n / (2 * (h_n + h_n_1))) * h_n / (6 * (h_n + h_n_1 + h_n_2))) \
        * (h_n * (h_n + h_n_1) * (h_n + h_n_1 + h_n_2)) / (
            h_n_1 * (h_n_1 + h_n_2) * (h_n_1 + h_n_2 + h_n_3))
    coeff1 = (2 + (h_n / h_n_1)) / 2 + temp1 + temp2
    coeff2 = -(h_n / h_n_1) / 2 - (1 + h_n_1 / h_n_2) * temp1 - (1 + (h_n_1 / h_n_2) + (
        h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3)))) * temp2
    coeff3 = temp1 * h_n_1 / h_n_2 + ((h_n_1 / h_n_2) + (h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3))) * (
        1 + h_n_2 / h_n_3)) * temp2
    coeff4 = -temp2 * (h_n_1 * (h_n_1 + h_n_2) / (h_n_2 * (h_n_2 + h_n_3))) * h_n_1 / h_n_2
    return [coeff1, coeff2, coeff3, coeff4]


def ipndm_v(eps_model, x1, t, max_order):
    """``sample_ipndm_v`` on our grid: EDM's x / alpha in sigma = rho = sigma / alpha, d = eps (= (x - denoised) /
    sigma), the order min(max_order, i + 1), the step onto sigma = 0 x_next = denoised; back to x at the end."""
    sigma = (SDE.sigma(t) / SDE.alpha(t)).tolist()
    x_next, buffer_model = x1 / SDE.alpha(t[0]), []
    for i in range(len(t) - 1):
        x_cur = x_next
        d_cur = eps_model(SDE.alpha(t[i]) * x_cur, t[i].expand(len(x1)))
        order = min(max_order, i + 1)
        if sigma[i + 1] == 0:
            x_next = x_cur - sigma[i] * d_cur                       # denoised
        else:
            coeff = ipndm_v_coefficients(sigma, i, order)
            x_next = x_cur + (sigma[i + 1] - sigma[i]) * sum(c * d for c, d in zip(coeff, [d_cur] + buffer_model[::-1]))
        buffer_model = (buffer_model + [d_cur])[-(max_order - 1):] if max_order > 1 else []
    return SDE.alpha(t[-1]) * x_next


def rho_uniform_grid(steps, rho_end):
    """Times uniform in rho from t = 1 to rho_end, then t = 0."""
    rho = torch.linspace(float(SDE.sigma(1.0) / SDE.alpha(1.0)), rho_end, steps, dtype=F64)
    t = SDE.t_from_log_snr(-rho.log())
    t[0] = 1.0
    return torch.cat([t, t.new_zeros(1)])


@pytest.mark.parametrize("order, grid", [(1, EXPLICIT[0]), (2, EXPLICIT[0]), (1, "karras"), (2, "karras"),
                                         (3, rho_uniform_grid(12, 0.05))], ids=str)
def test_ipndm_equals_k_diffusion_ipndm_v(order, grid):
    """Orders 1 and 2 on any grid; order 3 on a grid uniform in rho, where its closed form is Adams-Bashforth."""
    t = grid if isinstance(grid, torch.Tensor) else sampling_grid(SDE, grid, 12, None, onto_zero=True)[0]
    x1 = torch.randn(300, 2, generator=gen(), dtype=F64)
    ours = S.sample(GMM.eps_model(SDE), SDE, (300, 2), "ipndm", grid=t, x1=x1, dtype=F64, order=order).x
    assert (ours - ipndm_v(GMM.eps_model(SDE), x1, t, order)).abs().max() < 1e-10


def test_k_diffusion_ipndm_v_of_orders_3_and_4_is_not_adams_bashforth():
    """``sample_ipndm_v``'s closed forms of order 3 and 4 are not the variable-step Adams-Bashforth steps that
    ``ipndm`` takes (which integrate v^k, k < p, exactly). On steps uniform in rho its order 3 is AB3, its order
    4 is not AB4: it weighs d_cur 57/24, not 55/24 (AB4 plus a twelfth of the third difference: exact for
    quadratics, not cubics). On a non-uniform grid its order 3 is not exact for quadratics (``temp`` misses a
    parenthesis: 1 - a * b / 2 where (1 - a) * b / 2 is AB3) and its order-4 weights do not even sum to 1."""
    def exact_for(coeff, k):
        integral = (s[i + 1] ** (k + 1) - s[i] ** (k + 1)) / (k + 1)
        return (coeff * h * nodes[:len(coeff)] ** k).sum().item() == pytest.approx(integral, rel=1e-10)

    for t, uniform in ((rho_uniform_grid(8, 1.0), True), (time_grid(SDE, "karras", 8, 0.01), False)):
        sigma = SDE.sigma(t) / SDE.alpha(t)
        i, s = 4, sigma.tolist()
        h, nodes = s[i + 1] - s[i], sigma[i - torch.arange(4)]
        ab3, ab4 = (ab_coefficients(SDE, t, q, "rho")[1][i] / h for q in (3, 4))
        theirs3, theirs4 = (torch.tensor(ipndm_v_coefficients(s, i, q), dtype=F64) for q in (3, 4))
        assert all(exact_for(ab3, k) for k in range(3)) and all(exact_for(ab4, k) for k in range(4))
        assert not exact_for(theirs4, 3)
        if uniform:
            assert torch.allclose(theirs3, ab3, rtol=1e-12, atol=0) and all(exact_for(theirs4, k) for k in range(3))
            assert theirs4[0].item() == pytest.approx(57 / 24) and ab4[0].item() == pytest.approx(55 / 24)
        else:
            assert exact_for(theirs3, 1) and not exact_for(theirs3, 2)
            assert abs(theirs4.sum().item() - 1) > 1e-4


# --- equality with diffusers' DEISMultistepScheduler (solver_type "logrho") -----------------------
#
# Same model, same times (reference.grid: timestep k is t = (k + 1) / N; the last step lands on t = 1 / N), same
# prior draws, lower_order_final=False (diffusers' default True lowers the last two steps of grids of < 15 steps).
# diffusers keeps its sigma table in float32 and computes each step's alpha, rho and closed-form coefficients (the
# integrals of its Lagrange polynomials in log rho, F(rho_s) - F(rho_t)) from it in float32: its coefficients are
# off by up to 1e-5 relative at 20 steps (in float64 they are our quadrature's to 1e-14), and as shipped it differs
# from ours by up to 5.8e-4 (order 3, 20 steps, the mixture in float64; 1.4e-4 for the float32 net). Given the
# float64 sigmas of our SDE at the same times, the same diffusers steps are ours to 2e-13 (tolerance: 1e-10).

def deis_scheduler(order, steps):
    diffusers = pytest.importorskip("diffusers")
    sched = diffusers.DEISMultistepScheduler(num_train_timesteps=1000, trained_betas=SDE.ddpm_betas(1000).tolist(),
                                             solver_order=order, lower_order_final=False)
    sched.set_timesteps(steps)
    return sched


@pytest.mark.parametrize("steps", [5, 10, 20])
@pytest.mark.parametrize("order", [1, 2, 3])
def test_log_rho_equals_diffusers_deis(order, steps):
    reference = pytest.importorskip("scoregen.samplers.reference")
    sched = deis_scheduler(order, steps)
    t = reference.grid(sched)
    eps_model, x1 = GMM.eps_model(SDE), torch.randn(500, 2, generator=gen(), dtype=F64)
    with torch.no_grad():
        res = S.sample(eps_model, SDE, (500, 2), "deis", grid=t, x1=x1, dtype=F64, order=order, basis="log_rho")
        x_ref, nfe = reference.run(sched, eps_model, x1)                 # as shipped: float32 sigmas
        assert res.nfe == nfe == steps and (res.x - x_ref).abs().max() < 1e-3
        sched.set_timesteps(steps)
        sched.sigmas = SDE.sigma(t) / SDE.alpha(t)                       # float64 sigmas, same times
        x = x1
        for k in sched.timesteps:
            x = sched.step(eps_model(x, torch.full((500,), (int(k) + 1) / 1000, dtype=F64)), k, x).prev_sample
    assert (res.x - x).abs().max() < 1e-10
    net, x1 = TinyNet(), torch.randn(8, 1, 8, 8, generator=gen())         # float32, an image-shaped net
    with torch.no_grad():
        res = S.sample(net, SDE, (8, 1, 8, 8), "deis", grid=t, x1=x1, order=order, basis="log_rho")
        assert (res.x - reference.run(sched, net, x1)[0]).abs().max() < 1e-3


# --- the coefficients -----------------------------------------------------------------------------

@pytest.mark.parametrize("sde", [SDE, VPSDE("cosine"), VPSDE.from_ddpm_betas(SDE.ddpm_betas(1000))], ids=repr)
def test_the_quadrature_is_converged(sde):
    """64 and 128 Gauss-Legendre nodes agree to rounding on grids from 1 to 0, coarse steps included (2 and 3 steps
    span rho from 150 to 0.01; quadrature in rho instead of log rho loses 6 digits there for basis "log_rho"); the
    discrete schedule's t(rho) has kinks at its knots, which basis "t" integrates between."""
    for grid, steps in (("uniform", 10), ("log_snr", 10), ("karras", 3), ("log_snr", 2), ("uniform", 40)):
        t = sampling_grid(sde, grid, steps, None, onto_zero=True)[0]
        for basis in ("t", "rho", "log_rho"):
            _, c64 = ab_coefficients(sde, t, 3, basis, nodes=64)
            p, c128 = ab_coefficients(sde, t, 3, basis, nodes=128)
            scale = c128.abs().amax(1, keepdim=True)
            assert ((c64 - c128).abs() <= 1e-12 * scale).all(), (grid, steps, basis)
            last = [1] if t[-1] == 0 else [min(3, steps)]                      # onto t = 0: order 1
            assert p == [1, 2, 3][:steps - 1] + [3] * (steps - 4) + last        # warm-up


def test_coefficients_integrate_polynomials_of_their_order_exactly():
    """C_ij sum to rho_s - rho_t and integrate v^k (k < p) exactly in their variable v: with v = rho, the
    Adams-Bashforth weights; the step onto t = 0 is x0_hat (C = -rho_t)."""
    t = time_grid(SDE, "karras", 8, 0.01)
    t = torch.cat([t, t.new_zeros(1)])
    rho = SDE.sigma(t) / SDE.alpha(t)
    for basis, v in (("t", t), ("rho", rho), ("log_rho", rho.log())):
        p, c = ab_coefficients(SDE, t, 4, basis)
        assert p == [1, 2, 3, 4, 4, 4, 4, 4, 1] and c[-1, 0] == -rho[-2] and (c[-1, 1:] == 0).all()
        for i in range(1, 8):
            assert torch.allclose(c[i].sum(), rho[i + 1] - rho[i], rtol=1e-12, atol=0)
            if basis == "rho":
                for k in range(p[i]):
                    exact = (rho[i + 1] ** (k + 1) - rho[i] ** (k + 1)) / (k + 1)
                    assert torch.allclose((c[i, :p[i]] * v[i - torch.arange(p[i])] ** k).sum(), exact, rtol=1e-10)


# --- bookkeeping ----------------------------------------------------------------------------------

@pytest.mark.parametrize("method, options", [("deis", {}), ("deis", {"basis": "log_rho", "order": 2}),
                                             ("ipndm", {}), ("ipndm", {"order": 2})], ids=str)
def test_explicit_grids_dtypes_trajectories_and_nfe(method, options):
    grid = EXPLICIT[1]
    x1 = torch.randn(64, 2, generator=gen(), dtype=F64)
    out = {}
    for dtype in (torch.float32, F64):
        res = S.sample(GMM.eps_model(SDE), SDE, (64, 2), method, grid=grid, x1=x1.to(dtype), dtype=dtype,
                       return_trajectory=True, **options)
        t, x = res.trajectory
        assert res.x.dtype == dtype and res.nfe == 3 and bool(torch.isfinite(res.x).all())
        assert torch.allclose(t.double(), grid, atol=1e-7) and x.shape == (4, 64, 2)
        assert torch.equal(x[0], x1.to(dtype)) and torch.equal(x[-1], res.x)
        out[dtype] = res.x
    assert (out[torch.float32].double() - out[F64]).abs().max() < 1e-4
    res = S.sample(GMM.eps_model(SDE), SDE, (16, 2), method, generator=gen(), **options)
    assert res.nfe == S.STEPS[method] == 10 and res.options["grid"] == "uniform" and S.is_deterministic(method)


@pytest.mark.parametrize("method, options, match", [
    ("deis", {"order": 4}, "order must be one of 1, 2, 3; got 4"),
    ("deis", {"order": True}, "order must be one of 1, 2, 3; got True"),
    ("deis", {"basis": "logrho"}, "basis must be one of 't', 'rho', 'log_rho'; got 'logrho'"),
    ("deis", {"lower_order_final": True}, "option.s. lower_order_final do not belong to method 'deis'"),
    ("ipndm", {"order": 5}, "order must be one of 1, 2, 3, 4; got 5"),
    ("ipndm", {"order": "4"}, "order must be one of 1, 2, 3, 4; got '4'"),
    ("ipndm", {"basis": "rho"}, "option.s. basis do not belong to method 'ipndm'"),
])
def test_bad_options_raise_a_named_error(method, options, match):
    with pytest.raises(ValueError, match=match):
        S.sample(GMM.eps_model(SDE), SDE, (8, 2), method, 5, **options)


def test_the_registry_reads_the_options():
    assert S.method_options("deis") == {"order": 3, "basis": "t"}
    assert S.method_options("ipndm") == {"order": 4}
    assert S.choices("deis") == {"order": (1, 2, 3), "basis": ("t", "rho", "log_rho")}
    assert S.steps_onto_zero("deis") and S.steps_onto_zero("ipndm")
    text = S.describe()
    assert "deis: DEIS (Zhang & Chen 2023)" in text and "ipndm: iPNDM (Zhang & Chen 2023)" in text
