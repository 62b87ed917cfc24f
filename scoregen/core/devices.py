"""Where computation runs: the one check of a ``device`` argument, shared by every command and sampler."""
from __future__ import annotations

import torch


def resolve_device(device) -> torch.device:
    """``device``, or CUDA when available and ``device`` is None, else CPU; anything but a CPU or an
    available CUDA device is a ValueError that says so."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(device)
    except RuntimeError:
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {device!r}") from None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {str(device)!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} but CUDA is not available here; use device='cpu'")
    return device
