"""scoregen: DDPM as a discretised VP-SDE, one eps-network, many samplers, honest comparisons.

Names are imported on first use, so ``import scoregen`` (and the CLI) start fast.
"""
from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "VPSDE": "sde",
    "GaussianMixture": "data", "load_dataset": "data", "Dataset": "data",
    "sample": "samplers", "SampleResult": "samplers", "METHODS": "samplers", "GRIDS": "samplers",
    "log_likelihood": "likelihood",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'scoregen' has no attribute {name!r}")
