"""Coverage after RL: per-problem rows of the final evaluation and the comparison built from them."""

from types import SimpleNamespace

import pytest

from pav.core.records import Problem
from pav.rl.compare import coverage
from pav.rl.report import coverage_lines
from pav.rollouts.evaluate import problem_coverage


def _sol(pid, steps, outcome):
    return SimpleNamespace(problem_id=pid, steps=steps, outcome=outcome)


def test_problem_coverage_counts_correct_samples_and_the_most_frequent_solution():
    problems = [Problem("a", "1 to 2", "2"), Problem("b", "3 to 4", "4"), Problem("c", "5 to 6", "6")]
    sols = [_sol("a", ["1+1=2", "ans 2"], 1.0), _sol("b", ["3+3=6", "ans 6"], 0.0), _sol("a", ["ans 1"], 0.0),
            _sol("a", ["1+1=2", "ans 2"], 1.0), _sol("b", ["3+1=4", "ans 4"], 1.0)]
    rows = problem_coverage(problems, sols)
    assert [r["problem_id"] for r in rows] == ["a", "b", "c"]
    assert rows[0] == {"problem_id": "a", "question": "1 to 2", "samples": 3, "correct": 2,
                       "top": "1+1=2 | ans 2", "top_share": pytest.approx(2 / 3)}
    assert rows[1]["correct"] == 1 and rows[1]["top"] == "3+3=6 | ans 6" and rows[1]["top_share"] == 0.5  # tie: first
    assert rows[2] == {"problem_id": "c", "question": "5 to 6", "samples": 0, "correct": 0, "top": "",
                       "top_share": 0.0}


def _arm(rows):
    return {"final": {"problems": [{"problem_id": pid, "question": f"q{pid}", "samples": 4, "correct": c,
                                    "top": f"top{pid}", "top_share": share} for pid, c, share in rows]}}


def test_coverage_counts_lost_and_gained_problems_per_seed():
    ref = [_arm([("1", 3, 0.5), ("2", 0, 0.5), ("3", 1, 0.25)]), _arm([("4", 2, 0.5), ("5", 0, 1.0)])]
    new = [_arm([("1", 0, 1.0), ("2", 2, 0.5), ("3", 0, 0.75)]), _arm([("4", 4, 1.0), ("5", 0, 1.0)])]
    cov = coverage(ref, new, [0, 7], examples=1)
    assert (cov["problems"], cov["n"], cov["lost"], cov["gained"]) == (5, 4, 2, 1)
    # the one example kept is the lost problem the reference solved most often
    assert cov["examples"] == [{"seed": 0, "question": "q1", "reference_correct": 3, "samples": 4,
                                "reference_top": "top1", "top": "top1", "top_share": 1.0}]
    assert coverage([{"final": {}}], new[:1], [0]) is None  # an arm from before per-problem rows
    with pytest.raises(ValueError, match="different problems"):
        coverage(ref[:1], [_arm([("9", 0, 1.0), ("2", 2, 0.5), ("3", 0, 0.75)])], [0])


def test_the_report_names_the_lost_problems_and_the_collapse():
    cov = coverage([_arm([("1", 3, 0.5)])], [_arm([("1", 0, 0.75)])], [0])
    summary = {"reference": "orm", "rewards": {"orm": {"top_share": 0.5}, "pav": {"top_share": 0.75}},
               "comparisons": [{"reward": "pav", "coverage": cov}]}
    text = "\n".join(coverage_lines(summary))
    assert "Of 1 (problem, seed) pairs, 1 are solved by some sample of the reference" in text
    assert "75% of its samples here, 50% for the reference" in text
    assert "| `q1` (0) | 3/4 | `top1` | `top1` (75%) |" in text
    assert coverage_lines({**summary, "comparisons": [{"reward": "pav", "coverage": None}]}) == []


