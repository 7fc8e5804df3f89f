"""Label run -> verifier examples: rejection of impossible labels, ORM view, split, balanced sampler."""

import logging
import os

os.environ["HF_HUB_OFFLINE"] = "1"

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pav.core.io import write_jsonl, write_parquet
from pav.core.records import Solution, StepLabel
from pav.tasks.modreach import ModReach
from pav.verifier.data import (
    ExampleSampler,
    VerifierExample,
    balanced_probs,
    bucket_mass,
    load_examples,
    split_heldout,
)


def raw_labels(path, rows, count_type):
    """A label shard written without pav's checks (as a foreign tool or a bug might)."""
    names = ["problem_id", "solution_id", "prefix_len", "n_correct", "n_rollouts", "policy_id", "prover_id",
             "tokens_generated", "tokens_prompt"]
    types = [pa.string(), pa.string(), count_type, count_type, count_type, pa.string(), pa.string(),
             pa.int64(), pa.int64()]
    schema = pa.schema(list(zip(names, types)), metadata={b"pav.schema_version": b"1", b"pav.kind": b"step_label"})
    full = [dict(zip(names, r + ("pi", "pi", 0, 0))) for r in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(full, schema=schema), path)


@pytest.fixture
def label_run(tmp_path):
    """4 problems x 2 solutions, every prefix labelled with known counts, plus 9 bad rows."""
    task = ModReach()
    problems = task.problems(4, 0, "train")
    write_jsonl(tmp_path / "problems.jsonl", problems)
    rng = random.Random(0)
    solutions, labels = [], []
    for p in problems:
        for j in range(2):
            steps = task.demonstrate(p, rng)
            sol = Solution(p.problem_id, f"{p.problem_id}/s{j}", tuple(steps), "pi", task.outcome(p, steps))
            solutions.append(sol)
            labels += [StepLabel(p.problem_id, sol.solution_id, h, (h + j) % 5, 4, "pi", "pi")
                       for h in range(len(steps))]
            labels.append(StepLabel(p.problem_id, sol.solution_id, len(steps), int(sol.outcome), 1, "pi", "pi"))
    write_jsonl(tmp_path / "solutions" / "shard-00000.jsonl", solutions)
    write_parquet(tmp_path / "labels" / "shard-00000.parquet", labels)
    s0, s1 = solutions[0], solutions[1]
    raw_labels(tmp_path / "labels" / "shard-00001.parquet", [
        (s0.problem_id, s0.solution_id, 0.0, float("nan"), 4.0),
        (s0.problem_id, s0.solution_id, 1.0, float("inf"), 4.0),
        (s0.problem_id, s0.solution_id, 1.0, 2.5, 4.0),
        (s0.problem_id, s0.solution_id, 1.0, None, 4.0),
    ], pa.float64())
    raw_labels(tmp_path / "labels" / "shard-00002.parquet", [
        (s0.problem_id, s0.solution_id, 1, 5, 4),  # more successes than rollouts
        (s0.problem_id, s0.solution_id, 1, 0, 0),  # no rollouts
        (s0.problem_id, "nobody/s0", 0, 1, 4),
        (s1.problem_id, s1.solution_id, len(s1.steps) + 1, 1, 4),  # past the end of the solution
        (s1.problem_id, s1.solution_id, 0, 1, 4),  # repeats a label of shard 0
    ], pa.int64())
    for shard in (1, 2):
        (tmp_path / "solutions" / f"shard-0000{shard}.jsonl").write_text("")
    return tmp_path, solutions, labels


def test_impossible_labels_are_rejected_with_a_count(label_run, caplog):
    run, solutions, labels = label_run
    with caplog.at_level(logging.WARNING):
        examples, rejected = load_examples(run)
    assert sum(rejected.values()) == 9
    assert rejected == {"non-finite n_correct": 2, "non-integer n_correct": 1, "missing n_correct": 1,
                        "n_correct > n_rollouts": 1, "n_rollouts < 1": 1, "unknown solution_id": 1,
                        "prefix_len beyond the solution": 1, "repeated (solution_id, prefix_len)": 1}
    assert "rejected 9 label rows" in caplog.text and "2 non-finite n_correct" in caplog.text
    assert len(examples) == len(solutions)
    by_key = {(lab.solution_id, lab.prefix_len): lab for lab in labels}
    problems = {p.problem_id: p for p in ModReach().problems(4, 0, "train")}
    for ex in examples:
        assert np.all(np.isfinite(ex.targets))
        sol = next(s for s in solutions if s.solution_id == ex.solution_id)
        assert ex.steps == sol.steps and ex.prompt == problems[sol.problem_id].question + "\n"
        assert ex.prefix_lens == tuple(range(len(sol.steps) + 1))
        for h, t, n in zip(ex.prefix_lens, ex.targets, ex.n_rollouts):
            lab = by_key[(ex.solution_id, h)]
            assert t == lab.n_correct / lab.n_rollouts and n == lab.n_rollouts


