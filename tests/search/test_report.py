"""The search summary: ratios against the ORM curve, the PQV comparison, figures and report from job results."""

import pytest

from pav.search.report import summarize, write_report
from pav.search.stage import SearchConfig


def _point(n, acc, gen):
    return {"n": n, "accuracy": acc, "accuracy_se": 0.01, "generated": gen, "encoded": 10.0, "scored": 100.0,
            "samples": n, "pass_complete": min(1.0, acc + 0.2)}


def test_summary_numbers_by_hand(tmp_path):
    cfg = SearchConfig(ns=(2, 4, 8), alpha=None, alpha_grid=(0.0, 0.5), prover_ks=(1, 4), prover_ns=(2,))
    orm = [_point(2, 0.2, 100), _point(4, 0.3, 200), _point(8, 0.25, 400)]
    results = {"best_of_n": {"curves": {"orm": orm, "pav_as_orm": orm},
                             "pass_at": [{"n": n, "accuracy": a} for n, a in ((2, 0.4), (4, 0.6), (8, 0.8))]},
               **{f"pqv_beam_N{n}": _point(n, a, g) for n, a, g in ((2, 0.2, 150), (4, 0.3, 300), (8, 0.35, 600))},
               **{f"pav_beam_N{n}_a0.5": _point(n, a, g) for n, a, g in ((2, 0.3, 150), (4, 0.35, 300), (8, 0.3, 600))},
               "alpha_0": {"alpha": 0.0, "accuracy": 0.2, "accuracy_se": 0.02, "generated": 1.0},
               "alpha_0.5": {"alpha": 0.5, "accuracy": 0.3, "accuracy_se": 0.02, "generated": 1.0},
               "prover_K1_N2_a0.5": _point(2, 0.1, 150)}
    s = summarize(cfg, 0.5, results)
    h = s["headline"]
    assert h["reference"] == "orm"
    # ORM best-of-8 has 0.25 at compute 400; PAV first reaches 0.25 below its first point: at 150
    assert h["compute_efficiency"] == pytest.approx(400 / 150)
    assert h["reference_best"]["n"] == 4
    # PAV reaches ORM's best (0.30) at 150 too -> 200 / 150
    assert h["compute_efficiency_vs_reference_best"] == pytest.approx(200 / 150)
    # at compute 150 the ORM curve reads 0.2 + 0.1 * log2(1.5) -> gain 0.3 - that
    import math
    assert h["gains_at_equal_compute"][0]["gain"] == pytest.approx(0.3 - (0.2 + 0.1 * math.log2(1.5)))
    assert h["pav_above_pqv_beam"] == pytest.approx(2 / 3)
    assert [c["passed"] for c in s["checks"]] == [False, False, False, False, None]  # no outcomes: no paired row
    assert h["pav_minus_pqv_paired"] is None
    assert s["prover_sweep"]["4"][0]["accuracy"] == 0.3 and s["prover_sweep"]["1"][0]["accuracy"] == 0.1
    assert [p["generated"] for p in s["pass_at"]] == [100, 200, 400]
    write_report(s, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "2.67×" in text and "| PAV beam |" in text
    assert (tmp_path / "search_curves.png").stat().st_size > 10_000 and (tmp_path / "search_sweeps.png").is_file()


def test_the_paired_comparison_of_pav_and_pqv_beam_reads_the_per_problem_outcomes(tmp_path):
    cfg = SearchConfig(ns=(2, 4), alpha=0.5, prover_ks=())
    orm = [_point(2, 0.2, 100), _point(4, 0.3, 200)]
    pqv = [[0, 0, 1, 1], [0, 1, 1, 1]]  # (N, problems)
    pav = [[1, 0, 1, 1], [1, 1, 1, 1]]  # problem 0 gains at both N: per-problem means 1, 0, 0, 0
    results = {"best_of_n": {"curves": {"orm": orm}, "pass_at": [{"n": 2, "accuracy": 0.4}, {"n": 4, "accuracy": 0.6}]},
               **{f"pqv_beam_N{n}": {**_point(n, 0.5, 150 * n), "outcomes": o} for n, o in zip((2, 4), pqv)},
               **{f"pav_beam_N{n}_a0.5": {**_point(n, 0.5, 150 * n), "outcomes": o} for n, o in zip((2, 4), pav)}}
    s = summarize(cfg, 0.5, results)
    paired = s["headline"]["pav_minus_pqv_paired"]
    assert paired == {"mean": 0.25, "se": pytest.approx(0.5 / 2), "problems": 4}  # sd of (1, 0, 0, 0) is 0.5
    assert s["checks"][-1]["passed"] is False and s["checks"][-1]["value"] == pytest.approx(25.0)
    assert all("outcomes" not in p for p in s["curves"]["pav_beam"] + s["curves"]["pqv_beam"])
    write_report(s, tmp_path)
    assert "| +25.0 ± 25.0 points |" in (tmp_path / "report.md").read_text()


def test_the_alpha_sweep_pairs_each_alpha_with_alpha_zero_on_the_validation_problems(tmp_path):
    from pav.search.report import alpha_sweep, paired_points

    runs = {"alpha_0": {"alpha": 0.0, "accuracy": 0.5, "accuracy_se": 0.29, "generated": 1.0, "outcomes": [1, 0, 1, 0]},
            "alpha_0.5": {"alpha": 0.5, "accuracy": 0.75, "accuracy_se": 0.25, "generated": 1.0,
                          "outcomes": [1, 1, 1, 0]},
            "alpha_1": {"alpha": 1.0, "accuracy": 0.5, "accuracy_se": 0.29, "generated": 1.0}}  # cached before outcomes
    sweep = alpha_sweep((0.0, 0.5, 1.0), runs)
    assert [p["alpha"] for p in sweep] == [0.0, 0.5, 1.0]
    assert sweep[0]["vs_zero"] == {"mean": 0.0, "se": 0.0, "problems": 4}
    assert sweep[1]["vs_zero"] == {"mean": 0.25, "se": pytest.approx(0.25), "problems": 4}  # sd of (0, 1, 0, 0): 0.5
    assert sweep[2]["vs_zero"] is None and "outcomes" not in sweep[1]
    assert alpha_sweep((0.5,), runs)[0]["vs_zero"] is None  # no α = 0 to pair with
    assert paired_points(sweep[1]["vs_zero"]) == "+25.0 ± 25.0" and paired_points(None) == "—"
    cfg = SearchConfig(ns=(2,), alpha=None, alpha_grid=(0.0, 0.5, 1.0), prover_ks=())
    results = {"best_of_n": {"curves": {"orm": [_point(2, 0.2, 100)]}, "pass_at": [{"n": 2, "accuracy": 0.4}]},
               "pqv_beam_N2": _point(2, 0.5, 150), "pav_beam_N2_a0.5": _point(2, 0.5, 150), **runs}
    write_report(summarize(cfg, 0.5, results), tmp_path)
    assert "| − α = 0, paired by problem (points ± SE) | +0.0 ± 0.0 | +25.0 ± 25.0 | — |" in \
        (tmp_path / "report.md").read_text()
