"""The demo report's pure parts: the headline rows and the self-contained HTML."""

import base64

from pav.demo.report import headline, html_report


def _search(eff, eff_best, gains, above):
    return {"ns": [2, 4, 8], "headline": {
        "compute_efficiency": eff, "compute_efficiency_vs_reference_best": eff_best,
        "reference_best": {"n": 4, "accuracy": 0.5, "generated": 80.0},
        "gains_at_equal_compute": [{"n": n, "gain": g} for n, g in zip([2, 4, 8], gains)],
        "mean_gain": (sum(g for g in gains if g is not None) / len([g for g in gains if g is not None])
                      if any(g is not None for g in gains) else None),
        "pav_above_pqv_beam": above}}


def _rl(eff, gain, sd, pass_gain):
    return {"reference": "orm", "seeds": [0, 1, 2], "rft": True, "comparisons": [
        {"reward": "pav", "sample_efficiency": eff, "gain": gain, "gain_sd": sd,
         "pass_at_gain": {"pass@1": pass_gain[0], "pass@64": pass_gain[1]}}]}


def test_headline_rows_put_each_measurement_beside_the_paper():
    rows = headline(_search(2.5, None, [0.1, None, -0.02], 2 / 3), _rl(1.984, 0.0099, 0.029, [0.01, -0.02]))
    by = {r["name"]: r for r in rows}
    assert by["search: compute PAV beam needs to match ORM best-of-8 (ratio)"]["here"] == "2.50×"
    assert by["search: the same against ORM at its most accurate N = 4"]["here"] == "not reached"
    gain = by["search: accuracy gain of PAV beam over ORM best-of-N at equal compute (mean over N; range)"]
    assert gain["here"] == "+4.0 points (-2.0 … +10.0)" and gain["value"] == 0.04
    assert by["search: share of N where PAV beam beats PQV beam (α = 0)"]["here"] == "67%"
    assert by["RL: sample efficiency of pav-RL over orm-RL (3 seeds, mean curves)"]["here"] == "1.98×"
    assert by["RL: final accuracy gain of pav-RL (mean ± sd over 3 seeds)"]["here"] == "+1.0 ± 2.9 points"
    assert by["RL: Pass@N gain after RL, N = 1 … 64"]["here"] == "+1.0, -2.0 points"
    assert all(r["paper"] for r in rows)


def test_the_coverage_row_counts_lost_and_gained_problems_and_the_collapse():
    rl = _rl(2.0, 0.05, 0.01, [0.05, -0.07])
    rl["comparisons"][0]["coverage"] = {"problems": 300, "n": 64, "lost": 19, "gained": 2, "examples": []}
    rl["rewards"] = {"orm": {"top_share": 0.13}, "pav": {"top_share": 0.434}}
    by = {r["name"]: r for r in headline(_search(2.5, None, [0.1, None, -0.02], 2 / 3), rl)}
    row = by["RL: (problem, seed) pairs orm-RL solves at N = 64 and pav-RL does not (lost), and the reverse"]
    assert row["here"] == "19 lost, 2 gained of 300; most frequent solution 43% of samples vs 13%" and row["value"] == 17
    rl["rewards"] = {"orm": {}, "pav": {}}  # arms from before the top-solution share
    by = {r["name"]: r for r in headline(_search(2.5, None, [0.1, None, -0.02], 2 / 3), rl)}
    assert by[row["name"]]["here"] == "19 lost, 2 gained of 300"


def test_the_start_row_puts_the_start_policys_pass_at_n_before_both_arms():
    rl = _rl(2.0, 0.05, 0.01, [0.05, -0.07])
    assert not any(r["name"].startswith("RL: Pass@64 of the start") for r in headline(_search(2.5, None, [0.1], 1), rl))
    rl["start"] = {"pass_at": {"pass@1": 0.3, "pass@64": 0.95}, "top_share": 0.3}
    rl["rewards"] = {"orm": {"pass_at": {"pass@1": 0.39, "pass@64": 0.967}},
                     "pav": {"pass_at": {"pass@1": 0.44, "pass@64": 0.893}}}
    by = {r["name"]: r for r in headline(_search(2.5, None, [0.1, None, -0.02], 2 / 3), rl)}
    row = by["RL: Pass@64 of the start policy (RFT), then after orm-RL and pav-RL"]
    assert row["here"] == "0.950 → 0.967, 0.893" and abs(row["value"] - (0.893 - 0.95)) < 1e-12
    rl["rft"] = False  # rl.rl.rft_steps = 0: RL starts from the sft stage's policy, and the row says so
    by = {r["name"]: r for r in headline(_search(2.5, None, [0.1, None, -0.02], 2 / 3), rl)}
    assert by["RL: Pass@64 of the start policy (SFT), then after orm-RL and pav-RL"]["here"] == row["here"]
    assert not any("(RFT)" in name for name in by)


def test_headline_without_any_gain_says_so():
    rows = headline(_search(None, None, [None, None, None], 0.0), _rl(None, 0.0, 0.0, [0.0, 0.0]))
    assert rows[2]["here"] == "—" and rows[0]["here"] == "not reached" and rows[4]["here"] == "not reached"


def test_html_embeds_every_existing_figure_and_keeps_tables(tmp_path):
    png = b"\x89PNG\r\n\x1a\nfake"
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes(png)
    md = "# t\n\n![a](sub/a.png)\n\n![gone](missing.png)\n\n| x | y |\n|---|---|\n| 1 | 2 |\n"
    html = html_report(md, tmp_path)
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in html
    assert 'src="missing.png"' in html  # a missing figure stays a (broken) link rather than failing the report
    assert "<table>" in html and "<td>2</td>" in html and html.startswith("<!DOCTYPE html>")
