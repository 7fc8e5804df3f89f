"""Importing TRL stepwise, PRM800K and ProcessBench labels: exact counts per step, and a label run
that `pav train-verifier` trains on."""

import json
import os
import subprocess
import sys

import pytest

from pav.rollouts.imports import IMPORTED, LabelImportError, import_records
from pav.rollouts.views import read_labels

PLAIN = "Question: {question}\nAnswer:\n".replace
TRL = [{"prompt": "Q: 1+2?\n", "completions": ["1+2=3", "The answer is 3."], "labels": [True, True]},
       {"prompt": "Q: 2*2?", "completions": ["2*2=5", "The answer is 5."], "labels": [0.25, False]}]
PRM = {"question": {"problem": "What is 2+2?", "ground_truth_answer": "4"},
       "label": {"steps": [
           {"completions": [{"text": "2+2 = 4", "rating": 1}, {"text": "2+2 = 5", "rating": -1}], "chosen_completion": 0},
           {"completions": [{"text": "so it is 4", "rating": 0}], "chosen_completion": 0},
           {"completions": [{"text": "The answer is 5", "rating": -1}], "chosen_completion": None},
           {"completions": [{"text": "never reached", "rating": 1}], "chosen_completion": 0}],
           "finish_reason": "found_error"}}
PB = {"id": "x", "problem": "3*3?", "steps": ["3*3=6", "The answer is 6."], "label": 0, "final_answer_correct": False}


def rows(records, fmt):
    return list(import_records(records, fmt, "src.jsonl", lambda q: PLAIN("{question}", q), soft_rollouts=8))


def test_trl_stepwise_hard_and_soft_labels_become_counts():
    (p0, s0, l0), (p1, s1, l1) = rows(TRL, "trl-stepwise")
    assert p0.meta["prompt"] == "Q: 1+2?\n" and p1.meta["prompt"] == "Q: 2*2?\n"  # a newline is added
    assert s0.steps == ("1+2=3", "The answer is 3.") and s0.outcome == 1.0 and s1.outcome == 0.0
    assert [(x.prefix_len, x.n_correct, x.n_rollouts) for x in l0] == [(1, 1, 1), (2, 1, 1)]
    assert [(x.prefix_len, x.n_correct, x.n_rollouts) for x in l1] == [(1, 2, 8), (2, 0, 1)]  # 0.25 of 8
    assert {x.policy_id for x in l0 + l1} == {IMPORTED}


def test_prm800k_follows_the_chosen_path_and_stops_at_the_first_bad_step():
    [(p, s, labels)] = rows([PRM], "prm800k")
    assert p.meta["prompt"] == "Question: What is 2+2?\nAnswer:\n"
    assert s.steps == ("2+2 = 4", "so it is 4", "The answer is 5")
    assert [x.n_correct for x in labels] == [1, 1, 0]


def test_processbench_labels_steps_before_the_earliest_error():
    [(_, s, labels)] = rows([PB], "processbench")
    assert [x.n_correct for x in labels] == [0, 0] and s.outcome == 0.0
    [(_, _, ok)] = rows([{**PB, "label": -1, "final_answer_correct": True}], "processbench")
    assert [x.n_correct for x in ok] == [1, 1]


@pytest.mark.parametrize("record, fmt", [
    ({"prompt": "p", "completions": ["a"], "labels": [True, False]}, "trl-stepwise"),
    ({"prompt": "p", "completions": ["a"], "labels": [1.5]}, "trl-stepwise"),
    ({"prompt": "p", "completions": ["a"], "labels": [float("nan")]}, "trl-stepwise"),
    ({"problem": "p", "steps": ["a"], "label": 3}, "processbench"),
    ({"question": {}}, "prm800k"),
])
def test_records_that_do_not_fit_are_named(record, fmt):
    with pytest.raises(LabelImportError, match="record 1"):
        rows([TRL[0] if fmt == "trl-stepwise" else PB if fmt == "processbench" else PRM, record], fmt)


def test_import_cli_writes_a_label_run_that_train_verifier_reads(tmp_path, tiny_qwen):
    (tmp_path / "pb.jsonl").write_text("\n".join(json.dumps({**PB, "label": i % 3 - 1}) for i in range(12)))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "pav.cli", *a, "--quiet"], cwd=tmp_path, env=env,  # noqa: E731
                                    capture_output=True, text=True, timeout=600)
    res = run("import-labels", "--out", "imp", "--set", "source=pb.jsonl", "--set", "format=processbench")
    assert res.returncode == 0, res.stderr
    summary = json.loads((tmp_path / "imp" / "summary.json").read_text())
    assert (summary["solutions"], summary["step_labels"]) == (12, 24)
    assert len(read_labels(tmp_path / "imp")) == 24
    res = run("train-verifier", "--out", "pqv", "--set", "labels=imp", "--set", f"backbone={tiny_qwen}",
              "--set", "train.steps=3")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "pqv" / "verifier" / "config.json").is_file()
