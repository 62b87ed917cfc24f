"""The ranking of a compare run: paired verdicts against the best row or a named baseline, pairs at equal NFE, and
the paragraph written from them; the settings it takes are checked before any work."""
import pytest
import torch

from scoregen.evaluation.compare import CompareSettings, compare
from scoregen.evaluation.compare.rank import paragraph, rank, row_name
from scoregen.evaluation.spread import half_samples, over_halves


def _rows():
    """Four rows on the same 400 draws: 'b' the best, 'a' a hair worse (tied), 'c' clearly worse (resolved) at the
    same NFE as 'b', and an adaptive row; the metric is the mean of each row's per-sample values."""
    g = torch.Generator().manual_seed(0)
    base, noise = torch.randn(2, 400, generator=g, dtype=torch.float64)
    per_sample = {"a": base + 0.05 * (noise - noise.mean() + 0.02),  # 0.001 above b, with a spread of ~0.0025
                  "b": base, "c": base + 0.2, "d": base + 0.5}
    halves = half_samples(400, generator=torch.Generator().manual_seed(1))
    rows, draws = [dict(sampler="data floor", nfe=None, steps=None, tol=None, fd=-1.0)], [{}]
    for name, steps, nfe, tol in (("a", 20, 20, None), ("b", 10, 10, None), ("c", 10, 10, None),
                                  ("d", None, 37.5, 1e-3)):
        x = per_sample[name]
        rows.append(dict(sampler=name, steps=steps, nfe=nfe, tol=tol, fd=x.mean().item()))
        draws.append(over_halves(lambda z: {"fd": z.mean()}, x, halves))
    return rows, draws


def test_rows_are_ranked_against_the_best_with_paired_intervals():
    rows, draws = _rows()
    ranking = rank(rows, draws, "fd", 400)
    verdicts = {row_name(r): r["vs"]["verdict"] for r in rows if "vs" in r}
    assert ranking["best"] == ranking["reference"] == "b@10"
    assert verdicts == {"a@20": "tied", "b@10": "reference", "c@10": "worse", "d@0.001": "worse"}
    assert "vs" not in rows[0] and ranking["tied"] == ["a@20"] and ranking["resolved"] == ["c@10", "d@0.001"]
    c = rows[3]["vs"]
    assert c["diff"] == pytest.approx(0.2) and c["diff_std"] < 1e-12           # a shift of the same draws: exact
    assert rows[1]["vs"]["samples_to_resolve"] > 400                              # the tie needs more samples
    assert [(p["nfe"], p["a"], p["b"], p["resolved"]) for p in ranking["pairs"]] == [(10, "b@10", "c@10", True)]
    text = paragraph(ranking, rows)
    assert "b@10" in text and "Tied with it" in text and "a@20" in text and "At 10 NFE: b@10 < c@10" in text


def test_a_named_baseline_is_the_reference_and_better_rows_are_said_so():
    rows, draws = _rows()
    ranking = rank(rows, draws, "fd", 400, baseline="c@10")
    assert ranking["reference"] == "c@10" and ranking["best"] == "b@10"
    assert rows[2]["vs"]["verdict"] == "better" and rows[3]["vs"]["verdict"] == "reference"
    with pytest.raises(ValueError, match="baseline 'e@1'"):
        rank(rows, draws, "fd", 400, baseline="e@1")
    assert rank(rows, draws, "kid", 400) is None


@pytest.mark.parametrize("options, match", [
    (dict(baseline="ddim@7"), "baseline 'ddim@7' is not a row of this run; rows: ddim@10"),
    (dict(rank_by="swd"), "rank_by 'swd' is not measured on digits"),
    (dict(rank_by="ode_err", baseline="ddpm@10", samplers=["ddpm"]), "baseline 'ddpm@10' has no ode_err"),
    (dict(rank_by="logp"), "rank_by must be one of"),
    (dict(halves=5), "halves must be even"),
    (dict(halves=2), "halves must be an integer >= 4"),
    (dict(repeats=0), "repeats must be an integer >= 1"),
])
def test_ranking_settings_are_checked_before_any_work(tmp_path, options, match):
    with pytest.raises(ValueError, match=match):
        compare(CompareSettings("digits", **{"samplers": ["ddim"], "steps": [10], "out": tmp_path / "out",
                                             "cache_dir": tmp_path / "cache", "progress": False, **options}))
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache" / "models").exists()
