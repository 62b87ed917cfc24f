"""Sample-quality metrics, all offline.

Low-dimensional data: sliced Wasserstein distance (exact 1-D W_p per random direction) and
unbiased MMD^2 with a mixture of Gaussian kernels; against a Gaussian-mixture oracle, the exact
mean log-density of the samples and the Gaussian KL of their first two moments.
Images: Frechet distance (the FID formula, Heusel et al. 2017), the same extrapolated to infinite n
(Chong & Forsyth 2020) and KID (Binkowski et al. 2018) on features of a feature network (``features``: a small
cached classifier, or Inception weights on disk), which the image metrics take as an argument: measuring never
trains. Fidelity and diversity apart: precision, recall, density and coverage (``manifold``), in either space.
Sampling errors and paired differences of all of them: ``spread``.
``floor`` gives any metric's value on real data, the best a model can hope for at that n.
Scalar metrics are Python floats, computed in float64 on the device of their input.
"""
from __future__ import annotations

import torch

from .manifold import manifold_metrics
from .spread import HALVES, extrapolated, half_samples


def _flat(x: torch.Tensor, name: str) -> torch.Tensor:
    """Samples [n, ...] as a float64 matrix [n, d]."""
    x = torch.as_tensor(x)
    if x.dim() < 2 or x.shape[0] < 2:
        raise ValueError(f"{name} must have shape [n, ...] with n >= 2; got {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1).double()


def _pair(a, b):
    a, b = _flat(a, "a"), _flat(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must have the same dimension; got {a.shape[1]} and {b.shape[1]}")
    return a, b.to(a.device)


def _wasserstein_1d(a: torch.Tensor, b: torch.Tensor, p: float) -> torch.Tensor:
    """Exact W_p^p between the empirical measures of the columns of a [n, P] and b [m, P].

    ``W_p^p = int_0^1 |F_a^-1(u) - F_b^-1(u)|^p du``; both quantile functions are steps, constant
    between the merged breakpoints {i/n} U {j/m}, so the integral is a finite sum.
    """
    n, m = a.shape[0], b.shape[0]
    a, b = a.sort(0).values, b.sort(0).values
    u = torch.cat([torch.arange(1, n + 1, device=a.device, dtype=a.dtype) / n,
                   torch.arange(1, m + 1, device=a.device, dtype=a.dtype) / m]).sort().values
    width = torch.diff(u, prepend=u.new_zeros(1))
    mid = u - width / 2
    ia = (mid * n).floor().long().clamp(max=n - 1)
    ib = (mid * m).floor().long().clamp(max=m - 1)
    return (width[:, None] * (a[ia] - b[ib]).abs() ** p).sum(0)


def sliced_wasserstein(a, b, *, projections: int = 256, p: float = 2,
                       generator: torch.Generator | None = None) -> float:
    """Sliced Wasserstein distance ``SW_p = (E_theta W_p^p(theta.a, theta.b))^(1/p)`` (Bonneel et al. 2015).

    ``theta`` are ``projections`` directions uniform on the sphere; each 1-D ``W_p`` is exact
    (sorting; sample sizes may differ). On 1-D data it is the exact W_p for any projections.
    """
    if p < 1:
        raise ValueError(f"p must be >= 1; got {p}")
    if projections < 1:
        raise ValueError(f"projections must be >= 1; got {projections}")
    a, b = _pair(a, b)
    theta = torch.randn(a.shape[1], projections, generator=generator, device=a.device, dtype=a.dtype)
    theta = theta / theta.norm(dim=0, keepdim=True)
    return _wasserstein_1d(a @ theta, b @ theta, p).mean().pow(1 / p).item()


def _mmd2_unbiased(kernel, x: torch.Tensor, y: torch.Tensor, subsets: torch.Tensor | None = None,
                   block: int = 1024) -> torch.Tensor:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3; diagonal terms left out of the within-sample means) of x and y,
    and with ``subsets`` [H, m] (index sets into x) of each x[subsets[h]] and y: [1 + H], all of x first.

    One pass over the kernel matrices, a block of rows of x at a time: with the subsets as the columns of an
    indicator matrix M [n, 1 + H], ``sum_{i,j in h} k(x_i, x_j) = (M^T K_xx M)_hh``, and the cross sums are
    ``M^T (K_xy 1)``, so that no subset's matrix is formed."""
    n = x.shape[0]
    masks = x.new_ones(n, 1)
    if subsets is not None:
        picked = torch.zeros(subsets.shape[0], n, dtype=x.dtype, device=x.device)
        picked.scatter_(1, subsets.to(x.device), 1.0)
        masks = torch.cat([masks, picked.T], 1)
    quad, trace, cross = (x.new_zeros(masks.shape[1]) for _ in range(3))
    kyy = trace_y = x.new_zeros(())
    for i in range(0, n, block):
        rows, m = slice(i, i + block), masks[i:i + block]
        k = kernel(x[rows], x)
        quad = quad + (m * (k @ masks)).sum(0)
        trace = trace + m.T @ k[:, rows].diagonal()
        cross = cross + m.T @ kernel(x[rows], y).sum(1)
    for i in range(0, y.shape[0], block):
        k = kernel(y[i:i + block], y)
        kyy, trace_y = kyy + k.sum(), trace_y + k[:, i:i + block].diagonal().sum()
    size, big = masks.sum(0), y.shape[0]
    return (quad - trace) / (size * (size - 1)) + (kyy - trace_y) / (big * (big - 1)) - 2 * cross / (size * big)


BANDWIDTHS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)  # mmd's kernel mixture


