"""Models: the networks (``nets``), checkpoints, loading from anywhere (``loading``, ``adapters``, ``diffusers``),
training (``train``) and finding a data set's model (``zoo``, the one module here that trains)."""
from .loading import DTYPES, KINDS, LoadedModel, ModelInfo, compute_dtype, kind_of, load_checked, load_model, \
    vae_options, with_dtype

__all__ = ["DTYPES", "KINDS", "LoadedModel", "ModelInfo", "compute_dtype", "kind_of", "load_checked", "load_model",
           "vae_options", "with_dtype"]
