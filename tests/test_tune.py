"""Grids tuned to the model (``scoregen.tune``) on the exact eps of the 2-D mixture oracle, and grid files."""
import json

import pytest
import torch

import scoregen as sg
from scoregen.data.gmm import preset
from scoregen.evaluation.metrics import ode_err
from scoregen.models.loading import LoadedModel, ModelInfo
from scoregen.samplers.grids import load_grid, save_grid
from scoregen.evaluation.tune import grid_for, held_out_errors, optimize_grid

F64 = torch.float64
SDE = sg.VPSDE()
EPS = preset("gmm2d").eps_model(SDE)


@pytest.mark.parametrize("method, options, steps, held_out_ratio", [
    ("ddim", {}, 6, 0.88),                   # measured 0.83 (tuning draws: 0.78)
    ("ode", {"solver": "euler"}, 6, 0.75),   # 0.68 (0.72)
    ("dpmpp", {}, 6, 0.8),                   # 0.75 (0.66)
])
def test_the_tuned_grid_beats_every_named_grid_on_draws_it_was_not_tuned_on(method, options, steps, held_out_ratio):
    tuned = optimize_grid(EPS, SDE, method, steps, (2,), dtype=F64, max_evals=100, **options)
    t, end = tuned.t, 0.0 if method in ("ddim", "dpmpp") else sg.T_MIN
    assert t.dtype == F64 and t.shape == (steps + 1,) and (t[0], t[-1]) == (1.0, end)
    assert bool((t[1:] < t[:-1]).all()) and bool((t[1:-1] > sg.T_MIN).all())
    assert tuned.evaluations <= 100 and tuned.start_grid == min(tuned.fixed_errors, key=tuned.fixed_errors.get)
    assert tuned.error < 0.8 * tuned.start_error
    held = held_out_errors(EPS, SDE, method, t, (2,), seed=1, dtype=F64, **options)
    assert held.keys() == {"tuned", *sg.GRIDS}
    assert held["tuned"] < held_out_ratio * min(v for k, v in held.items() if k != "tuned"), held


def test_the_error_is_the_samplers_ode_err_on_the_tuning_draws_and_sample_takes_the_grid():
    tuned = optimize_grid(EPS, SDE, "ddim", 5, (2,), n=64, seed=3, dtype=F64, max_evals=20)
    x1 = torch.randn(64, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    res = sg.sample(EPS, SDE, (64, 2), "ddim", grid=tuned.t, x1=x1, dtype=F64)
    assert res.nfe == 5 and res.options["grid"] == "explicit"
    assert ode_err(res.x, sg.pf_ode_solution(EPS, SDE, x1, dtype=F64).x) == tuned.error


def test_no_budget_or_one_step_gives_the_best_named_grid():
    for steps, max_evals in ((4, 0), (1, 50)):
        tuned = optimize_grid(EPS, SDE, "ddim", steps, (2,), n=32, dtype=F64, max_evals=max_evals)
        assert tuned.evaluations == 0 and tuned.error == tuned.start_error == min(tuned.fixed_errors.values())


@pytest.mark.parametrize("method, options", [("ddpm", {}), ("sde", {}), ("pc", {}), ("ddim", {"eta": 0.5}),
                                             ("dpmpp", {"eta": 1.0}), ("heun", {"s_churn": 1.0}),
                                             ("ode", {"solver": "dopri5"})])
def test_stochastic_samplers_and_adaptive_solvers_are_refused(method, options):
    with pytest.raises(ValueError, match=f"method '{method}' with options .* is not a deterministic map"):
        optimize_grid(EPS, SDE, method, 4, (2,), dtype=F64, **options)


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="gan"), "unknown method 'gan'; valid: ddpm, ddim"),
    (dict(steps=0), "steps must be an integer >= 1; got 0"),
    (dict(n=1), "n must be an integer >= 2; got 1"),
    (dict(shape=(256, 0)), r"shape must be the shape of one sample.*got \(256, 0\)"),
    (dict(max_evals=-1), "max_evals must be an integer >= 0; got -1"),
    (dict(order=5), "order must be one of 1, 2, 3; got 5"),
    (dict(beta=1), "option\\(s\\) beta do not belong to method 'dpmpp'"),
])
def test_bad_arguments_are_named(kwargs, message):
    args = dict(method="dpmpp", steps=4, shape=(2,)) | kwargs
    with pytest.raises(ValueError, match=message):
        optimize_grid(EPS, SDE, args.pop("method"), args.pop("steps"), args.pop("shape"), dtype=F64, **args)


