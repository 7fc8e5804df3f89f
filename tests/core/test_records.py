"""Record validation and round-trips through dict, JSONL and Parquet."""

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pav.core.io import read_jsonl, read_parquet, write_jsonl, write_parquet
from pav.core.records import INT64_MAX, SCHEMA_VERSION, Problem, RecordError, Solution, StepLabel

# ---------------------------------------------------------------------------------------------
# Strategies

text = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)  # unicode, \n, \x00, U+2028 ...
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
problems = st.builds(Problem, text, text, text, st.dictionaries(text, json_value, max_size=4))
solutions = st.builds(
    Solution, text, text, st.lists(text, max_size=5), text,
    st.none() | st.floats(0.0, 1.0) | st.sampled_from([0, 1]),
)
counts = st.integers(0, INT64_MAX)


@st.composite
def step_labels(draw):
    n_rollouts = draw(st.integers(1, INT64_MAX))
    return StepLabel(draw(text), draw(text), draw(counts), draw(st.integers(0, n_rollouts)), n_rollouts,
                     draw(text), draw(text), draw(counts), draw(counts))


any_records = st.one_of(st.lists(problems, max_size=4), st.lists(solutions, max_size=4),
                        st.lists(step_labels(), max_size=4))

# ---------------------------------------------------------------------------------------------
# Round-trips


@given(st.one_of(problems, solutions, step_labels()))
def test_dict_round_trip_through_json(record):
    d = json.loads(json.dumps(record.to_dict(), allow_nan=False))
    assert type(record).from_dict(d) == record


@settings(max_examples=60, deadline=None)
@given(any_records)
def test_jsonl_round_trip(records):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.jsonl"
        write_jsonl(path, records)
        if records:
            assert read_jsonl(path, type(records[0])) == records
        else:
            assert path.read_text() == ""


@settings(max_examples=60, deadline=None)
@given(any_records)
def test_parquet_round_trip(records):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.parquet"
        record_type = type(records[0]) if records else StepLabel
        write_parquet(path, records, record_type=record_type)
        assert read_parquet(path, record_type) == records


def test_to_dict_layout():
    d = Solution("p", "s", ["a", "b"], "pi", 1).to_dict()
    assert d == {"schema_version": SCHEMA_VERSION, "kind": "solution", "problem_id": "p",
                 "solution_id": "s", "steps": ["a", "b"], "policy_id": "pi", "outcome": 1.0}
    assert list(d)[:2] == ["schema_version", "kind"]


def test_normalisation_list_to_tuple_int_to_float_and_meta_copied():
    meta = {"k": [1]}
    problem = Problem("p", "q", "a", meta)
    meta["k"].append(2)
    assert problem.meta == {"k": [1]}
    solution = Solution("p", "s", ["x"], "pi", 1)
    assert solution.steps == ("x",) and isinstance(solution.outcome, float)
    assert hash(problem) == hash(Problem("p", "q", "a", {"other": 1}))  # meta is not hashed


def test_defaults_may_be_omitted_from_dict():
    d = {"schema_version": 1, "kind": "step_label", "problem_id": "p", "solution_id": "s",
         "prefix_len": 0, "n_correct": 0, "n_rollouts": 1, "policy_id": "pi", "prover_id": "mu"}
    assert StepLabel.from_dict(d).tokens_generated == 0
    assert Problem.from_dict({"schema_version": 1, "kind": "problem", "problem_id": "p",
                              "question": "q", "answer": "a"}).meta == {}


# ---------------------------------------------------------------------------------------------
# Validation errors

LABEL = StepLabel("p", "s", 2, 1, 4, "pi", "mu", 10, 5).to_dict()


