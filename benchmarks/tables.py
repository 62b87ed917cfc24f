"""The measured tables of the README and the docs, rendered from the JSON of the runs that measured them.

A page marks each table with ``<!-- table: NAME -->`` and ``<!-- /table -->``; this script rewrites what lies
between from ``TABLES[NAME]`` (the JSON file and its renderer), so that no number is typed by hand.

    python benchmarks/tables.py           # rewrite the tables in place
    python benchmarks/tables.py --check   # exit 1 and name the tables that differ from their JSON
"""
from __future__ import annotations

import argparse
import itertools
import json
import re
import sys
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGES = ("README.md", "docs/metrics.md", "docs/solvers.md")
LABELS = {"ddpm": "DDPM, ancestral", "ddim": "DDIM", "sde": "reverse SDE, Euler-Maruyama (torchsde)",
          "ode-heun": "PF-ODE, Heun (torchdiffeq)", "ode-dopri5": "PF-ODE, dopri5 (tolerances)",
          "dpmpp": "DPM-Solver++(2M)", "dpmpp-tuned": "DPM-Solver++(2M), tuned grid", "unipc": "UniPC (bh2)",
          "heun": "EDM Heun", "deis": "DEIS (tAB3)", "dpmpp-2m": "DPM-Solver++(2M)",
          "unipc-2": "UniPC (bh2)", "ipndm": "iPNDM (4)", "learned": "learned for the model",
          "vae": "VAE, decoder mean", "data floor": "data floor"}
VERDICT = {"reference": "**best**", "tied": "tied", "worse": "worse", "better": "better"}


def _num(x, digits: int = 3) -> str:
    if x is None:
        return ""
    return f"{x:.{digits}g}" if abs(x) < 10 else f"{x:.1f}"


def _cell(row: dict, key: str) -> str:
    if row.get(key) is None:
        return ""
    spread = row.get(f"{key}_std")
    return _num(row[key]) + ("" if spread is None else f" ± {_num(spread, 2)}")


