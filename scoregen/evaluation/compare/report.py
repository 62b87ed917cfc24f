"""A run's results as files: ``compare.json``, ``compare.csv``, ``compare.md``, ``quality_vs_nfe.png`` and
``samples_<sampler>.png`` (rendered by ``runtime.outputs``), written once every row is measured, all of them or
none (``outputs.write_together``: a full disk leaves the previous run's files as they were), ``compare.json``
last. ``compare.json`` lists the files of its run (``files``); of the files an earlier run into the same folder
listed, those this run has not written (pictures of samplers it has not run) are removed, so the folder holds one
run. No other file is touched: a picture of the user's own, named ``samples_*.png`` too, stays."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from ...runtime import outputs
from ..spread import Z95
from .plan import SWEEPS
from .rank import paragraph
from .run import Results

SPREADS = ("Each ± is the sampling error of the value at this n with the reference set held fixed: the spread of "
           "the metric over {halves} random halves of the row's samples (the delete-d jackknife with d = n/2; "
           "``scoregen.evaluation.spread``), about 10% uncertain itself. `(reruns s)`: the spread over fresh seeds "
           "(--repeats). fd_inf is fd extrapolated to infinitely many samples (Chong & Forsyth 2020). The last column "
           "compares each row with the reference row on the same draws and halves: difference ± paired spread, "
           "'tied' when its 95% interval holds 0.")

METRICS = ("fd", "fd_inf", "kid", "swd", "mmd", "logp", "logp_data", "logp_gap", "moment_kl", "precision", "recall",
           "density", "coverage", "attr_tv", "ode_err", "clipped")  # columns
PLOTTED = ("fd", "fd_inf", "kid", "swd", "mmd", "moment_kl", "logp_gap", "precision", "recall", "attr_tv",
           "ode_err")  # panels, those the rows have
LOG_SCALE = ("fd", "swd", "moment_kl", "ode_err")  # positive metrics, plotted on a log axis


def markdown_table(rows: list[dict]) -> str:
    """The rows of ``compare`` as a markdown table, each metric as ``value ± spread``; options are the
    sweep's own (every resolved option is in the JSON and CSV)."""
    return outputs.markdown_table(rows, METRICS, {label: sweep.options for label, sweep in SWEEPS.items()})


def report(results: Results, out: Path, *, grid_nfe: float = 100, progress: bool = True) -> None:
    """Every file of a run into ``out`` (module docstring), rendered in memory first. quality_vs_nfe.png: the
    headline metrics, one line per sampler, a star for the VAE and each tuned row; each sampler's picture
    shows its row with the NFE closest to ``grid_nfe``."""
    summary = results.summary
    table = summary["rows"]
    title = f"{summary['dataset']}: n = {summary['n']} samples per row, seed {summary['seed']}, {summary['device']}"
    note = f"Model: {summary['checkpoint']} ({summary['model']['format']}, {summary['dtype']})." + (
        "" if results.features_note is None else f" {results.features_note}.")
    plot = outputs.quality_plot(table, title, PLOTTED, LOG_SCALE, z95=Z95,
                                stars=[label for label, sweep in SWEEPS.items() if sweep.kind == "vae" or sweep.grid])
    text = f"# {title}\n\n{note}\n\n{SPREADS.format(halves=summary['halves'])}\n\n{markdown_table(table)}\n" \
           f"{paragraph(summary['ranking'], table)}"
    files = {"compare.csv": outputs.csv_table(table, METRICS), "compare.md": text.encode(),
             "quality_vs_nfe.png": plot}
    rows = table[1:]  # the sweep's rows, in the order of results.samples (the data floor has no samples)
    for label in dict.fromkeys(r["sampler"] for r in rows):
        best = min((i for i, r in enumerate(rows) if r["sampler"] == label),
                   key=lambda i: abs(math.log(rows[i]["nfe"] / grid_nfe)))
        files[f"samples_{label}.png"] = outputs.sample_png(results.samples[best])
    files["compare.json"] = json.dumps({**summary, "files": [*files, "compare.json"]}, indent=2).encode() + b"\n"
    stale = set(_files_of_previous_run(out)) - set(files)
    outputs.write_together(out, files)
    for name in stale:
        (out / name).unlink(missing_ok=True)
    if progress:
        print(f"wrote {', '.join(files)} to {out} ({summary['wall_s_total']:.0f} s)", file=sys.stderr)


def _files_of_previous_run(out: Path) -> list[str]:
    """The file names the ``compare.json`` in ``out`` lists (``files``); none if it is missing, unreadable or has no
    such list."""
    try:
        files = json.loads((out / "compare.json").read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [f for f in files if isinstance(f, str) and f == Path(f).name] if isinstance(files, list) else []


__all__ = ["METRICS", "markdown_table", "report"]
