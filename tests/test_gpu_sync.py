"""On CUDA, the fixed-step samplers make no host-device synchronisation inside their loop.

The window runs from the first network call to the last: ``torch.cuda.set_sync_debug_mode("error")``
makes any synchronising operation there raise (``.item()``, ``bool(tensor)``, a pageable copy between
host and device). Setup before the loop (coefficients copied to the device)
and ``sample()``'s finiteness check after it may synchronise once each (docs/design.md). Skipped without CUDA.
"""
import pytest
import torch

import scoregen as sg
from scoregen.models.nets import build_model
from scoregen.samplers import choices
from scoregen.core.flow import FIXED
from scoregen.evaluation.tune_solver import exponential_adams
from scoregen.samplers.grids import time_grid

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

LEARNED = exponential_adams(sg.VPSDE(), time_grid(sg.VPSDE(), "uniform", 4, 0.0))  # a solver of 4 calls
ODE_SYNCS = pytest.mark.xfail(strict=True, raises=RuntimeError, reason=(
    "torchdiffeq's fixed-grid loop moves the times to the state's device and compares them on it "
    "(`t1 >= t[j]`, torchdiffeq/_impl/solvers.py): one sync a step, as samplers/ode.py says"))
CASES = [pytest.param(method, {key: value}, id=f"{method}-{key}={value}",
                      marks=ODE_SYNCS if method == "ode" else ())
         for method, key, values in (("ddpm", "variance", choices("ddpm")["variance"]), ("ddim", "eta", (0.0, 1.0)),
                                     ("sde", "solver", choices("sde")["solver"]), ("ode", "solver", FIXED),
                                     ("dpmpp", "order", (1, 2, 3)), ("dpmpp", "eta", (1.0,)),
                                     ("dpmpp", "variant", ("singlestep",)), ("unipc", "order", (1, 2, 3)),
                                     ("unipc", "variant", ("bh1",)), ("heun", "s_churn", (0.0, 1.0)),
                                     ("pc", "predictor", choices("pc")["predictor"]),
                                     ("deis", "basis", choices("deis")["basis"]), ("ipndm", "order", (4,)))
         for value in values] + [pytest.param("learned", {"solver": LEARNED, "grid": LEARNED.t}, id="learned")]


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    unet = build_model({"arch": "unet", "in_channels": 1, "image_size": 8, "ch": 16, "ch_mult": (1, 2),
                        "num_res_blocks": 1, "attn_resolutions": (4,), "dropout": 0.0})
    unet.conv_out.reset_parameters()  # eps != 0
    return unet.cuda().eval()


class SyncWindow:
    """``eps_model`` that sets sync debug mode "error" at its first call and "default" after call ``nfe``."""

    def __init__(self, eps_model, nfe: int):
        self.eps_model, self.nfe, self.calls, self.modes = eps_model, nfe, 0, set()

    def __call__(self, x, t):
        self.calls += 1
        if self.calls == 1:
            torch.cuda.set_sync_debug_mode("error")
        self.modes.add(torch.cuda.get_sync_debug_mode())
        eps = self.eps_model(x, t)
        if self.calls == self.nfe:
            torch.cuda.set_sync_debug_mode("default")
        return eps


def run(eps_model, method, options, nfe=None):
    g = torch.Generator("cuda").manual_seed(0)
    model = eps_model if nfe is None else SyncWindow(eps_model, nfe)
    try:
        steps = None if "grid" in options else 4 if method != "ode" else 2
        res = sg.sample(model, sg.VPSDE(), (4, 1, 8, 8), method, steps, generator=g, device="cuda",
                        dtype=torch.float32, **options)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return res, model


def test_the_window_catches_a_sync(net):
    """A network that reads a value back to the host raises inside the window (the check is live)."""
    def syncing(x, t):
        return net(x, t) * float(t[0])
    with pytest.raises(RuntimeError, match="synchroniz"):
        run(syncing, "ddim", {}, nfe=4)


def test_the_network_alone_does_not_sync(net):
    x, t = torch.randn(4, 1, 8, 8, device="cuda"), torch.full((4,), 0.5, device="cuda")
    net(x, t)  # warm-up: kernel selection may synchronise once
    torch.cuda.set_sync_debug_mode("error")
    try:
        net(x, t)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("method, options", CASES)
def test_fixed_step_sampler_loop_does_not_sync(net, method, options):
    ref, _ = run(net, method, options)  # also the warm-up
    res, window = run(net, method, options, nfe=ref.nfe)
    assert window.calls == ref.nfe and window.modes == {2}  # every call ran with sync debug mode "error"
    torch.testing.assert_close(res.x, ref.x)  # the guarded run is the same sampler run


@pytest.mark.parametrize("time", ["index", "sigma"])
def test_a_wrapped_network_on_a_discrete_schedule_does_not_sync(net, time):
    """sg.wrap's conversions (v to eps, t to timesteps or sigma) on a discrete schedule, whose knots are copied to
    the GPU once, and bf16 autocast (sg.adapters.Autocast) add no sync to the loop."""
    sde = sg.VPSDE.from_ddpm_betas(torch.linspace(1e-4, 0.02, 1000))
    model = sg.adapters.Autocast(sg.wrap(lambda x, tau: net(x, tau / 1000), sde, prediction="v", time=time),
                                 torch.bfloat16)
    for guard in (None, 4):
        g = torch.Generator("cuda").manual_seed(0)
        window = model if guard is None else SyncWindow(model, guard)
        try:
            sg.sample(window, sde, (4, 1, 8, 8), "ddim", 4, generator=g, device="cuda", dtype=torch.float32)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert window.modes == {2}
