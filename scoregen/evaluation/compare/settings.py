"""What ``compare`` runs: ``CompareSettings``, each field declared once with its command-line flag, help and
parsing (``core.settings``), so that ``scoregen compare``'s parser is generated from it."""
from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from pathlib import Path

import torch

from ...core.settings import (data_path_setting, dataset_options_setting, device_setting, dtype_setting, number,
                              progress_setting, setting)
from ...models.loading import DTYPES
from ...runtime.distributed import CHUNK
from ...samplers.grids import GRIDS
from ..spread import HALVES
from .rank import LOWER_IS_BETTER

DEFAULT_N = {"image": 500, "vector": 2000}  # samples per row; --quick: a fifth
CHECKPOINTS = {"eps": "checkpoint (--checkpoint)", "vae": "vae_checkpoint (--vae-checkpoint)"}  # each kind's setting


def _numbers(text: str, flag: str) -> list:
    """``"10,1e-3"`` -> [10, 0.001]; an error names ``flag``."""
    return [number(x, flag) for x in text.split(",")]


def parse_steps(values: list[str] | None):
    """``--steps`` values: ``["10,20"]`` -> [10, 20] (every fixed-step sampler), ``["ddim=10,20", "ode-dopri5=1e-3"]``
    -> a dict sampler -> values; None -> None."""
    if not values:
        return None
    per = [v.partition("=") for v in values]
    if all(sep for _, sep, _ in per):
        return {k: _numbers(v, f"--steps {k}") for k, _, v in per}
    if len(values) == 1:
        return _numbers(values[0], "--steps")
    raise ValueError("give --steps once as N,N,... (every fixed-step sampler) or as SAMPLER=N,N,... (repeatable)")


def _tols(values: list[str]):
    """``--tols``: the last one given (a plain flag), comma-separated numbers; "" -> None. Read after the command
    line is parsed, so that a bad number is the command's own one-line error."""
    return _numbers(values[-1], "--tols") if values[-1] else None


def _names(text: str):
    """``--samplers a,b`` -> ["a", "b"]; "" -> None (all)."""
    return text.split(",") if text else None