def _gaussians(bandwidths):
    """``k(x, y) = sum_h exp(-|x - y|^2 / (2 h^2))`` over ``bandwidths``."""
    h = torch.as_tensor(bandwidths, dtype=torch.float64).flatten()
    if h.numel() < 1 or not bool((h > 0).all()):
        raise ValueError(f"bandwidths must be positive numbers; got {bandwidths}")

    def kernel(x, y):
        d2 = torch.cdist(x, y).pow(2)
        return torch.exp(-d2[..., None] * (0.5 / h ** 2).to(x.device)).sum(-1)

    return kernel


def mmd(a, b, *, bandwidths=BANDWIDTHS, subsets: torch.Tensor | None = None):
    """Unbiased MMD^2 with the kernel ``k(x, y) = sum_h exp(-|x - y|^2 / (2 h^2))`` over ``bandwidths``.

    Its expectation is the population MMD^2, zero iff the distributions agree, so values scatter
    around 0 (negative ones included) for equal distributions. With ``subsets`` (index sets [H, m] into a):
    ``(value, values of a[subsets[h]] against b as a float64 tensor [H])``.
    """
    kernel = _gaussians(bandwidths)
    a, b = _pair(a, b)
    values = _mmd2_unbiased(kernel, a, b, subsets)
    return values[0].item() if subsets is None else (values[0].item(), values[1:].cpu())


def _cubic(d: int):
    """KID's kernel ``k(x, y) = (x.y / d + 1)^3`` in dimension d."""
    return lambda x, y: (x @ y.T / d + 1) ** 3


def kid(feats_a, feats_b, *, subsets: torch.Tensor | None = None):
    """Kernel Inception Distance (Binkowski et al. 2018) on all samples: the unbiased MMD^2 with the cubic
    polynomial kernel ``k(x, y) = (x.y / d + 1)^3``. Unbiased at any n; its sampling error is a spread over
    halves (``spread``) rather than the paper's spread over subsets (``kid_subsets``). ``subsets``: as ``mmd``'s."""
    a, b = _pair(feats_a, feats_b)
    values = _mmd2_unbiased(_cubic(a.shape[1]), a, b, subsets)
    return values[0].item() if subsets is None else (values[0].item(), values[1:].cpu())