def test_orm_view_has_one_outcome_per_solution_at_the_last_step(label_run):
    run, solutions, _ = label_run
    examples, _ = load_examples(run, view="orm")
    assert [(e.solution_id, e.prefix_lens, e.targets) for e in examples] == \
        [(s.solution_id, (len(s.steps),), (s.outcome,)) for s in solutions]


def test_examples_refuse_non_finite_targets():
    with pytest.raises(ValueError, match="targets"):
        VerifierExample("p", "p/s0", "q\n", ("a",), (0, 1), (0.5, float("nan")), (1.0, 1.0), (4, 4))


def example(pid, prompt, targets):
    n = len(targets)
    return VerifierExample(pid, f"{pid}/s", prompt, ("x",) * (n - 1), tuple(range(n)), tuple(targets),
                           (1.0,) * n, (4,) * n)


def test_heldout_split_keeps_a_question_on_one_side():
    examples = [example(f"p{i}", f"question {i // 2}\n", [0.5]) for i in range(400)]  # each question twice
    train, heldout = split_heldout(examples, 0.25)
    held_q = {e.prompt for e in heldout}
    assert not held_q & {e.prompt for e in train}
    assert 0.15 < len(heldout) / 400 < 0.35
    assert split_heldout(examples, 0.25) == (train, heldout)  # deterministic


def skewed_examples(n=300, seed=0):
    """Mostly low-Q̂ solutions (like a weak policy's), a few climbing to high Q̂."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(2, 9))
        if rng.random() < 0.2:
            targets = np.clip(np.linspace(0.3, 1.0, length) + rng.normal(0, 0.1, length), 0, 1)
        else:
            targets = np.clip(rng.normal(0.1, 0.1, length), 0, 1)
        out.append(example(f"p{i}", "q\n", targets.round(2)))
    return out


def test_balanced_sampler_gives_both_buckets_equal_mass():
    examples = skewed_examples()
    mass = bucket_mass(examples)
    d = mass[:, 0] - mass[:, 1]  # low minus high prefixes of each example
    p = balanced_probs(examples)
    assert abs(p @ d) < 1e-9 * np.abs(d).max()
    draws = ExampleSampler(p, seed=1).draw(20000)
    se = np.sqrt(p @ (d - p @ d) ** 2 / len(draws))
    low, high = mass[draws].sum(axis=0)
    assert abs(low - high) / len(draws) < 4 * se
    assert mass[:, 0].sum() / mass.sum() > 0.7  # the data is skewed ...
    uniform_low, uniform_high = mass[ExampleSampler(np.full(len(p), 1 / len(p)), seed=1).draw(20000)].sum(axis=0)
    assert (uniform_low - uniform_high) / len(draws) > 40 * se  # ... so uniform draws fail the same test


def test_balanced_sampler_edge_cases(caplog):
    all_low = [example(f"p{i}", "q\n", [0.1, 0.2]) for i in range(5)]
    with caplog.at_level(logging.WARNING):
        assert np.allclose(balanced_probs(all_low), 0.2)
    assert "bucket is empty" in caplog.text
    leaning = [example("a", "q\n", [0.1, 0.2, 0.9]), example("b", "q\n", [0.1, 0.9])]
    with pytest.raises(ValueError, match="impossible"):
        balanced_probs(leaning)


def test_sampler_state_resumes_the_same_draws():
    p = balanced_probs(skewed_examples(50))
    a = ExampleSampler(p, seed=3)
    a.draw(7)
    state = a.state_dict()
    expected = a.draw(11)
    b = ExampleSampler(p, seed=99)
    b.load_state_dict(state)
    assert np.array_equal(b.draw(11), expected) and b.drawn == 18


def test_the_verifier_takes_the_label_runs_step_delimiter(tmp_path):
    from pav.core.io import write_jsonl
    from pav.core.records import Problem
    from pav.tasks.build import delimiter_of
    from pav.verifier.data import label_run_delimiter

    paragraphs = [Problem(f"p{i}", "q", "1", {"prompt": "Q\n\n", "step_delimiter": "\n\n"}) for i in range(3)]
    write_jsonl(tmp_path / "problems.jsonl", paragraphs)
    assert label_run_delimiter(tmp_path) == "\n\n"
    assert delimiter_of(Problem("old", "q", "1", {"prompt": "Q\n"})) == "\n"  # runs from before the field
    write_jsonl(tmp_path / "problems.jsonl", [*paragraphs, Problem("p9", "q", "1", {"step_delimiter": "\n"})])
    with pytest.raises(ValueError, match="mixes step delimiters"):
        label_run_delimiter(tmp_path)