def _run(pass1, pass4, rows):
    arm = _arm(rows)
    arm["final"].update({"pass@1": pass1, "pass@4": pass4})
    return {**arm, "curve": [{"samples": 0, "accuracy": 0.2}, {"samples": 32, "accuracy": pass1}],
            "start_heldout_accuracy": 0.2, "last": {"rl/kl": 0.01, "rl/entropy": 0.1, "rl/steps_per_solution": 5.0}}


def test_the_start_policy_is_compared_with_every_rewards_final_policies():
    from pav.rl.compare import RLCompareConfig, summarize
    from pav.rl.report import start_lines

    cfg = RLCompareConfig(seeds=(0, 1))
    results = {"orm_s0": _run(0.4, 0.6, [("1", 2, 0.5), ("2", 0, 1.0)]), "orm_s1": _run(0.2, 0.4, [("3", 1, 0.5)]),
               "pav_s0": _run(0.5, 0.5, [("1", 0, 1.0), ("2", 1, 0.75)]), "pav_s1": _run(0.3, 0.3, [("3", 0, 1.0)])}
    assert summarize(cfg, results)["start"] is None  # no start jobs (start_pass_at off, or an older run)
    results |= {"start_s0": {"seed": 0, "final": _run(0.3, 0.7, [("1", 1, 0.25), ("2", 0, 0.5)])["final"]},
                "start_s1": {"seed": 1, "final": _run(0.1, 0.5, [("3", 2, 0.25)])["final"]}}
    s = summarize(cfg, results)
    assert s["start"] == {"pass_at": {"pass@1": pytest.approx(0.2), "pass@4": pytest.approx(0.6)},
                          "top_share": pytest.approx(1 / 3)}  # (0.25 + 0.5 + 0.25) / 3 rows
    assert s["rewards"]["orm"]["pass_at_vs_start"] == {"pass@1": pytest.approx(0.1), "pass@4": pytest.approx(-0.1)}
    assert s["rewards"]["pav"]["pass_at_vs_start"] == {"pass@1": pytest.approx(0.2), "pass@4": pytest.approx(-0.2)}
    orm, pav = (s["rewards"][r]["coverage_vs_start"] for r in ("orm", "pav"))
    assert (orm["lost"], orm["gained"], pav["lost"], pav["gained"]) == (0, 0, 2, 1)
    text = "\n".join(start_lines(s))
    assert "Its most frequent solution is 33% of a problem's samples." in text
    assert "PAV-RL (outcome + α·A^μ): Pass@N +20.0, -20.0 points (N = 1, 4); at N = 4, of 3 (problem, seed) pairs, " \
           "lost 2 that the start solves, gained 1 that it does not." in text


@pytest.mark.parametrize("rl, rft", [({}, False), ({"rft_labels": "labels"}, True),
                                     ({"rft_labels": "labels", "rft_steps": 0}, False)])
def test_the_report_names_the_start_policy_rft_only_when_rl_started_from_rft(tmp_path, rl, rft):
    from pav.rl.compare import RLCompareConfig, summarize
    from pav.rl.report import write_report
    from pav.rl.stage import RLConfig, runs_rft

    cfg = RLCompareConfig(rl=RLConfig(**rl), seeds=(0,))
    assert runs_rft(cfg.rl) is rft
    results = {"orm_s0": _run(0.4, 0.6, [("1", 2, 0.5)]), "pav_s0": _run(0.5, 0.5, [("1", 0, 1.0)]),
               "start_s0": {"seed": 0, "final": _run(0.3, 0.7, [("1", 1, 0.25)])["final"]}}
    summary = summarize(cfg, results)
    assert summary["rft"] is rft
    write_report(summary, tmp_path)
    [row] = [line for line in (tmp_path / "report.md").read_text().splitlines() if "before RL" in line]
    assert row == ("| start policy (RFT), before RL | 0.300 | 0.700 |" if rft else
                   "| start policy, before RL | 0.300 | 0.700 |")
