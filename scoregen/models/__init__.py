"""Models: the networks (``nets``), checkpoints, loading from anywhere (``loading``, ``adapters``, ``diffusers``),
training (``train``) and finding a data set's model (``zoo``, the one module here that trains)."""
from .loading import DTYPES, LoadedModel, ModelInfo, compute_dtype, load_checked, load_model, vae_options, with_dtype

__all__ = ["DTYPES", "LoadedModel", "ModelInfo", "compute_dtype", "load_checked", "load_model", "vae_options",
           "with_dtype"]
