"""scoregen: DDPM as a discretised VP-SDE, one eps-network, many samplers, honest comparisons.

Names and submodules are imported on first use, so ``import scoregen`` (and the CLI) start fast.
``train`` and ``compare`` are submodules (``sg.train.train(config)``, ``sg.compare.compare(...)``): a
function of the same name would be replaced by the module as soon as the module is imported.
"""
from importlib import import_module

__version__ = "0.1.0"

# the modules by their short names (``sg.likelihood``, ``sg.train``): where each lives in the layout
_SUBMODULES = {
    "sde": "core.sde", "quantization": "core.quantization", "data": "data", "samplers": "samplers",
    "reference": "samplers.reference", "nets": "models.nets", "checkpoint": "models.checkpoint",
    "models": "models", "adapters": "models.adapters", "train": "models.train", "zoo": "models.zoo",
    "likelihood": "evaluation.likelihood", "metrics": "evaluation.metrics", "features": "evaluation.features",
    "manifold": "evaluation.manifold", "spread": "evaluation.spread",
    "control": "evaluation.control", "tune": "evaluation.tune", "tune_solver": "evaluation.tune_solver",
    "compare": "evaluation.compare",
    "outputs": "runtime.outputs", "distributed": "runtime.distributed",
}
_EXPORTS = {
    "VPSDE": "sde", "T_MIN": "sde",
    "GaussianMixture": "data", "load_dataset": "data", "Dataset": "data",
    "sample": "samplers", "SampleResult": "samplers", "pf_ode_solution": "samplers",
    "optimize_grid": "tune", "optimize_solver": "tune_solver", "METHODS": "samplers", "GRIDS": "samplers",
    "log_likelihood": "likelihood", "ddpm_bound": "likelihood", "bits_per_dim": "likelihood",
    "latent_elbo": "likelihood",
    "QuantizedDataWarning": "quantization",
    "build_model": "nets", "LatentDiffusion": "nets",
    "TrainConfig": "checkpoint", "load_checkpoint": "checkpoint",
    "load_model": "models", "wrap": "adapters",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_SUBMODULES[_EXPORTS[name]]}", __name__), name)
    if name in _SUBMODULES:
        return import_module(f".{_SUBMODULES[name]}", __name__)
    raise AttributeError(f"module 'scoregen' has no attribute {name!r}")
