"""What the sampler tests share: the Gaussian with its exact PF-ODE map, the gmm2d mixture with its exact
density, a tiny image-shaped eps-net (equality with diffusers' schedulers), and the measures against them
(RMS error, convergence slopes, the z-score of the mean log-density and the covariance error in units of their
floors; the ``floors`` fixture is in conftest.py)."""
import math

import torch

from scoregen.data.gmm import gaussian, preset
from scoregen.core.sde import VPSDE

F64 = torch.float64
SDE = VPSDE()
GAUSS = gaussian([0.5, -0.3], [[0.5, 0.2], [0.2, 0.3]])
GMM = preset("gmm2d")
N = 4000  # samples per distribution check


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


class TinyNet(torch.nn.Module):
    """An image-shaped eps-model: sigma(t) x (exact for N(0, I) data) plus a small random conv net of (x, t)."""

    def __init__(self):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(0)
            self.a, self.b = torch.nn.Conv2d(2, 8, 3, padding=1), torch.nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x, t):
        tt = t.view(-1, 1, 1, 1).expand_as(x)
        h = self.b(torch.nn.functional.silu(self.a(torch.cat([x, tt], 1))))
        return SDE.sigma(t).view(-1, 1, 1, 1) * x + 0.3 * torch.tanh(h)


def exact_flow(x1, t):
    """The exact PF-ODE map of GAUSS from t = 1 to t."""
    return GAUSS.pf_ode_map(x1, t, SDE)


def rms(a, b):
    return (a - b).pow(2).sum(1).mean().sqrt().item()


def slopes(errs, steps):
    return [math.log(errs[i + 1] / errs[i]) / math.log(steps[i + 1] / steps[i]) for i in range(len(errs) - 1)]


def oracle_floors():
    """E_p[log p] and the standard error of a mean of N log-densities; the covariance error of exact draws."""
    big = GMM.log_prob(GMM.sample(200_000, generator=gen(7)))
    cov_floor = sum((torch.cov(GMM.sample(N, generator=gen(50 + s)).T) - GMM.covariance()).norm()
                    for s in range(4)).item() / 4
    return big.mean().item(), big.std().item() / N ** 0.5, cov_floor


def distance(x, floors):
    """(z-score of the mean log-density under the oracle, covariance error in units of its floor)."""
    mean_logp, se, cov_floor = floors
    x = x.to(F64)
    return ((GMM.log_prob(x).mean().item() - mean_logp) / se,
            (torch.cov(x.T) - GMM.covariance()).norm().item() / cov_floor)
