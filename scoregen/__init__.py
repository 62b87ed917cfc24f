"""scoregen: DDPM as a discretised VP-SDE, one eps-network, many samplers, honest comparisons.

Names and submodules are imported on first use, so ``import scoregen`` (and the CLI) start fast.
``train`` and ``compare`` are submodules (``sg.train.train(config)``, ``sg.compare.compare(...)``): a
function of the same name would be replaced by the module as soon as the module is imported.
"""
from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "VPSDE": "sde", "T_MIN": "sde",
    "GaussianMixture": "data", "load_dataset": "data", "Dataset": "data",
    "sample": "samplers", "SampleResult": "samplers", "pf_ode_solution": "samplers",
    "optimize_grid": "tune", "METHODS": "samplers", "GRIDS": "samplers",
    "log_likelihood": "likelihood", "ddpm_bound": "likelihood", "bits_per_dim": "likelihood",
    "latent_elbo": "likelihood",
    "QuantizedDataWarning": "quantization",
    "build_model": "nets", "LatentDiffusion": "nets",
    "TrainConfig": "checkpoint", "load_checkpoint": "checkpoint",
    "load_model": "models", "wrap": "adapters",
}
_SUBMODULES = ("sde", "data", "nets", "samplers", "likelihood", "metrics", "features", "control", "train",
               "checkpoint", "compare", "outputs", "quantization", "tune", "models", "adapters", "reference",
               "distributed")
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    if name in _SUBMODULES:
        return import_module(f".{name}", __name__)
    raise AttributeError(f"module 'scoregen' has no attribute {name!r}")