def kid_subsets(feats_a, feats_b, *, subsets: int = 100, subset_size: int = 1000,
                generator: torch.Generator | None = None) -> tuple[float, float]:
    """KID as Binkowski et al. 2018 report it: mean and std of the unbiased MMD^2 (``kid``'s kernel) over
    ``subsets`` random subsets, each ``subset_size`` rows of each side drawn without replacement."""
    a, b = _pair(feats_a, feats_b)
    if not 2 <= subset_size <= min(a.shape[0], b.shape[0]):
        raise ValueError(f"subset_size must be in [2, {min(a.shape[0], b.shape[0])}] (the smaller sample); "
                         f"got {subset_size}")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1; got {subsets}")
    kernel = _cubic(a.shape[1])
    values = torch.cat([
        _mmd2_unbiased(kernel,
                       a[torch.randperm(a.shape[0], generator=generator, device=a.device)[:subset_size]],
                       b[torch.randperm(b.shape[0], generator=generator, device=a.device)[:subset_size]])
        for _ in range(subsets)])
    return values.mean().item(), (values.std().item() if subsets > 1 else 0.0)


def ode_err(x, reference) -> float:
    """RMS distance per coordinate of samples to their reference (the PF-ODE's map of the same prior draws,
    ``samplers.pf_ode_solution``): ``sqrt(mean((x - reference)^2))``. The error of a deterministic sampler
    itself, without the sampling noise of a distribution distance."""
    x, reference = _pair(x, reference)
    if x.shape[0] != reference.shape[0]:
        raise ValueError(f"x and reference must pair up sample for sample; got {x.shape[0]} and {reference.shape[0]}")
    return (x - reference).pow(2).mean().sqrt().item()


def label_frequencies(labels: torch.Tensor, num_classes) -> list[list[float]]:
    """For each column j of integer ``labels`` [n, k] (predicted attributes, say), the share of rows with each
    class c < ``num_classes[j]``."""
    labels = labels.reshape(labels.shape[0], -1)
    if labels.shape[1] != len(num_classes):
        raise ValueError(f"labels must have {len(num_classes)} columns (one per num_classes entry); got "
                         f"{labels.shape[1]}")
    return [(torch.bincount(labels[:, j].long().cpu(), minlength=k)[:k].double() / labels.shape[0]).tolist()
            for j, k in enumerate(num_classes)]


def attribute_tv(labels: torch.Tensor, reference: torch.Tensor, num_classes) -> float:
    """Mean over label columns of the total variation ``1/2 sum_c |p_c - q_c|`` between the class frequencies
    of ``labels`` and of ``reference`` (``label_frequencies``): 0 for the same frequencies, 1 for disjoint
    supports. Between two finite samples of one distribution it is of order ``sqrt(classes / n)``: compare it
    with the data floor's."""
    p, q = label_frequencies(labels, num_classes), label_frequencies(reference, num_classes)
    return sum(0.5 * sum(abs(a - b) for a, b in zip(pj, qj)) for pj, qj in zip(p, q)) / len(num_classes)


def gaussian_stats(x) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [d] and unbiased covariance [d, d] of samples [n, ...], in float64."""
    x = _flat(x, "x")
    return x.mean(0), torch.cov(x.T).reshape(x.shape[1], x.shape[1])


def _psd_sqrt(c: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a positive semi-definite matrix by eigendecomposition."""
    lam, u = torch.linalg.eigh(c)
    return (u * lam.clamp(min=0).sqrt()) @ u.T


def _as_stats(x, name: str):
    if isinstance(x, (tuple, list)):
        mean, cov = (torch.as_tensor(v).double() for v in x)
        if mean.dim() != 1 or cov.shape != (mean.shape[0], mean.shape[0]):
            raise ValueError(f"{name} as statistics must be (mean [d], cov [d, d]); got shapes "
                             f"{tuple(mean.shape)} and {tuple(cov.shape)}")
        return mean, cov
    return gaussian_stats(x)