def compare_table(summary: dict, metrics=("fd", "fd_inf", "kid", "precision", "recall", "ode_err")) -> str:
    """A compare.json as one line per sampler, its step counts joined by ' / ', each metric as value ± spread,
    and each row's verdict against the best row (paired, 95%)."""
    ranking = summary.get("ranking") or {}
    rows = summary["rows"]
    keys = [k for k in metrics if any(r.get(k) is not None for r in rows)]
    head = ["sampler", "NFE"] + [k.replace("_", " ") for k in keys] + [f"vs best ({ranking.get('metric', '')})"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, group in itertools.groupby(rows, key=lambda r: r["sampler"]):
        group = list(group)
        nfe = " / ".join("-" if r["nfe"] is None else f"{r['nfe']:g}" for r in group)
        if group[0].get("tol") is not None:
            nfe += " (tol " + " / ".join(f"{r['tol']:g}" for r in group) + ")"
        cells = [" / ".join(_cell(r, k) for r in group) if any(r.get(k) is not None for r in group) else ""
                 for k in keys]
        vs = " / ".join(VERDICT[r["vs"]["verdict"]] if r.get("vs") else "-" for r in group)
        lines.append("| " + " | ".join([LABELS.get(label, label), nfe, *cells, vs if label != "data floor" else ""])
                     + " |")
    facts = (f"n = {summary['n']} per row, seed {summary['seed']}, {summary['device']}, "
             f"{summary.get('halves', '?')} halves; run of {summary.get('wall_s_total', 0) / 60:.0f} minutes")
    return "\n".join(lines) + f"\n\n<sub>{facts}; ranking against {ranking.get('best', '-')}.</sub>\n"


def calibration_table(result: dict) -> str:
    """spread_calibration.json: reported spread / sd over seeds for each metric and row, and the paired
    intervals' coverage."""
    rows = result["calibration"]
    names = list(dict.fromkeys(r["row"] for r in rows))
    metrics = list(dict.fromkeys(r["metric"] for r in rows if r["metric"] != "logp_gap"))
    ratio = {(r["row"], r["metric"]): r["ratio"] for r in rows}
    lines = ["| metric | " + " | ".join(names) + " | paired coverage (3 pairs) |", "|" + "---|" * (len(names) + 2)]
    for m in metrics:
        cover = [c["coverage95"] for c in result["coverage"] if c["metric"] == m]
        lines.append(f"| {m} | " + " | ".join(f"{ratio[n, m]:.2f}" for n in names) + " | "
                     + " / ".join(f"{c:.2f}" for c in cover) + " |")
    digits = result.get("digits")
    if digits:
        lines += ["", f"| digits, n = {digits['n']}, {digits['seeds']} seeds | mean | sd over seeds | reported "
                  "spread | ratio |", "|---|---|---|---|---|"]
        for key, d in digits.items():
            if isinstance(d, dict):
                lines.append(f"| {key} | {_num(d['mean'])} ± {_num(d['mean_se'], 2)} | {_num(d['sd_over_seeds'])} | "
                             f"{_num(d['rms_reported'])} | {d['ratio']:.2f} |")
        lines.append(f"| fd of all {digits['pooled_n']:,} samples | {_num(digits['fd_pooled'])} | | | |")
    return "\n".join(lines) + f"\n\n<sub>{result['seeds']} seeds of n = {result['n']}; {result['date']}.</sub>\n"


def learned_table(result: dict) -> str:
    """learned_solvers.json: per checkpoint and K, the learned solver's held-out ode_err beside the best fixed
    solver's and DDIM's and DPM-Solver++(2M)'s on the uniform grid, what learning cost and the file's size."""
    lines = ["| model | NFE | learned (tuning) | best fixed (solver-grid) | DPM-Solver++(2M) | DDIM | learned / best "
             "| learning | file |", "|" + "---|" * 9]
    for model, by_k in result.items():
        for k, r in sorted(by_k.items(), key=lambda kv: int(kv[0])):
            held = r["held_out"]
            lines.append(f"| {model} | {k} | **{held['learned']:.3f}** ({r['tuning']:.3f}) | {r['best_fixed_err']:.3f} "
                         f"({r['best_fixed']}) | {held['dpmpp-uniform']:.3f} | {held['ddim-uniform']:.3f} | "
                         f"{r['ratio']:.2f} | {r['minutes']:.1f} min | {r['file_bytes'] / 1e3:.1f} kB |")
    return "\n".join(lines) + "\n"


def quality_table(result: dict) -> str:
    """quality_vs_nfe.json (a run of some rows): each row's NFE, ode_err and FD with its spread, and FD as a
    multiple of the converged PF-ODE's (dopri5 at 1e-4)."""
    rows = result["rows"]
    converged = next(r["fd"] for r in rows if r["label"] == "pf-ode dopri5 1e-4")
    lines = ["| sampler | NFE | ode_err | FD | FD / converged PF-ODE's |", "|---|---|---|---|---|"]
    for r in rows:
        err = "" if r.get("ode_err") is None else f"{r['ode_err']:.4f}"
        lines.append(f"| {LABELS.get(r['label'], r['label'])} | {r['nfe']:g} | {err} | {_num(r['fd'])} ± "
                     f"{_num(r['fd_std'], 2)} | {r['fd'] / converged:.2f} |")
    facts = f"n = {result['n']} prior draws, seed {result['seed']}, {result['device']}"
    return "\n".join(lines) + f"\n\n<sub>{facts}.</sub>\n"


TABLES = {
    "compare_digits": ("docs/figures/compare_digits.json",
                       partial(compare_table, metrics=("fd", "fd_inf", "precision", "recall", "ode_err"))),
    "compare_cartoon": ("docs/figures/compare_cartoon.json",
                        partial(compare_table, metrics=("fd", "fd_inf", "precision", "recall", "attr_tv", "ode_err"))),
    "spread_calibration": ("benchmarks/results/spread_calibration.json", calibration_table),
    "learned_solvers": ("benchmarks/results/learned_solvers.json", learned_table),
    "quality_at_5_nfe": ("benchmarks/results/quality_at_5_nfe.json", quality_table),
}
MARK = re.compile(r"(<!-- table: (\w+) -->\n)(.*?)(<!-- /table -->)", re.S)


def render(text: str) -> str:
    """``text`` with every marked table rendered from its JSON."""
    def one(m):
        path, renderer = TABLES[m.group(2)]
        return m.group(1) + renderer(json.loads((ROOT / path).read_text())) + m.group(4)
    return MARK.sub(one, text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="only check that every page's tables match their JSON")
    args = p.parse_args(argv)
    stale = []
    for page in PAGES:
        path = ROOT / page
        text = path.read_text()
        new = render(text)
        if new != text:
            stale.append(page)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"tables out of date with their JSON in: {', '.join(stale)} (python benchmarks/tables.py)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
