"""Sample-quality metrics, all offline.

Low-dimensional data: sliced Wasserstein distance (exact 1-D W_p per random direction) and
unbiased MMD^2 with a mixture of Gaussian kernels; against a Gaussian-mixture oracle, the exact
mean log-density of the samples and the Gaussian KL of their first two moments.
Images: Frechet distance (the FID formula, Heusel et al. 2017) and KID (Binkowski et al. 2018)
on features of a feature network (``features``: a small cached classifier, or Inception weights on disk),
which the image metrics take as an argument: measuring never trains.
``floor`` gives any metric's value on real data, the best a model can hope for at that n.
Scalar metrics are Python floats, computed in float64 on the device of their input.
"""
from __future__ import annotations

import math

import torch



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


def _kernel_sums(kernel, x: torch.Tensor, y: torch.Tensor, block: int = 1024):
    """``sum_ij k(x_i, y_j)`` and ``sum_i k(x_i, y_i)`` (the trace, for x = y), a block of rows at a time."""
    total = trace = x.new_zeros(())
    for i in range(0, x.shape[0], block):
        k = kernel(x[i:i + block], y)
        total = total + k.sum()
        trace = trace + k[:, i:i + block].diagonal().sum()
    return total, trace


def _mmd2_unbiased(kernel, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD^2 (Gretton et al. 2012, eq. 3): diagonal terms left out of the within-sample means."""
    n, m = x.shape[0], y.shape[0]
    kxx, trace_x = _kernel_sums(kernel, x, x)
    kyy, trace_y = _kernel_sums(kernel, y, y)
    kxy, _ = _kernel_sums(kernel, x, y)
    return (kxx - trace_x) / (n * (n - 1)) + (kyy - trace_y) / (m * (m - 1)) - 2 * kxy / (n * m)


def mmd(a, b, *, bandwidths=(0.05, 0.1, 0.2, 0.5, 1.0, 2.0)) -> float:
    """Unbiased MMD^2 with the kernel ``k(x, y) = sum_h exp(-|x - y|^2 / (2 h^2))`` over ``bandwidths``.

    Its expectation is the population MMD^2, zero iff the distributions agree, so values scatter
    around 0 (negative ones included) for equal distributions.
    """
    h = torch.as_tensor(bandwidths, dtype=torch.float64).flatten()
    if h.numel() < 1 or not bool((h > 0).all()):
        raise ValueError(f"bandwidths must be positive numbers; got {bandwidths}")
    a, b = _pair(a, b)
    inv_two_h2 = (0.5 / h ** 2).to(a.device)

    def kernel(x, y):
        d2 = torch.cdist(x, y).pow(2)
        return torch.exp(-d2[..., None] * inv_two_h2).sum(-1)

    return _mmd2_unbiased(kernel, a, b).item()


def kid(feats_a, feats_b, *, subsets: int = 100, subset_size: int = 1000,
        generator: torch.Generator | None = None) -> tuple[float, float]:
    """Kernel Inception Distance (Binkowski et al. 2018): mean and std over ``subsets`` random subsets.

    Each subset draws ``subset_size`` rows of each side without replacement and takes the
    unbiased MMD^2 with the cubic polynomial kernel ``k(x, y) = (x.y / d + 1)^3``.
    """
    a, b = _pair(feats_a, feats_b)
    if not 2 <= subset_size <= min(a.shape[0], b.shape[0]):
        raise ValueError(f"subset_size must be in [2, {min(a.shape[0], b.shape[0])}] (the smaller sample); "
                         f"got {subset_size}")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1; got {subsets}")
    d = a.shape[1]

    def kernel(x, y):
        return (x @ y.T / d + 1) ** 3

    values = torch.stack([
        _mmd2_unbiased(kernel,
                       a[torch.randperm(a.shape[0], generator=generator, device=a.device)[:subset_size]],
                       b[torch.randperm(b.shape[0], generator=generator, device=a.device)[:subset_size]])
        for _ in range(subsets)])
    return values.mean().item(), (values.std().item() if subsets > 1 else 0.0)


def half_sampling_std(metric, x: torch.Tensor, *, halves: int = 8, generator: torch.Generator | None = None) -> dict:
    """``{key + "_std": std(metric on random halves of x)[key] / sqrt(2)}`` for each key of the dict ``metric(x)``
    returns: the half-sampling estimate of a metric's sampling error at n (Politis & Romano). ``generator`` (a
    CPU one) draws the halves."""
    n = x.shape[0]
    draws = [metric(x[torch.randperm(n, generator=generator)[:n // 2].to(x.device)]) for _ in range(halves)]
    return {f"{key}_std": torch.tensor([d[key] for d in draws], dtype=torch.float64).std().item() / math.sqrt(2)
            for key in draws[0]}


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


def frechet_distance(a, b) -> float:
    """The Frechet (Wasserstein-2) distance between Gaussians fitted to two samples: the FID formula.

    ``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2)`` (Dowson & Landau 1982),
    with ``tr (C_a^1/2 C_b C_a^1/2)^1/2`` from the eigenvalues of a symmetric PSD matrix in float64,
    so singular covariances (fewer samples than dimensions, dead features) need no jitter.
    ``a``, ``b``: features [n, d], or ``(mean, cov)`` pairs (e.g. reference statistics).
    """
    mean_a, cov_a = _as_stats(a, "a")
    mean_b, cov_b = _as_stats(b, "b")
    if mean_a.shape != mean_b.shape:
        raise ValueError(f"a and b must have the same dimension; got {mean_a.shape[0]} and {mean_b.shape[0]}")
    mean_b, cov_b = mean_b.to(mean_a.device), cov_b.to(mean_a.device)
    root_a = _psd_sqrt(cov_a)
    m = root_a @ cov_b @ root_a
    lam = torch.linalg.eigvalsh(0.5 * (m + m.T))
    # eigenvalues that are rounding noise (below d eps max) are zero: sqrt would turn eps into sqrt(eps)
    lam = torch.where(lam > lam.shape[0] * torch.finfo(lam.dtype).eps * lam.abs().max(), lam, 0 * lam)
    trace_root = lam.sqrt().sum()
    return ((mean_a - mean_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * trace_root).item()


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


def oracle_metrics(x, oracle, *, n_ref: int = 100_000, generator: torch.Generator | None = None) -> dict:
    """Exact-density metrics of samples ``x`` [n, d] against a ``GaussianMixture`` oracle p.

    ``logp``: mean log p(x) of the samples; ``logp_data``: E_p[log p] (minus the entropy), from
    ``n_ref`` exact draws (seed 0 unless ``generator``); ``logp_gap = logp_data - logp`` (0 for
    perfect samples; negative when samples crowd the modes); ``moment_kl``: KL from the Gaussian
    fitted to the samples' mean and covariance to the one with the oracle's (0 when they match).
    """
    x = _flat(x, "x")
    if x.shape[1] != oracle.dim:
        raise ValueError(f"x must have dimension {oracle.dim} (the oracle's); got {x.shape[1]}")
    generator = generator or torch.Generator(x.device).manual_seed(0)
    logp = oracle.log_prob(x).mean().item()
    logp_data = oracle.log_prob(oracle.sample(n_ref, generator=generator).to(x)).mean().item()
    mean, cov = gaussian_stats(x)
    return {"logp": logp, "logp_data": logp_data, "logp_gap": logp_data - logp,
            "moment_kl": gaussian_kl(mean, cov, oracle.mean(), oracle.covariance())}


def image_metrics(feats, reference, *, subsets: int = 100, subset_size: int = 1000,
                  generator: torch.Generator | None = None) -> dict:
    """``fd`` (Frechet distance) and ``kid``, ``kid_std`` between sample and reference features.

    KID subsets are capped at the smaller sample.
    """
    kid_mean, kid_std = kid(feats, reference, subsets=subsets, generator=generator,
                            subset_size=min(subset_size, feats.shape[0], reference.shape[0]))
    return {"fd": frechet_distance(feats, reference), "kid": kid_mean, "kid_std": kid_std}


def sample_metrics(x: torch.Tensor, dataset, *, extractor=None, reference=None,
                   generator: torch.Generator | None = None) -> dict:
    """Every metric that fits ``dataset``, for samples ``x`` against its held-out split.

    Images: ``image_metrics`` in the space of ``extractor`` (required: e.g. the data set's cached
    ``features.FeatureNet.for_dataset(dataset)``, whose ``reference`` holds the held-out features, or
    ``InceptionFeatures``), against ``reference`` (default: the extractor's ``reference`` if it has one, else the
    features of the held-out split). Other data: ``swd`` (sliced W2) and ``mmd`` against the held-out split, plus
    ``oracle_metrics`` when the data set has an oracle.
    """
    if dataset.is_image:
        if extractor is None:
            raise ValueError("images are measured in a feature network's space: give extractor, e.g. "
                             "features.FeatureNet.for_dataset(dataset)")
        if reference is None:
            reference = getattr(extractor, "reference", None)
            reference = extractor.features(dataset.test) if reference is None else reference
        return image_metrics(extractor.features(x), reference, generator=generator)
    out = {"swd": sliced_wasserstein(x, dataset.test, generator=generator), "mmd": mmd(x, dataset.test)}
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
