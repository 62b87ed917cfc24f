"""The sweep planned: which rows a run has, from its settings and a few facts of its data, checked before any
model is loaded, trained or sampled and before any file is written.

``check(settings)`` is what the settings alone must satisfy; ``plan(settings, facts)`` is pure (no model, no
data, no file): the rows, samples per row, the model kinds the rows need and the output folder.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...core.flow import ADAPTIVE
from ...models.loading import compute_dtype
from ...samplers import is_deterministic
from .rank import LOWER_IS_BETTER, RANKABLE, row_name
from .settings import DEFAULT_N, CompareSettings


@dataclass(frozen=True)
class Sweep:
    """One line of the plot: ``method`` with ``options`` at each of ``values`` (step counts, or rtol = atol
    for an adaptive solver); ``quick`` are the values of ``--quick``. ``kind`` is the model's
    (``core.flow.kind_of``): "eps", sampled by the samplers' ``method`` (an eps-network, or a latent diffusion
    model on its latents), or "vae", by ``VAE.sample`` (one decoder call; ``method`` is then only its label,
    and the data must be images). ``grid``: "tuned" runs on the model's tuned grid for this sampler and step
    count (``tune.grid_for``), "learned" by the solver learned for the model at this NFE (``--solver``, or
    ``tune_solver.solver_for``; where there is none, ``tune_solver.BASE`` on the run's grid), None on the
    run's grid."""
    method: str
    options: dict
    values: tuple
    quick: tuple
    kind: str = "eps"
    grid: str | None = None

    @property
    def adaptive(self) -> bool:
        return self.options.get("solver") in ADAPTIVE


SWEEPS = {
    "ddpm": Sweep("ddpm", {}, (10, 20, 50, 100, 1000), (10, 100)),
    "ddim": Sweep("ddim", {}, (10, 20, 50, 100), (10, 100)),  # 1000 steps: the same samples as 100 (ode_err)
    "sde": Sweep("sde", {"solver": "euler"}, (20, 50, 100, 200), (50,)),
    "ode-heun": Sweep("ode", {"solver": "heun2"}, (5, 10, 25), (10,)),
    "ode-dopri5": Sweep("ode", {"solver": "dopri5"}, (1e-2, 1e-3, 1e-4), (1e-3,)),
    "dpmpp": Sweep("dpmpp", {}, (5, 10, 20), (10,)),             # DPM-Solver++(2M)
    "dpmpp-tuned": Sweep("dpmpp", {}, (10,), (10,), grid="tuned"),
    "unipc": Sweep("unipc", {}, (5, 10, 20), (10,)),
    "heun": Sweep("heun", {}, (3, 5, 10), (5,)),                # EDM: 2K - 1 NFE, 5, 9 and 19
    "deis": Sweep("deis", {}, (3, 4, 5, 6, 8, 10), (5,)),         # tAB, order 3
    "ipndm": Sweep("ipndm", {}, (3, 4, 5, 6, 8, 10), (5,)),
    "learned": Sweep("learned", {}, (3, 4, 5, 6, 8, 10), (5,), grid="learned"),  # tune_solver's, else unipc
    "vae": Sweep("vae", {}, (1,), (1,), kind="vae"),  # the conv VAE of nets.vae
}


@dataclass(frozen=True)
class Row:
    """One row of the table: the sweep ``label``'s sampler at ``value`` (a step count or a tolerance)."""
    label: str
    sweep: Sweep
    value: float

    @property
    def deterministic(self) -> bool:
        """A map of its prior draw, measured by ``ode_err`` against the PF-ODE's."""
        return self.sweep.kind == "eps" and is_deterministic(self.sweep.method, self.sweep.options)


@dataclass(frozen=True)
class Facts:
    """What the plan knows of the data and of a given eps-network: the data set's ``name`` (the default
    output folder), one sample's ``shape``, whether it ``is_image``, its ``n_train`` training items (the most
    the data floor can take), ``grid_steps`` (the step count of an explicit grid, which fixes every fixed-step
    row's), whether the given model is ``foreign`` (not a scoregen checkpoint: no VAE of its own to compare) and
    ``solver_steps``, the NFE of a given learned solver's file (the one row of the sweep "learned")."""
    name: str
    shape: tuple
    is_image: bool
    n_train: int
    grid_steps: int | None = None
    foreign: bool = False
    solver_steps: int | None = None


@dataclass(frozen=True)
class Plan:
    """The rows in order, ``n`` samples per row, the model ``kinds`` they need ("eps", and "vae" for a VAE
    row) and the ``out`` folder."""
    rows: tuple[Row, ...]
    n: int
    kinds: tuple[str, ...]
    out: Path


def check_samplers(samplers, sweeps: dict = SWEEPS) -> list[str]:
    samplers = list(sweeps) if samplers is None else [samplers] if isinstance(samplers, str) else list(samplers)
    unknown = [s for s in samplers if s not in sweeps]
    if unknown:
        raise ValueError(f"unknown sampler(s) {', '.join(map(repr, unknown))}; valid: {', '.join(sweeps)}")
    if not samplers:
        raise ValueError(f"empty sweep: samplers is empty; choose from {', '.join(sweeps)}")
    return list(dict.fromkeys(samplers))


def check(s: CompareSettings, sweeps: dict = SWEEPS) -> None:
    """What the settings must satisfy on their own (before the data, the grid file or any model is read)."""
    if not isinstance(s, CompareSettings):
        raise ValueError(f"compare takes a CompareSettings; got {s!r}")
    if not isinstance(s.dataset, str):
        raise ValueError(f"dataset must be a data set name; got {s.dataset!r}")
    check_samplers(s.samplers, sweeps)
    for name, value, low in (("n", s.n, 4), ("batch_size", s.batch_size, 2)):  # n: two halves of two
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    for name, value, low in (("halves", s.halves, 4), ("repeats", s.repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}; got {value!r}")
    if s.halves % 2:
        raise ValueError(f"halves must be even (the two halves of each random partition); got {s.halves}")
    if s.rank_by is not None and s.rank_by not in LOWER_IS_BETTER:
        raise ValueError(f"rank_by must be one of {', '.join(LOWER_IS_BETTER)}; got {s.rank_by!r}")
    compute_dtype(s.dtype)
    if not (isinstance(s.grid_nfe, (int, float)) and s.grid_nfe > 0):
        raise ValueError(f"grid_nfe must be a positive number; got {s.grid_nfe!r}")


def _check_values(label: str, values, sweeps: dict) -> tuple:
    sweep, values = sweeps[label], tuple(values)
    if not values:
        raise ValueError(f"empty sweep: no {'tolerances' if sweep.adaptive else 'step counts'} for {label!r}")
    for v in values:
        if sweep.adaptive:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
                raise ValueError(f"tolerances of {label!r} must be numbers in (0, 1); got {v!r}")
        elif isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"step counts of {label!r} must be positive integers; got {v!r}")
        elif sweep.kind == "vae" and v != 1:
            raise ValueError(f"'vae' is one decoder call: its only step count is 1; got {v!r}")
    return values


def _rows(samplers, steps, tols, quick: bool, is_image: bool, grid_steps: int | None, sweeps: dict,
          solver_steps: int | None = None) -> list[Row]:
    """The rows of the sweep: ``steps`` a list for every fixed-step sampler or a dict sampler -> list
    (tolerances for adaptive ones), ``tols`` a list for every adaptive sampler. ``grid_steps``: the step
    count of an explicit grid, which every fixed-step sampler then runs at."""
    explicit = samplers is not None
    samplers = check_samplers(samplers, sweeps)
    per_label = dict(steps) if isinstance(steps, dict) else {}
    bad = [k for k in per_label if k not in samplers]
    if bad:
        raise ValueError(f"steps given for sampler(s) {', '.join(map(repr, bad))} not in the sweep "
                         f"({', '.join(samplers)})")
    if grid_steps is not None and (steps is not None and not isinstance(steps, dict)
                                   or any(not sweeps[k].adaptive for k in per_label)):
        raise ValueError(f"the grid file fixes the step count ({grid_steps}): give no step counts")
    rows = []
    for label in samplers:
        sweep = sweeps[label]
        if sweep.kind == "vae" and not is_image:
            if explicit:
                raise ValueError(f"sampler {label!r} needs image data (nets.vae builds convolutional VAEs)")
            continue
        if sweep.grid == "learned" and solver_steps is not None:
            if label in per_label:
                raise ValueError(f"the solver file fixes the steps of {label!r} ({solver_steps}): give it none")
            values = (solver_steps,)
        elif label in per_label:
            values = per_label[label]
        elif sweep.adaptive and tols is not None:
            values = tols
        elif not sweep.adaptive and sweep.kind == "eps" and grid_steps is not None:
            values = (grid_steps,)
        elif not sweep.adaptive and sweep.kind == "eps" and steps is not None and not isinstance(steps, dict):
            values = steps
        else:
            values = sweep.quick if quick else sweep.values
        rows += [Row(label, sweep, v) for v in _check_values(label, values, sweeps)]
    if not rows:
        raise ValueError("empty sweep: no rows to run")
    return rows


def plan(s: CompareSettings, facts: Facts, sweeps: dict = SWEEPS) -> Plan:
    """The run of ``s`` on data with ``facts`` (module docstring); an error for settings that do not fit them."""
    samplers = s.samplers
    if samplers is None and s.vae_checkpoint is None and facts.foreign:
        samplers = [label for label, sweep in sweeps.items() if sweep.kind != "vae"]  # no VAE of theirs to compare
    rows = _rows(samplers, s.steps, s.tols, s.quick, facts.is_image, facts.grid_steps, sweeps, facts.solver_steps)
    if s.solver is not None and not any(r.sweep.grid == "learned" for r in rows):
        learned = ", ".join(k for k, v in sweeps.items() if v.grid == "learned")
        raise ValueError(f"solver given but no sampler of the sweep runs it: add {learned} to the samplers")
    n = s.n or DEFAULT_N["image" if facts.is_image else "vector"] // (5 if s.quick else 1)
    if facts.is_image and n > facts.n_train:
        raise ValueError(f"n must be at most {facts.n_train} for {facts.name}: the data floor compares "
                         f"n training items with the held-out split; got {n}")
    kinds = ("eps", "vae") if any(r.sweep.kind == "vae" for r in rows) else ("eps",)
    if s.vae_checkpoint is not None and "vae" not in kinds:
        raise ValueError("vae_checkpoint given but 'vae' is not in the sweep")
    for name in ("inception_path", "ref_stats", "save_ref_stats"):
        if getattr(s, name) is not None and not facts.is_image:
            raise ValueError(f"{name} is for images; {facts.name} samples have shape {facts.shape}")
    kind = "image" if facts.is_image else "vector"
    if s.rank_by is not None and s.rank_by not in RANKABLE[kind]:
        raise ValueError(f"rank_by {s.rank_by!r} is not measured on {facts.name}; choose from "
                         f"{', '.join(RANKABLE[kind])}")
    names = [row_name(dict(sampler=r.label, steps=r.value, tol=r.value if r.sweep.adaptive else None)) for r in rows]
    if s.baseline is not None and s.baseline not in names:
        raise ValueError(f"baseline {s.baseline!r} is not a row of this run; rows: {', '.join(names)}")
    if s.baseline is not None and s.rank_by == "ode_err" and not rows[names.index(s.baseline)].deterministic:
        raise ValueError(f"baseline {s.baseline!r} has no ode_err (it is not a map of its prior draws); rank by "
                         "another metric or name a deterministic row")
    out = Path(s.out) if s.out is not None else Path("results") / facts.name
    return Plan(tuple(rows), n, kinds, out)


__all__ = ["Sweep", "SWEEPS", "Row", "Facts", "Plan", "check", "check_samplers", "plan"]