class FrechetReference:
    """The reference side of the Frechet distance, computed once: mean, covariance and the covariance's square
    root, so that many samples (and halves of them) are measured against it at one eigendecomposition each.
    ``reference``: features [n, d] or a ``(mean, cov)`` pair (e.g. published statistics)."""

    def __init__(self, reference):
        self.mean, self.cov = _as_stats(reference, "reference")
        self.root = _psd_sqrt(self.cov)

    def distance(self, x) -> float:
        """``|mu_x - mu_r|^2 + tr(C_x + C_r - 2 (C_r^1/2 C_x C_r^1/2)^1/2)`` (Dowson & Landau 1982): the trace of
        the root from the eigenvalues of a symmetric PSD matrix in float64 (those of ``C_x C_r``), so singular
        covariances (fewer samples than dimensions, dead features) need no jitter. ``x``: features [n, d] or a
        ``(mean, cov)`` pair."""
        mean, cov = _as_stats(x, "x")
        if mean.shape != self.mean.shape:
            raise ValueError(f"x must have the reference's dimension {self.mean.shape[0]}; got {mean.shape[0]}")
        mean, cov = mean.to(self.mean.device), cov.to(self.mean.device)
        m = self.root @ cov @ self.root
        lam = torch.linalg.eigvalsh(0.5 * (m + m.T))
        # eigenvalues that are rounding noise (below d eps max) are zero: sqrt would turn eps into sqrt(eps)
        lam = torch.where(lam > lam.shape[0] * torch.finfo(lam.dtype).eps * lam.abs().max(), lam, 0 * lam)
        return ((mean - self.mean).pow(2).sum() + cov.trace() + self.cov.trace() - 2 * lam.sqrt().sum()).item()


def frechet_distance(a, b) -> float:
    """The Frechet (Wasserstein-2) distance between Gaussians fitted to two samples: the FID formula
    (``FrechetReference(b).distance(a)``; symmetric). ``a``, ``b``: features [n, d], or ``(mean, cov)`` pairs."""
    return FrechetReference(b).distance(a)


def frechet_distance_inf(feats, reference, *, halves: int = HALVES,
                         generator: torch.Generator | None = None) -> float:
    """FD extrapolated to infinitely many samples on the ``feats`` side (Chong & Forsyth 2020): FD is linear in
    1/N, and ``spread.extrapolated`` takes the line through FD at n and its mean over ``halves`` random halves
    (drawn by ``generator``). The reference's own finite size is not extrapolated: it is the same for every
    sample compared with it."""
    ref = FrechetReference(reference)
    feats = _flat(feats, "feats")
    return extrapolated(ref.distance, feats, half_samples(feats.shape[0], halves, generator=generator))[1]


def _cholesky(c: torch.Tensor, name: str) -> torch.Tensor:
    chol, info = torch.linalg.cholesky_ex(c)
    if bool(info.any()):
        raise ValueError(f"{name} must be symmetric positive definite")
    return chol


def gaussian_kl(mean0, cov0, mean1, cov1) -> float:
    """``KL(N(mean0, cov0) || N(mean1, cov1))`` in nats, closed form:

    ``(tr(C1^-1 C0) + (m1 - m0)^T C1^-1 (m1 - m0) - d + log det C1 - log det C0) / 2``.
    """
    mean0, cov0 = _as_stats((mean0, cov0), "(mean0, cov0)")
    mean1, cov1 = _as_stats((mean1, cov1), "(mean1, cov1)")
    if mean0.shape != mean1.shape:
        raise ValueError(f"the Gaussians must have the same dimension; got {mean0.shape[0]} and {mean1.shape[0]}")
    l0, l1 = _cholesky(cov0, "cov0"), _cholesky(cov1, "cov1")
    trace = torch.linalg.solve_triangular(l1, l0, upper=False).pow(2).sum()
    maha = torch.linalg.solve_triangular(l1, (mean1 - mean0)[:, None], upper=False).pow(2).sum()
    logdet = 2 * (l1.diagonal().log().sum() - l0.diagonal().log().sum())
    return (0.5 * (trace + maha - mean0.shape[0] + logdet)).item()


def data_logp(oracle, n_ref: int = 100_000, *, generator: torch.Generator | None = None, like=None) -> float:
    """``E_p[log p]`` (minus the entropy) of a ``GaussianMixture`` oracle p from ``n_ref`` exact draws (seed 0
    unless ``generator``), in the dtype and on the device of ``like``."""
    like = torch.zeros((), dtype=torch.float64) if like is None else like
    generator = generator or torch.Generator(like.device).manual_seed(0)
    return oracle.log_prob(oracle.sample(n_ref, generator=generator).to(like)).mean().item()