@pytest.mark.parametrize("change, message", [
    ({"n_correct": 5}, "StepLabel: n_correct (5) must be <= n_rollouts (4)"),
    ({"n_rollouts": 0, "n_correct": 0}, "StepLabel.n_rollouts must be >= 1, got 0"),
    ({"prefix_len": -1}, "StepLabel.prefix_len must be >= 0, got -1"),
    ({"tokens_prompt": -3}, "StepLabel.tokens_prompt must be >= 0, got -3"),
    ({"tokens_generated": 2**63}, f"StepLabel.tokens_generated must be <= {INT64_MAX}"),
    ({"n_correct": True}, "StepLabel.n_correct must be an int, got bool"),
    ({"n_correct": 1.0}, "StepLabel.n_correct must be an int, got float"),
    ({"policy_id": 3}, "StepLabel.policy_id must be a str, got int"),
    ({"policy_id": "\ud800"}, "StepLabel.policy_id is not valid unicode"),
    ({"kind": "solution"}, "StepLabel: field 'kind' must be 'step_label', got 'solution'"),
    ({"schema_version": SCHEMA_VERSION + 1}, f"schema_version {SCHEMA_VERSION + 1} is newer than supported"),
    ({"schema_version": "1"}, "field 'schema_version' must be a positive int, got '1'"),
    ({"schema_version": 0}, "field 'schema_version' must be a positive int, got 0"),
    ({"extra": 1, "zzz": 2}, "StepLabel: unknown field(s) 'extra', 'zzz'"),
])
def test_step_label_errors(change, message):
    with pytest.raises(RecordError) as info:
        StepLabel.from_dict({**LABEL, **change})
    assert message in str(info.value)


@pytest.mark.parametrize("drop, message", [
    ("n_rollouts", "StepLabel: missing field(s) 'n_rollouts'"),
    ("schema_version", "StepLabel: missing field 'schema_version'"),
    ("kind", "StepLabel: field 'kind' must be 'step_label', got None"),
])
def test_missing_fields(drop, message):
    d = dict(LABEL)
    del d[drop]
    with pytest.raises(RecordError, match=message.replace("(", r"\(").replace(")", r"\)")):
        StepLabel.from_dict(d)


@pytest.mark.parametrize("outcome, message", [
    (float("nan"), "Solution.outcome must be finite, got nan"),
    (float("inf"), "Solution.outcome must be finite, got inf"),
    (1.5, "Solution.outcome must be <= 1.0, got 1.5"),
    (-0.1, "Solution.outcome must be >= 0.0, got -0.1"),
    (True, "Solution.outcome must be a float, got bool"),
    ("1", "Solution.outcome must be a float, got str"),
])
def test_solution_outcome_errors(outcome, message):
    with pytest.raises(RecordError) as info:
        Solution("p", "s", [], "pi", outcome)
    assert str(info.value) == message


@pytest.mark.parametrize("steps, message", [
    ("one step", "Solution.steps must be a list of str, got str"),
    (["ok", 3], "Solution.steps item 1 must be a str, got int"),
])
def test_solution_steps_errors(steps, message):
    with pytest.raises(RecordError) as info:
        Solution("p", "s", steps, "pi")
    assert str(info.value) == message


@pytest.mark.parametrize("meta, message", [
    ([], "Problem.meta must be a dict, got list"),
    ({"x": float("nan")}, "Problem.meta meta.x must be finite, got nan"),
    ({"x": {1: "a"}}, "Problem.meta meta.x keys must be str, got int"),
    ({"x": (1, 2)}, "Problem.meta meta.x must be a JSON value"),
    ({"x": [1, {2}]}, "Problem.meta meta.x[1] must be a JSON value"),
])
def test_problem_meta_errors(meta, message):
    with pytest.raises(RecordError) as info:
        Problem("p", "q", "a", meta)
    assert str(info.value).startswith(message)


def test_records_are_frozen_and_errors_are_value_errors():
    problem = Problem("p", "q", "a")
    with pytest.raises(AttributeError):
        problem.question = "other"  # type: ignore[misc]
    assert issubclass(RecordError, ValueError)


def test_from_dict_rejects_non_mapping():
    with pytest.raises(RecordError, match="Problem: expected a dict, got list"):
        Problem.from_dict([])  # type: ignore[arg-type]
