"""`pav eval-policy`: the metrics on hand-made samples, and the real CLI on the built-in task."""

import json

import pytest
from typer.testing import CliRunner

from pav.cli import app

from pav.eval.policy import policy_metrics


def row(pid, answer, outcome, steps=("a",), tokens=10, finished=True, blank=False, long=False):
    return {"problem_id": pid, "steps": list(steps), "answer": answer, "outcome": outcome, "tokens": tokens,
            "finished": finished, "blank_step": blank, "long_step": long}


def test_pass_at_k_and_maj_at_k_by_hand():
    rows = [row("p", "1", 1.0), row("p", "2", 0.0), row("p", "2", 0.0), row("p", None, 0.0),  # c = 1 of 4
            row("q", "5", 1.0), row("q", "5", 1.0), row("q", "6", 0.0), row("q", "6", 0.0, finished=False)]  # c = 2
    m = policy_metrics(rows, 4)
    assert m["pass@1"] == pytest.approx((1 / 4 + 2 / 4) / 2)
    assert m["pass@1_se"] == pytest.approx(0.125)  # sd of (0.25, 0.5) / sqrt(2)
    assert m["pass@2"] == pytest.approx((1 - 3 / 4 * 2 / 3 + 1 - 2 / 4 * 1 / 3) / 2)  # 1 - C(n-c, 2) / C(n, 2)
    assert m["pass@4"] == 1.0
    # maj@2: p's groups (1 vs 2: tie, the first stated wins -> correct), (2, None -> 2: wrong); q's (5, 5), (6, 6)
    assert m["maj@2"] == pytest.approx((0.5 + 0.5) / 2)
    # maj@4: p: 2 wins (2 votes): wrong; q: 5 and 6 tie, 5 stated first: correct
    assert m["maj@4"] == pytest.approx(0.5)
    assert m["maj@1"] == m["pass@1"]
    assert m["no_answer"] == 1 / 8 and m["cut_by_budget"] == 1 / 8 and m["mean_tokens"] == 10


def test_every_problem_needs_n_samples():
    with pytest.raises(ValueError, match="exactly 2 samples"):
        policy_metrics([row("p", "1", 1.0)], 2)


def test_eval_policy_cli_on_the_built_in_task(sft_quick, tmp_path, monkeypatch):
    run, _ = sft_quick
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, ["eval-policy", "--quiet", "--out", "ev", "--set", f"policy={run}", "--set",
                                   "problems=6", "--set", "samples=4"])
    assert res.exit_code == 0, res.output[-3000:]
    assert "| k | pass@k | maj@k |" in res.stdout
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    samples = [json.loads(line) for line in (tmp_path / "ev" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 24 and {s["kind"] for s in samples} == {"eval_sample"}
    assert {"steps", "answer", "outcome", "tokens"} <= set(samples[0])
    assert summary["pass@1"] == pytest.approx(sum(s["outcome"] for s in samples) / 24)
    assert [summary[f"pass@{k}"] for k in (1, 2, 3, 4)] == sorted(summary[f"pass@{k}"] for k in (1, 2, 3, 4))
    assert summary["no_answer"] == pytest.approx(sum(s["answer"] is None for s in samples) / 24)