def oracle_metrics(x, oracle, *, n_ref: int = 100_000, generator: torch.Generator | None = None,
                   logp_data: float | None = None) -> dict:
    """Exact-density metrics of samples ``x`` [n, d] against a ``GaussianMixture`` oracle p.

    ``logp``: mean log p(x) of the samples; ``logp_data``: E_p[log p] (minus the entropy), from
    ``n_ref`` exact draws (seed 0 unless ``generator``), or as given (a value computed once for many samples);
    ``logp_gap = logp_data - logp`` (0 for perfect samples; negative when samples crowd the modes);
    ``moment_kl``: KL from the Gaussian fitted to the samples' mean and covariance to the one with the oracle's
    (0 when they match).
    """
    x = _flat(x, "x")
    if x.shape[1] != oracle.dim:
        raise ValueError(f"x must have dimension {oracle.dim} (the oracle's); got {x.shape[1]}")
    logp = oracle.log_prob(x).mean().item()
    logp_data = data_logp(oracle, n_ref, generator=generator, like=x) if logp_data is None else logp_data
    mean, cov = gaussian_stats(x)
    return {"logp": logp, "logp_data": logp_data, "logp_gap": logp_data - logp,
            "moment_kl": gaussian_kl(mean, cov, oracle.mean(), oracle.covariance())}


def image_metrics(feats, reference) -> dict:
    """``fd`` (Frechet distance) and ``kid`` (on all samples) between sample and reference features."""
    return {"fd": frechet_distance(feats, reference), "kid": kid(feats, reference)}


def sample_metrics(x: torch.Tensor, dataset, *, extractor=None, reference=None,
                   generator: torch.Generator | None = None) -> dict:
    """Every metric that fits ``dataset``, for samples ``x`` against its held-out split.

    Images: ``image_metrics`` in the space of ``extractor`` (required: e.g. the data set's cached
    ``features.FeatureNet.for_dataset(dataset)``, whose ``reference`` holds the held-out features, or
    ``InceptionFeatures``), against ``reference`` (default: the extractor's ``reference`` if it has one, else the
    features of the held-out split). Other data: ``swd`` (sliced W2) and ``mmd`` against the held-out split, plus
    ``oracle_metrics`` when the data set has an oracle. Both: precision, recall, density and coverage
    (``manifold.manifold_metrics``) in the same space.
    """
    if dataset.is_image:
        if extractor is None:
            raise ValueError("images are measured in a feature network's space: give extractor, e.g. "
                             "features.FeatureNet.for_dataset(dataset)")
        if reference is None:
            reference = getattr(extractor, "reference", None)
            reference = extractor.features(dataset.test) if reference is None else reference
        feats = extractor.features(x)
        return {**image_metrics(feats, reference), **manifold_metrics(feats, reference)}
    out = {"swd": sliced_wasserstein(x, dataset.test, generator=generator), "mmd": mmd(x, dataset.test),
           **manifold_metrics(x, dataset.test)}
    if dataset.oracle is not None:
        out.update(oracle_metrics(x, dataset.oracle))
    return out


def floor(metric_fn, dataset, n: int, *, generator: torch.Generator | None = None):
    """A metric's value on real data: ``metric_fn`` of n fresh oracle draws (synthetic data), else of n
    random training items, both independent of the held-out split the metrics compare against.

    ``metric_fn(x)`` takes samples, e.g. ``lambda x: sample_metrics(x, dataset)``.
    """
    if dataset.oracle is not None:
        return metric_fn(dataset.oracle.sample(n, generator=generator).to(dataset.train.dtype))
    if not 2 <= n <= dataset.train.shape[0]:
        raise ValueError(f"n must be in [2, {dataset.train.shape[0]}] (the training split); got {n}")
    return metric_fn(dataset.train[torch.randperm(dataset.train.shape[0], generator=generator)[:n]])
