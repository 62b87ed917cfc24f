"""The reverse SDE's Brownian motion (``samplers.sde.GridBrownian``): its increments and space-time
Levy area against their laws, Euler-Maruyama and SRA1 against the exact marginal of a Gaussian, and
the generator as the only source of randomness. Tolerances are 4 standard errors of the sample size."""
import math

import pytest
import torch

import scoregen.samplers as S
from scoregen.data.gmm import gaussian
from scoregen.samplers.sde import SOLVERS, GridBrownian
from scoregen.core.sde import VPSDE

F64 = torch.float64
SDE = VPSDE()
GAUSS = gaussian([0.5, -0.3], [[0.5, 0.2], [0.2, 0.3]])


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def path(levy_area="none", steps=100, size=(1000, 2)):
    """Every step of a GridBrownian, in order: W [K, n, D] and, with the space-time area, U."""
    bm = GridBrownian(steps, size, generator=gen(), device="cpu", dtype=F64, levy_area=levy_area)
    draws = [bm(torch.tensor(r, dtype=F64), torch.tensor(r + 1.0, dtype=F64), return_U=levy_area != "none")
             for r in range(steps)]
    return torch.stack(draws) if levy_area == "none" else [torch.stack(z) for z in zip(*draws)]


def test_increments_are_independent_standard_normals():
    """W(r + 1) - W(r) ~ N(0, 1) (dr = 1), uncorrelated across steps and coordinates."""
    w = path()
    se = 1 / w.numel() ** 0.5
    assert abs(w.mean()) < 4 * se and abs(w.var() - 1) < 4 * math.sqrt(2) * se
    for a, b in ((w[1:], w[:-1]), (w[..., 0], w[..., 1])):               # next step; other coordinate
        assert abs((a * b).mean()) < 4 / a.numel() ** 0.5


def test_space_time_levy_area_has_its_law():
    """U = int_r^{r+1} (W(s) - W(r)) ds, jointly Gaussian with W: Var U = 1/3, Cov(W, U) = 1/2, and
    H = U - W / 2 ~ N(0, 1/12) independent of W."""
    w, u = path("space-time")
    se = 1 / w.numel() ** 0.5                       # times the std of each statistic below
    h = u - w / 2
    assert abs(u.mean()) < 4 * math.sqrt(1 / 3) * se
    assert abs((u * u).mean() - 1 / 3) < 4 * math.sqrt(2) / 3 * se           # Var U^2 = 2 (1/3)^2
    assert abs((w * u).mean() - 1 / 2) < 4 * math.sqrt(7 / 12) * se         # Var WU = 1/3 + (1/2)^2
    assert abs(h.var() - 1 / 12) < 4 * math.sqrt(2) / 12 * se and abs((w * h).mean()) < 4 / 12 ** 0.5 * se


def test_steps_must_be_asked_for_in_order_once_each():
    bm = GridBrownian(3, (2, 2), generator=gen(), device="cpu", dtype=F64)
    t = [torch.tensor(r, dtype=F64) for r in (0.0, 1.0, 2.0)]
    bm(t[0], t[1])
    for args, kwargs in (((t[0], t[1]), {}), ((t[2], t[2] + 1), {}), ((t[1], t[1] + 0.5), {}),
                         ((t[1], t[2]), {"return_U": True}), ((t[1], t[2]), {"return_A": True})):
        with pytest.raises(ValueError, match="GridBrownian draws the steps"):
            bm(*args, **kwargs)


def exact_marginal(t):
    """x_t for x_0 ~ N(mu, Sigma): N(alpha_t mu, alpha_t^2 Sigma + sigma_t^2 I)."""
    t = torch.tensor(t, dtype=F64)
    alpha_t, sigma_t = SDE.alpha(t), SDE.sigma(t)
    return alpha_t * GAUSS.means[0], alpha_t ** 2 * GAUSS.covs[0] + sigma_t ** 2 * torch.eye(2, dtype=F64)


def moment_errors(x, mean, cov):
    """Sample mean and covariance errors in standard errors (Var of a Gaussian's sample cov_ij:
    (C_ii C_jj + C_ij^2) / n)."""
    n, d = x.shape[0], cov.diagonal()
    z_mean = (x.mean(0) - mean) / (d / n).sqrt()
    z_cov = (torch.cov(x.T) - cov) / ((d[:, None] * d[None, :] + cov ** 2) / n).sqrt()
    return z_mean.abs().max().item(), z_cov.abs().max().item()


@pytest.mark.parametrize("solver, coarse, fine", [("euler", 10, 200), ("srk", 5, 20)])
def test_solver_reaches_the_exact_gaussian_marginal(solver, coarse, fine):
    """The reverse SDE from N(0, I) at t = 1 to t_min lands on the exact marginal of a Gaussian: within
    4 standard errors at ``fine`` steps, and visibly not at ``coarse`` ones (the check has power)."""
    n = 20000
    mean, cov = exact_marginal(S.T_MIN)

    def z(steps):
        x = S.sample(GAUSS.eps_model(SDE), SDE, (n, 2), "sde", steps, solver=solver, final_denoise=False,
                     generator=gen(), dtype=F64).x
        return moment_errors(x, mean, cov)

    assert max(z(coarse)) > 8
    assert max(z(fine)) < 4, z(fine)


@pytest.mark.parametrize("solver", list(SOLVERS))
def test_the_generator_alone_fixes_the_samples(solver):
    """Same seed, same samples, whatever the global RNG; another seed, other samples."""
    def run(seed, global_seed):
        torch.manual_seed(global_seed)
        return S.sample(GAUSS.eps_model(SDE), SDE, (64, 2), "sde", 8, solver=solver, generator=gen(seed)).x

    a = run(1, 0)
    assert torch.equal(a, run(1, 123)) and not torch.allclose(a, run(2, 0))
