"""The learned solver (samplers.learned, evaluation.tune_solver): its start is an exponential Adams
predictor-corrector of order 3 on the Gaussian; learned with the exact eps of the gmm2d mixture at 5 NFE it
beats every fixed solver on every named grid on held-out draws; its file round-trips, runs through
``sample``, the CLI and compare, and bad files and grids are refused by name."""
import json
import math

import numpy as np
import pytest
import torch
from scipy import integrate

import scoregen.samplers as S
from scoregen.app.cli import main
from scoregen.core.flow import Model
from scoregen.evaluation.tune_solver import exponential_adams, held_out_solver_errors, optimize_solver
from scoregen.samplers.grids import sampling_grid
from scoregen.samplers.learned import adams_weights, load_solver, save_solver

from oracle import F64, GAUSS, GMM, SDE, exact_flow, gen, rms, slopes
from test_cli import DIGITS, error_of


@pytest.mark.parametrize("nodes", [[0.3], [0.3, -0.5], [0.3, -0.5, -1.4]])
def test_adams_weights_integrate_the_interpolating_polynomial_exactly(nodes):
    lam_t, lam_s = torch.tensor(0.3, dtype=F64), torch.tensor(1.1, dtype=F64)
    w = adams_weights(torch.tensor(nodes, dtype=F64), lam_t, lam_s)
    assert abs(w.sum().item() - 1) < 1e-13
    for degree in range(len(nodes)):  # x0_hat = lam^degree is interpolated exactly
        exact = integrate.quad(lambda u: math.exp(u - 1.1) * u ** degree, 0.3, 1.1, epsabs=1e-14)[0] \
            / -math.expm1(-0.8)
        assert abs(sum(wj * u ** degree for wj, u in zip(w.tolist(), nodes)) - exact) < 1e-12


def test_the_start_converges_at_order_3_on_the_gaussian():
    """AB2 predicts, AM3 corrects (as UniPC-2): the last step is x0_hat where it starts (t_{K-1}), and against
    x0_hat of the exact flow there the slopes are -2.97 -3.01 for K = 20, 40, 80 on the log-SNR grid onto the
    data."""
    n, steps, errs = 200, (20, 40, 80), []
    x1 = torch.randn(n, 2, generator=gen(), dtype=F64)
    model = Model(GAUSS.eps_model(SDE), SDE, torch.device("cpu"), F64)
    for k in steps:
        t = sampling_grid(SDE, "log_snr", k, None, onto_zero=True)[0]
        x = exponential_adams(SDE, t).sample(GAUSS.eps_model(SDE), SDE, (n, 2), x1=x1, dtype=F64).x
        errs.append(rms(x, model.x0(exact_flow(x1, float(t[-2])), t[-2])))
    assert errs[-1] < 1e-3
    for slope in slopes(errs, steps):
        assert -3.3 < slope < -2.7, (errs, slopes(errs, steps))


@pytest.fixture(scope="module")
def learned():
    """The 5-call solver learned with gmm2d's exact eps on 512 draws (7 s)."""
    return optimize_solver(GMM.eps_model(SDE), SDE, 5, (2,), n=512, seed=0, iters=100, batch=256, dtype=F64)


def test_learned_beats_every_fixed_solver_at_5_nfe_on_held_out_draws(learned):
    """Held out (2000 draws of seed 1): learned 0.026 against 0.107 for the best of ddim, dpmpp (2M, 3M), unipc
    (2, 3), deis and ipndm on every named grid (dpmpp on the quadratic grid)."""
    tuning = learned.info["errors"]["tuning"]
    assert tuning["learned"] < 0.5 * learned.info["start"]["error"]
    held = held_out_solver_errors(GMM.eps_model(SDE), SDE, learned, (2,), n=2000, seed=1, dtype=F64)
    assert len(held) == 1 + 7 * len(S.GRIDS)
    best = min(v for k, v in held.items() if k != "learned")
    assert held["learned"] < 0.5 * best, held
    assert held["learned"] < 1.5 * tuning["learned"]  # learning 45 numbers on 512 draws barely overfits


def test_the_file_round_trips_and_runs_through_sample(learned, tmp_path):
    path = save_solver(tmp_path / "s.json", learned)
    assert path.stat().st_size < 5000
    again = load_solver(path)
    for name in ("t", "tau", "g", "P", "C"):
        assert torch.equal(getattr(again, name), getattr(learned, name))
    x1 = torch.randn(50, 2, generator=gen(), dtype=F64)
    res = S.sample(GMM.eps_model(SDE), SDE, (50, 2), "learned", grid=again.t, solver=str(path), x1=x1, dtype=F64)
    assert res.nfe == 5 and S.is_deterministic("learned")
    assert torch.equal(res.x, learned.sample(GMM.eps_model(SDE), SDE, (50, 2), x1=x1, dtype=F64).x)