@dataclass(frozen=True)
class CompareSettings:
    """What ``compare`` runs; everything but ``dataset`` by keyword. Each field's help is its command-line
    help (``scoregen compare --help``); in Python:

    - ``dataset``: a ``load_dataset`` name ('digits', 'gmm', 'toy', 'cartoon', 'folder', 'npz'), or an image folder
      or ``.npz`` file of reference images (``data.dataset_source``); ``dataset_options`` go to its loader (e.g.
      ``{"mixture": "ring8"}``), ``data_path`` is its "path" option (given once).
    - ``samplers``: keys of ``SWEEPS`` (default: all; 'vae' for image data only, and with a model that is not a
      scoregen checkpoint only when ``vae_checkpoint`` is given).
    - ``steps``: step counts for every fixed-step sampler, or a dict sampler -> step counts (tolerances for an
      adaptive one); ``tols``: tolerances (rtol = atol) for every adaptive sampler. Defaults: each ``Sweep``'s
      values (``quick``: its quick values).
    - ``checkpoint`` is any ``models.load_model`` source; ``dtype`` its compute dtype (``models.with_dtype``).
    - ``grid``: a rule of ``samplers.GRIDS``, or a grid file (a JSON list of decreasing times, or ``scoregen
      tune-grid``'s output; ``samplers.grids.load_grid``) or tensor, which fixes every fixed-step sampler's step
      count (samplers that stop at t_min > 0 get its last time 0 replaced by the model's t_min); rows with
      ``Sweep.grid`` "tuned" run on the model's tuned grid. ``grid_nfe``: each sampler's picture shows its row
      with the NFE closest to this.
    - ``batch_size``: the chunks, each seeded from ``seed`` and its index, that the processes of a torchrun
      share (the same samples at any world size).
    - ``cache_dir``: trained models, feature networks and tuned grids (``runtime.cache``).
    - ``inception_path``: ``features.InceptionFeatures`` weights: image rows are then scored in its pool3
      space, i.e. standard FID and KID, instead of the package's feature network. ``ref_stats``: FID statistics
      (``features.load_reference_stats``) that ``fd`` and ``fd_inf`` are measured against (published ones, with
      the same detector); ``save_ref_stats``: where to write the held-out split's (``features.save_reference_stats``).
    - ``halves``: the random halves of every row's samples on which each metric is recomputed: its spread, and
      the paired spread of a difference between rows (``evaluation.spread``); ``repeats``: each row drawn from
      ``repeats`` seeds, the spread over them (``<metric>_rerun_std``) beside the halves'.
    - ``rank_by``: the metric of the ranking (``compare.rank``; lower is better), ``baseline`` the row all rows
      are compared with (``rank.row_name``: 'ddim@10', 'ode-dopri5@0.001'; default: the best row).
    - ``progress``: progress bars and the note of what was written, on stderr.
    """
    dataset: str = setting("digits", "the data the samples are measured against: a data set name, an image folder "
                                     "(resized to the model's size) or an .npz of images", aliases=("--reference",))
    _: KW_ONLY
    dataset_options: dict | None = dataset_options_setting()
    data_path: str | None = data_path_setting()
    samplers: list | str | None = setting(None, "comma-separated sampler names (default: all)", parse=_names)
    steps: list | dict | None = setting(None, "step counts for every fixed-step sampler, or per sampler (repeatable)",
                                        metavar="[SAMPLER=]N,N,...", repeat=True, parse=parse_steps)
    tols: list | None = setting(None, "comma-separated tolerances (rtol = atol) for adaptive solvers", repeat=True,
                                parse=_tols)
    n: int | None = setting(None, f"samples per row (default: {DEFAULT_N['image']} for images, "
                                  f"{DEFAULT_N['vector']} otherwise)", short="-n")
    device: str | None = device_setting()
    dtype: str | None = dtype_setting(tuple(DTYPES))
    seed: int = setting(0, "seed of the prior draws")
    out: Path | str | None = setting(None, "output folder (default: results/<data set>)")
    quick: bool = setting(False, "smoke run: few step counts, few samples")
    checkpoint: Path | str | None = setting(None, "eps-network: a scoregen checkpoint or a diffusers folder (default: "
                                                  "the data set's shipped, cached or trained one)", flag="--model",
                                            aliases=("--checkpoint",))
    vae_checkpoint: Path | str | None = setting(None, "VAE checkpoint (default: shipped, cached or trained)")
    grid: str | Path | torch.Tensor = setting("uniform", f"time grid of every sampler: a name ({', '.join(GRIDS)}) "
                                                         "or a grid file (JSON, e.g. from `scoregen tune-grid`; it "
                                                         "fixes the steps)")
    solver: Path | str | None = setting(None, "a learned solver's file (`scoregen tune --learn solver`) for the row "
                                              "`learned` (default: the model's shipped or cached ones, else unipc)",
                                        metavar="FILE.json")
    grid_nfe: float = setting(100, "NFE of the sample pictures")
    batch_size: int | None = setting(CHUNK, "samples per sampler call, each seeded from --seed and its index: the "
                                            "unit that torchrun's processes share")
    cache_dir: Path | str | None = setting(None, "model cache (default: ~/.cache/scoregen)")
    inception_path: Path | str | None = setting(None, "Inception weights on disk (TorchScript "
                                                      "inception-2015-12-05.pt or a torchvision state dict): "
                                                      "standard FID/KID")
    ref_stats: Path | str | None = setting(None, "FID statistics (an npz of mu and sigma: published, or from "
                                                 "--save-ref-stats) that fd and fd_inf are measured against instead "
                                                 "of the held-out split's features", metavar="FILE.npz")
    save_ref_stats: Path | str | None = setting(None, "write the held-out split's statistics in the feature space "
                                                      "(mu, sigma npz, as pytorch-fid and clean-fid)",
                                                metavar="FILE.npz")
    halves: int = setting(HALVES, "random halves that give each metric's spread and pair the rows' differences "
                                  "(even, >= 4)")
    repeats: int = setting(1, "draw every row again from --seed + 1, ..., + R - 1 and report the spread over the "
                              "reruns beside the halves' (R times the sampling)", metavar="R")
    rank_by: str | None = setting(None, "the metric rows are ranked by (default: fd for images, swd otherwise)",
                                  choices=LOWER_IS_BETTER)
    baseline: str | None = setting(None, "the row every row is compared with, as SAMPLER@STEPS (SAMPLER@TOL for an "
                                         "adaptive solver; default: the best row)", metavar="SAMPLER@STEPS")
    progress: bool = progress_setting()


__all__ = ["CompareSettings", "parse_steps", "DEFAULT_N", "CHECKPOINTS"]
