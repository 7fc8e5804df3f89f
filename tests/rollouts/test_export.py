"""TRL stepwise export: exact labels on a hand-made run, truncation at unlabelled steps, the CLI."""

import json
import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pav.core.records import Solution, StepLabel
from pav.rollouts.export import stepwise_rows


def _lab(sid, h, k, n):
    return StepLabel(problem_id="p", solution_id=sid, prefix_len=h, n_correct=k, n_rollouts=n,
                     policy_id="pi", prover_id="pi")


SOL = Solution(problem_id="p", solution_id="s", steps=("1+2=3", "3*2=6", "ans 6"), policy_id="pi", outcome=1.0)
LABELS = [_lab("s", 0, 1, 4), _lab("s", 1, 2, 4), _lab("s", 2, 1, 4), _lab("s", 3, 4, 4)]  # Q̂ .25 .5 .25 1


def test_hard_and_soft_values_of_the_prefix_each_step_ends():
    (row,) = stepwise_rows(LABELS, [SOL], {"p": "Q\n"}, mode="soft")
    assert row["prompt"] == "Q\n" and row["completions"] == list(SOL.steps)
    assert row["labels"] == [0.5, 0.25, 1.0]
    (row,) = stepwise_rows(LABELS, [SOL], {"p": "Q\n"})  # hard, threshold 0.5: strictly above
    assert row["labels"] == [False, False, True]


def test_advantages_and_best_of_k_values():
    (row,) = stepwise_rows(LABELS, [SOL], {"p": "Q\n"}, target="adv", mode="soft")
    assert row["labels"] == [0.25, -0.25, 0.75]  # Eq. 2 on Q̂
    (row,) = stepwise_rows(LABELS, [SOL], {"p": "Q\n"}, target="adv", mode="hard", threshold=0.0)
    assert row["labels"] == [True, False, True]
    (row,) = stepwise_rows(LABELS, [SOL], {"p": "Q\n"}, mode="soft", k=2)
    assert row["labels"] == pytest.approx([0.75, 1 - 0.75 ** 2, 1.0])  # 1 − (1 − Q̂)^2


def test_steps_after_the_first_unlabelled_one_are_left_out():
    first_pit = [lab for lab in LABELS if lab.prefix_len != 2]
    (row,) = stepwise_rows(first_pit, [SOL], {"p": "Q\n"}, mode="soft")
    assert row["completions"] == ["1+2=3"] and row["labels"] == [0.5]
    assert list(stepwise_rows([LABELS[0]], [SOL], {"p": "Q\n"})) == []  # nothing labelled: no row


def test_bad_choices_are_refused():
    with pytest.raises(ValueError, match="target"):
        list(stepwise_rows(LABELS, [SOL], {"p": "Q\n"}, target="v"))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 16), st.integers(0, 16)), min_size=1, max_size=6),
       st.floats(0.0, 1.0))
def test_soft_labels_are_the_counts_and_hard_labels_threshold_them(counts, threshold):
    counts = [(n, min(k, n)) for n, k in counts]
    sol = Solution(problem_id="p", solution_id="s", steps=tuple(f"step{i}" for i in range(len(counts))),
                   policy_id="pi")
    labels = [_lab("s", 0, 1, 2)] + [_lab("s", h, k, n) for h, (n, k) in enumerate(counts, start=1)]
    (soft,) = stepwise_rows(labels, [sol], {"p": "Q\n"}, mode="soft")
    (hard,) = stepwise_rows(labels, [sol], {"p": "Q\n"}, mode="hard", threshold=threshold)
    assert soft["labels"] == pytest.approx([k / n for n, k in counts])
    assert hard["labels"] == [v > threshold for v in soft["labels"]]
    assert all(isinstance(v, bool) for v in hard["labels"])
    assert json.loads(json.dumps(hard)) == hard  # plain JSON types only


def test_export_cli_writes_one_row_per_labelled_solution(task, expert, tmp_path):
    from pav.core.io import write_jsonl
    from pav.rollouts.label import LabelSettings, Sampling, label_problems

    SAMPLING = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=200)
    from pav.core.labelrun import PROBLEMS_FILE
    from pav.core.rundir import mark_complete, prepare_run_dir

    problems = task.problems(5, seed=4)
    run = prepare_run_dir(tmp_path / "labels", "label")
    label_problems(expert, expert, task, problems, run, LabelSettings(**vars(SAMPLING), n_cov=2, n_mc=4, strategy="all"), seed=1, shard_size=5,
                   show_progress=False)
    write_jsonl(run / PROBLEMS_FILE, problems)
    mark_complete(run)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "pav.cli", "export-labels", "--quiet", "--set", f"labels={run}",
                          "--set", "mode=soft", "--out", "out"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in (tmp_path / "out" / "stepwise.jsonl").read_text().splitlines()]
    assert len(rows) == 10  # 5 problems × 2 seed solutions, every prefix labelled
    prompts = {task.prompt(p) for p in problems}
    assert all(r["prompt"] in prompts and len(r["completions"]) == len(r["labels"]) > 0 for r in rows)
    assert all(0.0 <= v <= 1.0 for r in rows for v in r["labels"])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["rows"] == 10 and summary["steps"] == sum(len(r["labels"]) for r in rows)
    bad = subprocess.run([sys.executable, "-m", "pav.cli", "export-labels", "--set", f"labels={tmp_path}",
                          "--out", "x"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "not a pav run directory" in bad.stderr


def test_the_export_loads_with_datasets_in_trls_stepwise_types(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = list(stepwise_rows(LABELS, [SOL], {"p": "Q\n"})) * 3
    (tmp_path / "stepwise.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = datasets.load_dataset("json", data_files=str(tmp_path / "stepwise.jsonl"), split="train")
    assert ds.column_names[:3] == ["prompt", "completions", "labels"] and len(ds) == 3
    assert ds.column_names[3:] == ["problem_id", "solution_id"]  # extra string columns: TRL drops them
    f = ds.features
    assert f["prompt"] == datasets.Value("string")
    assert f["completions"].feature == datasets.Value("string") and f["labels"].feature == datasets.Value("bool")
    assert ds[0] == rows[0]
