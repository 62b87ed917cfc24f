"""diffusers' DPM-Solver++ and UniPC schedulers run on a scoregen eps-model: the reference that ``dpmpp`` and
``unipc`` are tested and benchmarked against; ``grid`` gives any DDPM-family scheduler's steps (DDIM and DDPM
too) as times. diffusers is optional and imported here on first use.

The timestep mapping. The scheduler is built on ``trained_betas = sde.ddpm_betas(N)`` (N train timesteps), so
its ``alphas_cumprod[k] = alpha_bar((k + 1) / N)``: timestep index k is the time t = (k + 1) / N, and where
diffusers calls the network at timestep k we call ``eps_model(x, full((batch,), (k + 1) / N))``. Its final
sigma is zero (``final_sigmas_type="zero"``, the default): the last step lands on t = 0. ``grid`` gives these
times, so that ``sg.sample(eps_model, sde, shape, method, grid=grid(scheduler), x1=x1)`` takes the same steps.

Known differences (diffusers 0.42): solver_order 3 weighs its D2 by phi3 where the Taylor expansion gives
2 phi3 (``samplers/dpmpp.py``): its 3M is of order 2, ours of order 3, so the two differ at order 3; UniPC's bh1
step onto sigma = 0 returns NaN (B(h) = -inf times 0; use ``final_sigmas_type="sigma_min"``, whose grid ends at
t = 1 / N).
"""
from __future__ import annotations

import torch

from ..core.sde import VPSDE

SCHEDULERS = {"dpmpp": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
              "unipc": ("UniPCMultistepScheduler", {})}


def scheduler(name: str, sde: VPSDE, steps: int, *, num_train_timesteps: int = 1000, **config):
    """diffusers' scheduler for ``name`` ("dpmpp": DPMSolverMultistepScheduler, algorithm_type "dpmsolver++",
    solver_order 2 unless ``config`` says otherwise; "unipc": UniPCMultistepScheduler) on ``sde``'s
    N-step betas, with ``config`` passed through and ``set_timesteps(steps)`` called."""
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; valid: {', '.join(SCHEDULERS)}")
    import diffusers

    cls, defaults = SCHEDULERS[name]
    betas = sde.ddpm_betas(num_train_timesteps).tolist()
    sched = getattr(diffusers, cls)(num_train_timesteps=num_train_timesteps, trained_betas=betas,
                                    **{**defaults, **config})
    sched.set_timesteps(steps)
    return sched


def grid(sched) -> torch.Tensor:
    """The times of ``sched``'s steps as a scoregen grid (float64, CPU): (k + 1) / N for its timesteps k, then
    where its last step lands. DPM-Solver++ and UniPC: 0 (final sigma zero) or 1 / N
    (``final_sigmas_type="sigma_min"``). DDIM and DDPM: each step goes from k to k - N // steps, and below 0 to
    alpha_bar = ``final_alpha_cumprod``, 1 (t = 0) or ``alphas_cumprod[0]`` (t = 1 / N, DDIM's
    ``set_alpha_to_one=False``); an error where the steps do not chain (``timestep_spacing="trailing"`` with N
    not a multiple of the steps: each step lands off the next timestep, which no grid reproduces)."""
    n = sched.config.num_train_timesteps
    k = sched.timesteps.to(torch.float64)
    if hasattr(sched, "sigmas"):
        end = 0.0 if float(sched.sigmas[-1]) == 0 else 1.0
    else:
        prev = k - n // sched.num_inference_steps
        if not torch.equal(prev[:-1], k[1:]):
            raise ValueError(f"{type(sched).__name__}'s steps do not chain: timesteps {k.long().tolist()}, each step "
                             f"going to k - {n // sched.num_inference_steps}; no grid of times reproduces them")
        end = prev[-1] + 1 if prev[-1] >= 0 else 0.0 if float(getattr(sched, "final_alpha_cumprod", 1.0)) == 1 else 1.0
    return torch.cat([(k + 1) / n, torch.tensor([float(end) / n], dtype=torch.float64)])


def run(sched, eps_model, x1: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """diffusers' sampling loop (``scale_model_input``, the network, ``step(...).prev_sample``) from the prior
    draw ``x1`` at t = 1, under no_grad, on x1's device and dtype: the samples and the network calls made.
    ``generator`` goes to ``step`` (the noise of algorithm_type "sde-dpmsolver++"). The scheduler's state is
    reset first (``set_timesteps`` again), so one scheduler serves several runs."""
    n = sched.config.num_train_timesteps
    sched.set_timesteps(sched.num_inference_steps)
    extra = {} if generator is None else {"generator": generator}
    x, nfe = x1 * sched.init_noise_sigma, 0
    with torch.no_grad():
        for k in sched.timesteps:
            t = torch.full((x.shape[0],), (int(k) + 1) / n, dtype=x.dtype, device=x.device)
            eps = eps_model(sched.scale_model_input(x, k), t)
            nfe += 1
            x = sched.step(eps, k, x, **extra).prev_sample
    return x, nfe
