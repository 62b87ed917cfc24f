"""The PF-ODE log-likelihood (``log_likelihood``): the instantaneous change of variables along the
probability-flow ODE of ``core.flow``, with the exact divergence (small D) or Hutchinson's estimator."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torchdiffeq import odeint
from tqdm.auto import tqdm

from ...core.checks import check_choice, check_sizes, check_t_min, check_tolerances
from ...core.flow import ADAPTIVE, FIXED, Model, ProbabilityFlow, check_model, check_state, model_device_dtype
from ...core.quantization import warn_if_quantized
from ...core.sde import T_MIN, VPSDE

DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


def _counted_model(eps_model, sde: VPSDE, x: torch.Tensor, device) -> tuple[Model, torch.Tensor]:
    """The counted network and x on its device and dtype: an nn.Module fixes them, a plain function
    runs on ``device`` (default x's) in x's dtype. x must be a non-empty, finite float tensor [n, ...]."""
    check_model("eps_model", eps_model)
    check_state(x)
    module = isinstance(eps_model, torch.nn.Module)
    device, dtype = model_device_dtype(eps_model, device if device is not None or module else x.device,
                                       None if module else x.dtype)
    return Model(eps_model, sde, device, dtype), x.to(device=device, dtype=dtype)


def _check_result(what: str, value: torch.Tensor, cause: str = "eps_model returned NaN/inf") -> None:
    """Raise if a per-point result [n] is non-finite (one host sync, after the computation)."""
    bad = ~torch.isfinite(value)
    if bool(bad.any()):
        raise ValueError(f"{what} is non-finite for {int(bad.sum())} of {bad.numel()} points (the first: "
                         f"point {int(bad.nonzero()[0, -1])}): {cause}")


def _exact_divergence(drift: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``sum_i d drift_i / d x_i`` [n], one vector-Jacobian product per dimension (samples independent)."""
    drift = drift.flatten(1)
    div = torch.zeros_like(drift[:, 0])
    for i in range(drift.shape[1]):
        (row,) = torch.autograd.grad(drift[:, i].sum(), x, retain_graph=True)
        div = div + row.flatten(1)[:, i]
    return div


def _hutchinson_divergence(drift: torch.Tensor, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``v^T (d drift / dx) v`` [probes, n] for each probe v (Hutchinson 1989): unbiased when E[v v^T] = I."""
    return torch.stack([(torch.autograd.grad(drift, x, v_k, retain_graph=True)[0] * v_k).flatten(1).sum(1)
                        for v_k in v])


def check_solve_options(divergence: str, probes: int, probe: str, solver: str, rtol: float, atol: float,
                        t_min: float) -> None:
    """Raise unless ``log_likelihood``'s options are valid (also checked by ``latent_elbo`` at its entry)."""
    check_choice("divergence", divergence, DIVERGENCES)
    check_choice("probe", probe, PROBES)
    check_sizes(probes=probes)
    check_choice("solver", solver, FIXED + ADAPTIVE)
    check_tolerances(rtol=rtol, atol=atol)
    check_t_min(t_min)


@dataclass
class LikelihoodResult:
    """PF-ODE log-likelihood of a batch; all tensors per sample on the model's device, in nats."""
    logp: torch.Tensor               # [n] log p_{t_min}(x) = prior_logp + delta_logp (mean over probes)
    nfe: int                         # eps_model forward calls, each on the whole batch
    nvjp: int                        # backward passes through eps_model (D or `probes` per forward call)
    prior_logp: torch.Tensor         # [n] log N(x_1; 0, I)
    delta_logp: torch.Tensor         # [n] int_{t_min}^1 div(drift) dt (mean over probes)
    x1: torch.Tensor                 # [n, ...] the ODE's end point at t = 1
    logp_probes: torch.Tensor | None = None  # [probes, n] one estimate per Hutchinson probe


def log_likelihood(eps_model, sde: VPSDE, x: torch.Tensor, *, divergence: str = "exact", probes: int = 1,
                   probe: str = "rademacher", solver: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5,
                   t_min: float = T_MIN, options: dict | None = None, generator: torch.Generator | None = None,
                   device=None, progress: bool = False) -> LikelihoodResult:
    """``log p(x)`` by the instantaneous change of variables along the PF-ODE (Song et al. 2021, eq. 39;
    Chen et al. 2018): ``log p_{t_min}(x) = log N(x_1; 0, I) + int_{t_min}^1 div(f - g^2 score / 2) dt``.

    The state and the divergence integral are solved together by ``torchdiffeq.odeint`` from ``t_min``
    to 1. Integration starts at ``t_min > 0``, not 0: the drift has ``eps / sigma`` with ``sigma(0) = 0``,
    and the network is trained on (t_min, 1] only. The result is the density of the slightly noised data,
    ``log p_{t_min}(x)``. The default ``T_MIN`` = 1e-3 is the package's training t_min and the samplers' last time
    (sigma = 0.0105 for the linear schedule); Song et al. use 1e-5 for a network trained down to 1e-5.
    Its bias against ``log p_0``: O(D sigma(t_min)^2 / var) for a density smooth on the scale sigma
    (below 1e-4 bits/dim on the 'gmm2d' oracle); for dequantised data, whose density jumps at the bin
    edges, O(sigma / Delta) per dimension. ``N(0, I)`` stands for p_1 (alpha(1)^2 = 4e-5 for the linear
    schedule: up to 0.02 nats on the oracle).

    Args:
        eps_model: a torch module or callable ``(x, t) -> eps``, t a float tensor [batch]; samples must not
            interact (no batch norm).
        sde: the VPSDE the model was trained with.
        x: data [n, ...], finite floats; a density is returned, so dequantise quantised data first
            (``dequantize``): x on a quantisation grid gets a ``QuantizedDataWarning``.
        divergence: ``"exact"`` (D backward passes per call, small D) or ``"hutchinson"`` (``probes``).
        probes, probe: number and kind (``"rademacher"`` or ``"gaussian"``) of Hutchinson probes, drawn
            once from ``generator`` and fixed over the solve; ``logp_probes`` keeps one estimate per probe.
        solver, rtol, atol, options: passed to ``odeint`` (rtol and atol in (0, 1)); adaptive solvers sync
            with the host every step, and check each network output and divergence for NaN/inf as they go.
        device: where a plain-function ``eps_model`` runs (default x's device); an ``nn.Module`` runs on
            its parameters' device and dtype.
        progress: a tqdm bar of the solve's time t from t_min to 1 (a host sync per network call).
    """
    check_solve_options(divergence, probes, probe, solver, rtol, atol, t_min)
    model, x = _counted_model(eps_model, sde, x, device)
    warn_if_quantized(x, "log_likelihood returns a density, which needs dequantised data; use "
                         "dequantize(x, {levels}) and bits_per_dim(logp, D, levels={levels}), or "
                         "likelihood_table(x, levels={levels}, ...)")
    device, dtype = model.device, model.dtype
    adaptive = solver in ADAPTIVE
    flow = ProbabilityFlow(model, "t", check_finite=adaptive)   # dx/dt = f + beta eps / (2 sigma)
    v = None
    if divergence == "hutchinson":
        shape = (int(probes),) + tuple(x.shape)
        v = (torch.randn(shape, generator=generator, device=device, dtype=dtype) if probe == "gaussian" else
             torch.randint(0, 2, shape, generator=generator, device=device).to(dtype) * 2 - 1)

    def rhs(t, state):
        with torch.enable_grad():
            x_t = state[0].detach().requires_grad_(True)
            drift = flow(t, x_t)
            div = _exact_divergence(drift, x_t)[None] if v is None else _hutchinson_divergence(drift, x_t, v)
        if adaptive and not bool(torch.isfinite(div).all()):     # else torchdiffeq asserts "underflow in dt"
            raise ValueError(f"the divergence of the PF-ODE drift is non-finite at t={float(t):.4g}: "
                             "eps_model's gradient with respect to x is NaN/inf there")
        if not bar.disable:
            bar.update(max(0.0, float(t) - bar.n))
            bar.set_postfix(nfe=model.nfe, refresh=False)
        return drift.detach(), div.detach()

    ts = torch.tensor([t_min, 1.0], device=device, dtype=dtype)
    if adaptive:  # step onto t = 1, not past it: the network has never seen t > 1
        options = {"step_t": ts[1:], **(options or {})}
    delta0 = x.new_zeros(1 if v is None else v.shape[0], x.shape[0])
    with torch.no_grad(), tqdm(total=1.0, initial=t_min, desc="PF-ODE likelihood", leave=False, disable=not progress,
                               bar_format="{desc}: {percentage:3.0f}%|{bar}| t={n:.3f} [{elapsed}{postfix}]") as bar:
        xs, deltas = odeint(rhs, (x, delta0), ts, rtol=rtol, atol=atol, method=solver, options=options)
    x1, delta = xs[-1], deltas[-1]
    prior = sde.prior_logp(x1)
    _check_result("log_likelihood", prior + delta.sum(0), "eps_model returned NaN/inf" + (
        "" if adaptive else f", or the step is too large for the fixed-step solver {solver!r}"))
    per_call = x[0].numel() if v is None else v.shape[0]
    return LikelihoodResult(logp=prior + delta.mean(0), nfe=model.nfe, nvjp=model.nfe * per_call, prior_logp=prior,
                            delta_logp=delta.mean(0), x1=x1, logp_probes=None if v is None else prior + delta)
