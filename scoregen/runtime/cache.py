"""Where scoregen keeps what it computes once and reuses: trained models (``models/``, ``models.zoo``), feature
networks (``features/``, ``evaluation.features``) and tuned grids (``grids/``, ``evaluation.tune``).

The location lives here, in ``runtime`` with the other places work lands on disk, and imports nothing of the
package: the zoo, the feature networks and the tuned grids each find the one cache without depending on each
other.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/scoregen`` (``~/.cache/scoregen`` by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "scoregen"


def cache_dir(given=None) -> Path:
    """The cache folder of a run: ``given`` (a path), else ``cache_root()``."""
    return cache_root() if given is None else Path(given)


__all__ = ["cache_root", "cache_dir"]
