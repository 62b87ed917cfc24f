"""Which rows a run can tell apart: each row's paired difference to a reference row, and between rows at equal NFE.

The rows of one run start from the same prior draws and are measured on the same halves (``measure.Evaluator``), so
a difference between two rows has a paired spread (``spread.paired``), far smaller than their own spreads when
the rows share their draws. A row is resolved from the reference when the 95% interval of its difference excludes
0, tied with it otherwise. Plain data in, plain data out: the verdicts go into the rows (``vs``) and the run's
``ranking``, which ``report`` renders.
"""
from __future__ import annotations

import itertools
import statistics

from ..spread import paired, samples_to_resolve

RANKABLE = {"image": ("fd", "fd_inf", "kid", "attr_tv", "ode_err"),  # lower is better; the first the default
            "vector": ("swd", "mmd", "moment_kl", "ode_err")}
LOWER_IS_BETTER = tuple(dict.fromkeys(sum(RANKABLE.values(), ())))  # every rankable metric
RANK_BY = {kind: metrics[0] for kind, metrics in RANKABLE.items()}  # the default metric of each kind of data
SHOWN = 5  # ties whose samples to resolve the paragraph names


def row_name(row: dict) -> str:
    """``sampler@steps`` (``sampler@tol`` for an adaptive solver): how a row is named, e.g. for ``--baseline``."""
    return f"{row['sampler']}@{row['steps']}" if row.get("tol") is None else f"{row['sampler']}@{row['tol']:g}"


def _compared(rows, draws, metric: str, i: int, j: int, n: int) -> dict:
    """Row i against row j on ``metric``: ``spread.paired`` and, for a tie, the samples that would resolve it."""
    out = paired(rows[i][metric], rows[j][metric], draws[i][metric], draws[j][metric])
    return dict(out, samples_to_resolve=None if out["resolved"] else samples_to_resolve(n, out["diff"],
                                                                                       out["diff_std"]))


def rank(rows: list[dict], draws: list[dict], metric: str, n: int, baseline: str | None = None) -> dict | None:
    """Add to each sampler row that has ``metric`` its comparison with the reference row (``vs``: the reference's
    name, ``diff``, ``diff_std``, ``ci95``, ``resolved``, ``samples_to_resolve`` and ``verdict``: 'reference',
    'tied', 'worse' or 'better'), and return the run's ranking: the metric, the best row, the reference
    (``baseline``, a ``row_name``, else the best), the tied and resolved rows, and every pair of rows at equal NFE
    (fixed-step rows). ``draws[i]``: row i's values on the run's halves. None when no row has the metric."""
    candidates = [i for i, r in enumerate(rows) if r["nfe"] is not None and r.get(metric) is not None]
    if not candidates:
        return None
    names = {i: row_name(rows[i]) for i in candidates}
    best = min(candidates, key=lambda i: rows[i][metric])
    ref = best if baseline is None else next((i for i in candidates if names[i] == baseline), None)
    if ref is None:
        raise ValueError(f"baseline {baseline!r} is not a row with {metric}; rows: {', '.join(names.values())}")
    for i in candidates:
        vs = _compared(rows, draws, metric, i, ref, n)
        verdict = "reference" if i == ref else "tied" if not vs["resolved"] else \
            "worse" if vs["diff"] > 0 else "better"
        rows[i]["vs"] = dict(reference=names[ref], metric=metric, **vs, verdict=verdict)
    fixed = [i for i in candidates if rows[i].get("tol") is None]
    pairs = []
    for nfe, group in itertools.groupby(sorted(fixed, key=lambda i: (rows[i]["nfe"], rows[i][metric])),
                                        key=lambda i: rows[i]["nfe"]):
        for i, j in itertools.combinations(list(group), 2):  # i the better of the two
            pairs.append(dict(nfe=nfe, a=names[i], b=names[j], **_compared(rows, draws, metric, i, j, n)))
    own = [rows[i].get(f"{metric}_std") for i in candidates if rows[i].get(f"{metric}_std") is not None]
    return dict(metric=metric, best=names[best], reference=names[ref], n=n,
                tied=[names[i] for i in candidates if rows[i]["vs"]["verdict"] == "tied"],
                resolved=[names[i] for i in candidates if rows[i]["vs"]["verdict"] in ("worse", "better")],
                median_diff_std=statistics.median(rows[i]["vs"]["diff_std"] for i in candidates if i != ref)
                if len(candidates) > 1 else None,
                median_own_std=statistics.median(own) if own else None, pairs=pairs)


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def paragraph(ranking: dict | None, rows: list[dict]) -> str:
    """"What this run can and cannot tell apart", in words, from ``rank``'s numbers."""
    if ranking is None:
        return "No row has the ranking metric: nothing is ranked.\n"
    metric, ref = ranking["metric"], ranking["reference"]
    by_name = {row_name(r): r for r in rows if "vs" in r}
    reference = by_name[ref]
    own = f"{_fmt(reference[metric])} ± {_fmt(reference[metric + '_std'])}" if reference.get(metric + "_std") \
        is not None else _fmt(reference[metric])
    which = "the best row" if ref == ranking["best"] else "the baseline"
    lines = [f"**What this run can and cannot tell apart.** Rows are ranked by {metric} (lower is better) against "
             f"{which}, {ref} ({own}), each difference with its paired spread: the rows start from the same "
             f"{ranking['n']} prior draws and are measured on the same halves."]
    if ranking["median_diff_std"] is not None and ranking["median_own_std"]:
        lines.append(f"The spread of a difference is a median {_fmt(ranking['median_diff_std'])}, against "
                     f"{_fmt(ranking['median_own_std'])} for a row's own value.")
    resolved, tied = ranking["resolved"], ranking["tied"]
    lines.append(f"Resolved from {ref} at 95%: {len(resolved)} of {len(by_name) - 1} rows.")
    if tied:
        closest = sorted(tied, key=lambda name: by_name[name]["vs"]["samples_to_resolve"] or float("inf"))
        need = [f"{name} (d = {_fmt(by_name[name]['vs']['diff'])} ± {_fmt(by_name[name]['vs']['diff_std'])}, "
                f"~{by_name[name]['vs']['samples_to_resolve']:,} samples)" for name in closest[:SHOWN]
                if by_name[name]["vs"]["samples_to_resolve"] is not None]
        lines.append(f"Tied with it (this run cannot tell them apart): {', '.join(tied)}. The samples per row at "
                     f"which the closest measured differences would be resolved: {'; '.join(need) or 'none'}.")
    else:
        lines.append("No row is tied with it.")
    if reference.get("ode_err") is None:
        lines.append(f"{ref} is not a map of its prior draws (a stochastic sampler or the VAE): a difference to it "
                     "is hardly sharper than the two rows' own spreads; deterministic rows, which map the same draws, "
                     "pair sharply among themselves (the rows at equal NFE below, or --baseline).")
    for nfe, group in itertools.groupby(ranking["pairs"], key=lambda p: p["nfe"]):
        said = [f"{p['a']} {'<' if p['resolved'] else '~'} {p['b']} ({_fmt(p['diff'])} ± {_fmt(p['diff_std'])})"
                for p in group]
        lines.append(f"At {_fmt(nfe)} NFE: {'; '.join(said)} ('<': resolved, '~': tied).")
    lines.append("Each interval holds at 95% on its own: among twenty tied pairs about one is called resolved by "
                 "chance, and the best row is picked on this run's own noise, which favours it.")
    return " ".join(lines) + "\n"


__all__ = ["RANKABLE", "LOWER_IS_BETTER", "RANK_BY", "row_name", "rank", "paragraph"]
