"""k-NN manifold metrics of a sample against a reference sample, in one feature space.

Improved precision and recall (Kynkäänniemi et al. 2019) and density and coverage (Naeem et al. 2020) estimate a
set's support by the union of its k-NN balls: around each point, the ball whose radius NND_k is the distance to the
point's k-th nearest neighbour within its own set, the point itself excluded. Precision and density measure how much
of the sample lies in the reference's balls (fidelity), recall how much of the reference lies in the sample's balls
and coverage how many reference balls hold a sample point (diversity). Membership is strict (``distance < radius``)
and every distance is computed directly from its pair, so ties (duplicated points, a point's own k-th neighbour)
fall as in exact arithmetic and the results equal the reference code ``prdc.compute_prdc``.
Computed in float64 on the device of the reference; ``Manifold`` keeps the reference's radii, so that many samples,
and many resamples of each (``Manifold.resampled``), are measured against it cheaply.
"""
from __future__ import annotations

import numbers

import torch

K = 5  # default neighbours, Naeem et al.'s recommendation; one k for all four metrics
_BLOCK = 1 << 22  # float64 elements per block of distances (32 MiB)


def _flat(x, name: str) -> torch.Tensor:
    """Points [n, ...] as a float64 matrix [n, d]."""
    x = torch.as_tensor(x).detach()
    if x.dim() < 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must have shape [n, ...] with n >= 2 points; got {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1).double()


def _blocks(x: torch.Tensor, y: torch.Tensor, reduce=None) -> torch.Tensor:
    """Euclidean distances of the rows of x to those of y, ``reduce``d a block of rows at a time (memory: one block).

    Each distance is computed directly, sqrt(sum (x - y)^2), not by the expansion |x|^2 - 2 x.y + |y|^2: so d(a, b)
    is the same bitwise in every matrix and either order, and ties meet the strict ``<`` as in exact arithmetic.
    """
    rows = max(1, _BLOCK // y.shape[0])
    blocks = (torch.cdist(x[i:i + rows], y, compute_mode="donot_use_mm_for_euclid_dist")
              for i in range(0, x.shape[0], rows))
    return torch.cat([b if reduce is None else reduce(b) for b in blocks])


def _nnd(d: torch.Tensor, k: int) -> torch.Tensor:
    """NND_k of each row of distances d [..., n] within its own set: the (k+1)-th smallest, counting the point's own
    zero (prdc's convention)."""
    return d.topk(k + 1, dim=-1, largest=False).values[..., -1]


class Manifold:
    """The k-NN balls of a reference sample: the real side's radii computed once, so that many samples (and many
    resamples of each) are measured against it cheaply."""

    def __init__(self, real: torch.Tensor, k: int = K):
        """real [N, ...] (flattened to [N, d]): the reference points; k: the neighbour whose distance is a radius."""
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"k must be an integer >= 1; got {k!r}")
        self.real, self.k = _flat(real, "real"), int(k)
        if self.k >= len(self.real):
            raise ValueError(f"k must be < the number of real points N={len(self.real)} (the k-th neighbour needs "
                             f"k+1 points); got k={self.k}")
        self.radii = _blocks(self.real, self.real, lambda d: _nnd(d, self.k))  # NND_k(r_i) [N]

    def metrics(self, fake: torch.Tensor) -> dict[str, float]:
        """Precision and recall (Kynkäänniemi et al. 2019), density and coverage (Naeem et al. 2020) of fake [M, ...]
        against the reference, as Python floats: with B(x, r) = {y: |y - x| < r},
        precision = 1/M sum_j 1[f_j in some B(r_i, NND_k(r_i))], recall = 1/N sum_i 1[r_i in some B(f_j, NND_k(f_j))],
        density = 1/(kM) sum_j #{i: f_j in B(r_i, NND_k(r_i))}, coverage = 1/N sum_i 1[B(r_i, NND_k(r_i)) holds a f_j].
        """
        fake = _flat(fake, "fake")
        rows = self.resampled(fake, torch.arange(len(fake), device=fake.device)[None])
        return {name: float(v[0]) for name, v in rows.items()}

    def resampled(self, fake: torch.Tensor, subsets: torch.Tensor) -> dict[str, torch.Tensor]:
        """The four metrics of fake[subsets[h]] for each row h of the index matrix subsets [H, m] (long, any
        device): float64 tensors [H]. Distances fake-real and fake-fake are computed once for all of fake, the
        fake radii within each subset (recall depends on them)."""
        fake = _flat(fake, "fake").to(self.real.device)
        if fake.shape[1] != self.real.shape[1]:
            raise ValueError(f"fake and real must have the same feature dimension; got {fake.shape[1]} and "
                             f"{self.real.shape[1]}")
        subsets = torch.as_tensor(subsets)
        if subsets.dim() != 2 or subsets.is_floating_point() or subsets.is_complex() or subsets.dtype == torch.bool:
            raise ValueError(f"subsets must be a 2-D integer tensor [H, m] of indices into fake; got "
                             f"{subsets.dtype} of shape {tuple(subsets.shape)}")
        if subsets.numel() and (subsets.min() < 0 or subsets.max() >= len(fake)):
            raise ValueError(f"subsets must hold indices in [0, M) with M={len(fake)} fake points; got entries in "
                             f"[{int(subsets.min())}, {int(subsets.max())}]")
        m = subsets.shape[1]
        if m <= self.k:
            raise ValueError(f"fake (or each of its subsets) must have more than k={self.k} points (the k-th "
                             f"neighbour needs k+1); got {m}")
        subsets = subsets.to(fake.device, torch.long)
        fake_real, fake_fake = _blocks(fake, self.real), _blocks(fake, fake)  # [M, N], [M, M]
        inside = fake_real < self.radii  # [M, N]: f_j in the ball of r_i
        hits = inside.sum(1)[subsets]  # [H, m]: how many real balls hold each point of each subset
        recall, coverage = [], []
        for idx in subsets.split(max(1, _BLOCK // (m * max(m, len(self.real))))):  # c subsets [c, m] at a time
            fake_radii = _nnd(fake_fake[idx[:, :, None], idx[:, None, :]], self.k)  # [c, m], within each subset
            recall.append((fake_real[idx] < fake_radii[..., None]).any(1).double().mean(1))  # r_i in a ball of f_j
            coverage.append(inside[idx].any(1).double().mean(1))  # min_j d(r_i, f_j) < NND_k(r_i)
        return {"precision": (hits > 0).double().mean(1), "recall": torch.cat(recall),
                "density": hits.sum(1).double() / (self.k * m), "coverage": torch.cat(coverage)}


def manifold_metrics(fake, real, *, k: int = K) -> dict[str, float]:
    """Convenience: Manifold(real, k).metrics(fake)."""
    return Manifold(real, k).metrics(fake)