def test_bad_solvers_and_grids_are_refused_by_name(learned, tmp_path):
    eps, shape = GMM.eps_model(SDE), (4, 2)
    with pytest.raises(ValueError, match="method 'learned' needs its solver"):
        S.sample(eps, SDE, shape, "learned")
    with pytest.raises(ValueError, match="runs on its own grid of 5 steps"):
        S.sample(eps, SDE, shape, "learned", 5, solver=learned)
    bad = tmp_path / "bad.json"
    for text, message in [("{", "not valid JSON"), ('{"t": [1, 0]}', "not a learned-solver file"),
                          ('{"kind": "learned-solver", "t": [1, 0]}', "not a complete learned-solver file")]:
        bad.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_solver(bad)
    data = json.loads(save_solver(tmp_path / "s.json", learned).read_text())
    bad.write_text(json.dumps({**data, "P": data["P"][:-1]}))
    with pytest.raises(ValueError, match=r"P must be finite, of shape \(5, 3\)"):
        load_solver(bad)
    with pytest.raises(FileNotFoundError, match="no learned-solver file"):
        load_solver(tmp_path / "none.json")
    with pytest.raises(ValueError, match="steps must be an integer >= 2"):
        optimize_solver(eps, SDE, 1, (2,), dtype=F64)


def test_tune_learns_a_solver_that_sample_and_compare_run(tmp_path, capsys):
    out = tmp_path / "solver.json"
    main(["tune", DIGITS, "--learn", "solver", "--steps", "3", "-n", "8", "--iters", "2", "--device", "cpu",
          "--no-progress", "--out", str(out)])
    info = load_solver(out).info
    assert info["checkpoint"].endswith("digits.pt") and info["iters"] == 2 and info["n"] == 8
    assert set(info["errors"]) == {"tuning", "held_out"} and "learned" in info["errors"]["held_out"]
    printed = capsys.readouterr().out
    assert "held out (n=8, seed 1): ode_err" in printed and "a 3-call solver learned in" in printed
    main(["sample", DIGITS, "--solver", str(out), "-n", "4", "--device", "cpu", "--out", str(tmp_path / "x.npz")])
    f = np.load(tmp_path / "x.npz")
    assert int(f["nfe"]) == 3 and json.loads(str(f["options"]))["method"] == "learned"
    err = error_of(["sample", DIGITS, "--solver", str(out), "--steps", "3", "--out", str(tmp_path / "y.png")],
                   capsys)
    assert err == "scoregen: error: --solver fixes the method, steps and grid: give no --method, --steps, --grid or -o"
    main(["compare", "--model", DIGITS, "--samplers", "learned,unipc", "--steps", "unipc=3", "--solver", str(out),
          "-n", "40", "--halves", "4", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "cmp")])
    rows = json.loads((tmp_path / "cmp" / "compare.json").read_text())["rows"]
    learned_row = next(r for r in rows if r["sampler"] == "learned")
    assert learned_row["nfe"] == 3 and learned_row["options"]["grid"] == "learned" and learned_row["ode_err"] > 0
    capsys.readouterr()
    main(["compare", "--model", DIGITS, "--samplers", "learned", "--steps", "learned=7", "-n", "40", "--halves", "4",
          "--device", "cpu", "--no-progress", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "c2")])
    row = json.loads((tmp_path / "c2" / "compare.json").read_text())["rows"][1]
    assert row["nfe"] == 7 and row["options"] == {"fallback": "unipc", "grid": "uniform"}
    assert "no solver learned for" in capsys.readouterr().out
    err = error_of(["compare", "--model", DIGITS, "--samplers", "unipc", "--solver", str(out), "--out",
                    str(tmp_path / "c3")], capsys)
    assert "solver given but no sampler of the sweep runs it: add learned to the samplers" in err


@pytest.mark.parametrize("steps", [3, 4, 5, 6, 8, 10])
def test_the_shipped_digits_solvers_are_found_and_beat_every_fixed_solver_held_out(steps):
    """benchmarks/learned_solvers.py --ship: each file is found for the shipped checkpoint (no learning at run
    time), is small, and its held-out error (512 draws of seed 1) is below every fixed solver's on every grid."""
    from scoregen.evaluation.tune_solver import solver_for, solver_path
    from scoregen.models import load_model

    loaded = load_model(DIGITS)
    solver = solver_for(loaded, steps)
    assert solver is not None and solver.steps == steps
    assert solver_path(loaded.info, steps)[0].stat().st_size < 10_000
    held = solver.info["errors"]["held_out"]
    assert held["learned"] < min(v for k, v in held.items() if k != "learned")
