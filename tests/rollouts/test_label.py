"""The labelling job on the built-in task, with the demonstrator as policy (no LM needed)."""

import numpy as np
import pytest

from pav.core.io import read_jsonl, read_parquet
from pav.core.records import Solution, StepLabel
from pav.rollouts.estimates import best_of_k
from pav.rollouts.label import LabelSettings, Sampling, best_of_k_counts, label_problems, rollout_counts, shard_paths
from pav.rollouts.views import label_arrays, read_labels

SAMPLING = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=200)  # the label stage's defaults


def test_values_drop_to_zero_after_an_injected_wrong_step(task, expert):
    problems = task.problems(30, seed=1)
    good, bad = [], []
    for p in problems:
        start = p.meta["start"]
        op = p.meta["ops"][0]
        from pav.tasks.modreach import apply_op

        right = apply_op(op, start, 10)
        good.append((p, [f"{start}{op}={right}"]))
        bad.append((p, [f"{start}{op}={(right + 1) % 10}"]))  # arithmetic slip: a pit
    k_good, *_ = rollout_counts(expert, task, good, 32, SAMPLING, seed=0)
    k_bad, *_ = rollout_counts(expert, task, bad, 32, SAMPLING, seed=0)
    assert sum(k_bad) == 0  # no continuation of an invalid step is correct, whatever the policy
    assert np.mean(k_good) / 32 > 0.2


def test_progress_steps_gain_and_no_progress_steps_do_not(task, expert, tmp_path):
    problems = task.problems(60, seed=2)
    label_problems(expert, expert, task, problems, tmp_path, LabelSettings(**vars(SAMPLING), n_cov=4, n_mc=48, strategy="all"), seed=3,
                   shard_size=60, show_progress=False)
    labels = read_labels(tmp_path)
    adv = dict(zip([(lab.solution_id, lab.prefix_len) for lab in labels], label_arrays(labels)["adv"]))
    by_id = {p.problem_id: p for p in problems}
    by_kind = {"progress": [], "no_progress": []}
    for s in read_jsonl(shard_paths(tmp_path, 0)[0], Solution):
        for h, step in enumerate(task.analyse(by_id[s.problem_id], s.steps).steps, start=1):
            if step.label in by_kind:  # advantage of step h = Q̂(prefix h) − Q̂(prefix h − 1)
                by_kind[step.label].append(adv[(s.solution_id, h)])
    prog, noprog = np.array(by_kind["progress"]), np.array(by_kind["no_progress"])
    se = lambda x: x.std(ddof=1) / np.sqrt(len(x))  # noqa: E731
    assert len(prog) > 100 and len(noprog) > 15
    assert prog.mean() - 4 * se(prog) > 0.03
    assert noprog.mean() < prog.mean() - 0.05
    assert -0.15 < noprog.mean() < 4 * se(noprog)  # near 0, slightly negative under the budget


def test_explicit_best_of_k_agrees_with_the_closed_form(task, expert):
    problems = task.problems(12, seed=4)
    items = [(p, []) for p in problems]
    k_base, *_ = rollout_counts(expert, task, items, 400, SAMPLING, seed=5)
    q = np.array(k_base) / 400
    wins = best_of_k_counts(expert, task, items, k=4, n=200, settings=SAMPLING, seed=6)
    bok = np.array(wins) / 200
    predicted = best_of_k(q, 4)
    se = np.sqrt(predicted * (1 - predicted) / 200 + (4 * (1 - q) ** 3) ** 2 * q * (1 - q) / 400) + 1e-3
    assert np.all(np.abs(bok - predicted) <= 4 * se)


@pytest.mark.parametrize("strategy", ["all", "first_pit"])
def test_records_keep_counts_and_cover_every_labelled_prefix(task, expert, tmp_path, strategy):
    problems = task.problems(8, seed=7)
    settings = LabelSettings(**vars(SAMPLING), n_cov=3, n_mc=8, strategy=strategy)
    totals = label_problems(expert, expert, task, problems, tmp_path, settings, seed=0, shard_size=3,
                            show_progress=False)
    labels = read_labels(tmp_path)
    assert totals["shards"] == 3 and totals["prefixes"] == len(labels)
    solutions = [s for i in range(3) for s in read_jsonl(shard_paths(tmp_path, i)[0], Solution)]
    assert len(solutions) == 24
    for s in solutions:
        mine = sorted(lab.prefix_len for lab in labels if lab.solution_id == s.solution_id)
        assert mine == list(range(mine[-1] + 1)) if strategy == "first_pit" and s.outcome != 1.0 else mine == list(
            range(len(s.steps) + 1))
        final = [lab for lab in labels if lab.solution_id == s.solution_id and lab.prefix_len == len(s.steps)]
        if final:
            assert final[0].n_rollouts == 1 and final[0].n_correct == int(s.outcome)
    for lab in labels:
        assert lab.policy_id == lab.prover_id == expert.policy_id and 0 <= lab.n_correct <= lab.n_rollouts


def test_first_pit_stops_at_the_first_zero_value_prefix(task, expert, tmp_path):
    problems = task.problems(20, seed=8)
    label_problems(expert, expert, task, problems, tmp_path, LabelSettings(**vars(SAMPLING), n_cov=4, n_mc=16, strategy="first_pit"),
                   seed=1, shard_size=20, show_progress=False)
    labels = read_labels(tmp_path)
    sols = {s.solution_id: s for s in read_jsonl(shard_paths(tmp_path, 0)[0], Solution)}
    for sid, s in sols.items():
        mine = {lab.prefix_len: lab for lab in labels if lab.solution_id == sid}
        if s.outcome == 1.0:
            continue
        last = max(mine)
        assert mine[last].n_correct == 0 or last == len(s.steps)


def test_interrupted_labelling_resumes_to_identical_bytes(task, expert, tmp_path, monkeypatch):
    problems = task.problems(9, seed=9)
    settings = LabelSettings(**vars(SAMPLING), n_cov=2, n_mc=6, strategy="all")
    label_problems(expert, expert, task, problems, tmp_path / "whole", settings, seed=2, shard_size=2,
                   show_progress=False)
    import pav.rollouts.label as label_mod

    real, calls = label_mod.write_shard, []

    def dying_write(out, shard, solutions, labels):
        calls.append(shard)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        real(out, shard, solutions, labels)

    monkeypatch.setattr(label_mod, "write_shard", dying_write)
    with pytest.raises(KeyboardInterrupt):
        label_problems(expert, expert, task, problems, tmp_path / "resumed", settings, seed=2, shard_size=2,
                       show_progress=False)
    monkeypatch.setattr(label_mod, "write_shard", real)
    again = label_problems(expert, expert, task, problems, tmp_path / "resumed", settings, seed=2, shard_size=2,
                           show_progress=False)
    assert again["shards_written"] == 3
    for sub in ("labels", "solutions"):
        whole = sorted((tmp_path / "whole" / sub).iterdir())
        resumed = sorted((tmp_path / "resumed" / sub).iterdir())
        assert [p.name for p in whole] == [p.name for p in resumed]
        assert all(a.read_bytes() == b.read_bytes() for a, b in zip(whole, resumed))
    assert read_parquet(shard_paths(tmp_path / "resumed", 0)[1], StepLabel)