def test_grid_files_round_trip_as_objects_or_bare_lists(tmp_path):
    t = torch.tensor([1.0, 0.5, 0.125, 0.0], dtype=F64)
    save_grid(tmp_path / "g.json", t, method="ddim", steps=3, errors={"tuning": {"tuned": 0.1}})
    assert json.loads((tmp_path / "g.json").read_text()) == {"t": t.tolist(), "method": "ddim", "steps": 3,
                                                             "errors": {"tuning": {"tuned": 0.1}}}
    assert torch.equal(load_grid(tmp_path / "g.json"), t) and load_grid(tmp_path / "g.json").dtype == F64
    (tmp_path / "bare.json").write_text("[0.999, 0.5, 0.001]")  # e.g. diffusers' (k + 1) / N
    assert load_grid(tmp_path / "bare.json").tolist() == [0.999, 0.5, 0.001]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare.json", "g.json"]  # no temporary files left


@pytest.mark.parametrize("text, message", [
    ("[1, 0.5, 0.5]", "the times of .*bad.json: the grid must hold at least two strictly decreasing times"),
    ("[1.5, 0.5, 0]", r"strictly decreasing times in \[0, 1\]; got \[1.5, 0.5, 0.0\]"),
    ("[1, 0.5, -0.1]", r"in \[0, 1\]"),
    ("[1]", "at least two"),
    ('[1, "0.5", 0]', r"must be a list of decreasing times in \[0, 1\]; got '0.5' at index 1"),
    ('{"times": [1, 0]}', "is not a grid file: its JSON object has no 't' \\(the times\\); keys: times"),
    ('"1, 0"', "must be a list of decreasing times in \\[0, 1\\]; got a str"),
    ("1, 0.5, 0", "is not a grid file: not valid JSON"),
])
def test_bad_grid_files_are_named(tmp_path, text, message):
    (tmp_path / "bad.json").write_text(text)
    with pytest.raises(ValueError, match=message):
        load_grid(tmp_path / "bad.json")


def test_missing_grid_files_and_bad_grids_to_save(tmp_path):
    with pytest.raises(FileNotFoundError, match="no grid file at .*missing.json"):
        load_grid(tmp_path / "missing.json")
    with pytest.raises(IsADirectoryError, match="is a folder, not a grid file"):
        load_grid(tmp_path)
    with pytest.raises(ValueError, match="^t: the grid must hold at least two strictly decreasing times"):
        save_grid(tmp_path / "g.json", [0.0, 1.0])
    assert not list(tmp_path.iterdir())


class _Oracle(torch.nn.Module):
    """The oracle as a module in float64, as ``models.load_checked`` gives a network."""

    def __init__(self):
        super().__init__()
        self.register_buffer("dtype_of", torch.zeros((), dtype=F64))

    def forward(self, x, t):
        return EPS(x, t)


def test_grid_for_tunes_once_per_checkpoint_method_steps_and_options(tmp_path, monkeypatch):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights")
    loaded = LoadedModel(_Oracle(), SDE, ModelInfo(str(ckpt), "scoregen", (2,), 2e-3))
    t = grid_for(loaded, "ode", 4, {"solver": "heun2"}, cache_dir=tmp_path)
    assert (t[0], t[-1]) == (1.0, 2e-3)
    (path,) = (tmp_path / "grids").iterdir()
    assert json.loads(path.read_text())["options"] == {"solver": "heun2"}

    def no_tuning(*args, **kwargs):
        raise AssertionError("tuned again")
    monkeypatch.setattr(sg.tune, "optimize_grid", no_tuning)
    assert torch.equal(grid_for(loaded, "ode", 4, {"solver": "heun2"}, cache_dir=tmp_path), t)
    with pytest.raises(AssertionError, match="tuned again"):
        grid_for(loaded, "ode", 4, {"solver": "rk4"}, cache_dir=tmp_path)
    ckpt.write_bytes(b"other weights")
    with pytest.raises(AssertionError, match="tuned again"):
        grid_for(loaded, "ode", 4, {"solver": "heun2"}, cache_dir=tmp_path)


def test_the_shipped_checkpoints_tuned_grids_are_shipped_and_read_without_tuning(tmp_path, monkeypatch):
    """Each shipped grid names a shipped checkpoint by its digest (a retrained one needs its grid re-tuned and
    shipped), and ``grid_for`` reads it from an empty cache without tuning or writing anything."""
    from scoregen.evaluation import tune
    shipped = sorted(tune.SHIPPED_GRIDS.glob("*.json"))
    assert [p.name.rsplit("-", 4)[0] for p in shipped] == ["cartoon", "digits", "digits-latent"]
    for path in shipped:
        stem, digest = path.name.rsplit("-", 4)[:2]
        assert sg.load_model(tune.SHIPPED_GRIDS.parent / f"{stem}.pt").info.digest() == digest, path.name
    monkeypatch.setattr(tune, "optimize_grid", lambda *a, **k: pytest.fail("tuned a shipped model's grid"))
    t = grid_for(sg.load_model(tune.SHIPPED_GRIDS.parent / "digits.pt"), "dpmpp", 10, cache_dir=tmp_path)
    assert len(t) == 11 and t[0] == 1 and t[-1] == 0 and not any(tmp_path.iterdir())
