"""PAV beam against PQV beam, paired by problem, pooled over several `pav search` runs.

Each run searches its own held-out test problems (e.g. the same settings with `--set seed=0` and
`--set seed=1`); runs with different problems and the same prover and α together make one larger
test set. For every run and for the pool the script prints the mean over N and problems of PAV
beam's outcome minus PQV beam's, its standard error over problems (`pav.search.compare.
paired_difference`) and the difference at each N. Runs must share α, N and the prover.

    .venv/bin/python bench/paired_search.py runs/search_seed0 runs/search_seed1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pav.search.compare import paired_difference


def outcomes(run: Path) -> tuple[tuple, list[int], np.ndarray, np.ndarray]:
    """((α, N values, prover, k), N values, PAV beam outcomes (N, P), PQV beam outcomes (N, P)) of a
    finished search run."""
    summary = json.loads((run / "summary.json").read_text())
    alpha, ns = summary["alpha"], list(summary["ns"])

    def read(name: str) -> list[float]:
        result = json.loads((run / "jobs" / f"{name}.json").read_text())
        if "outcomes" not in result:
            raise SystemExit(f"{run}: {name} has no per-problem outcomes (a run from before they were kept)")
        return result["outcomes"]

    pav = [read(f"pav_beam_N{n}_a{alpha:g}") if alpha else read(f"pqv_beam_N{n}") for n in ns]
    settings = (alpha, tuple(ns), summary["prover"], summary["k"])
    return settings, ns, np.array(pav), np.array([read(f"pqv_beam_N{n}") for n in ns])


def describe(name: str, pav: np.ndarray, pqv: np.ndarray, ns: list[int]) -> str:
    d = paired_difference(pav, pqv)
    se = d["se"] or float("nan")
    per_n = ", ".join(f"N={n}: {100 * x:+.1f}" for n, x in zip(ns, (pav - pqv).mean(axis=1)))
    return (f"{name}: {100 * d['mean']:+.1f} ± {100 * se:.1f} points ({d['mean'] / se:.1f} SE) over "
            f"{d['problems']} problems; {per_n}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="finished `pav search` runs")
    args = ap.parse_args()
    read = [outcomes(r) for r in args.runs]
    if len({settings for settings, _, _, _ in read}) > 1:
        raise SystemExit("the runs differ in α, N, prover or k; pool only runs of the same settings")
    _, ns, _, _ = read[0]
    for run, (_, _, pav, pqv) in zip(args.runs, read):
        print(describe(str(run), pav, pqv, ns))
    if len(read) > 1:
        print(describe("pooled", np.concatenate([r[2] for r in read], axis=1),
                       np.concatenate([r[3] for r in read], axis=1), ns))


if __name__ == "__main__":
    main()
