"""Math problem sets: layouts, file formats, ids, splits and answer extraction."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pav.tasks.math_data import (
    MathDataConfig,
    MathDataError,
    boxed_answer,
    heldout_by_hash,
    read_records,
    stated_answer,
    to_problems,
)

GSM = {"question": "Tom has 3 bags of 4 pens. How many pens?",
       "answer": "Each bag has 4 pens.\n3 * 4 = <<3*4=12>>12 pens.\n#### 1,200"}
MATH = {"problem": "What is $\\frac{1}{2}+\\frac{1}{4}$?",
        "solution": "We add: $\\frac12+\\frac14 = \\frac34$.\nSo the answer is $\\boxed{\\frac{3}{4}}$."}


def test_gsm8k_layout_strips_calculator_notes_and_states_the_answer():
    [p] = to_problems([GSM], MathDataConfig(preset="gsm8k"), "x.jsonl")
    assert p.answer == "1200"
    assert p.meta["solution"] == ["Each bag has 4 pens.", "3 * 4 = 12 pens.", "The answer is 1200."]


def test_math_layout_takes_the_last_boxed_answer():
    [p] = to_problems([MATH], MathDataConfig(preset="math"), "x.jsonl")
    assert p.answer == "\\frac{3}{4}"
    assert p.meta["solution"][-1] == "The answer is $\\frac{3}{4}$."


def test_fields_layout_and_id_field():
    rec = {"q": "2+2?", "a": "4", "sol": "2+2=4", "uid": "p-7"}
    cfg = MathDataConfig(preset="fields", question_field="q", answer_field="a", solution_field="sol", id_field="uid")
    [p] = to_problems([rec], cfg, "x.jsonl")
    assert (p.problem_id, p.question, p.answer, p.meta["solution"]) == ("p-7", "2+2?", "4", ["2+2=4", "The answer is 4."])


def test_a_record_without_the_layouts_fields_is_named():
    with pytest.raises(MathDataError, match="record 1"):
        to_problems([GSM, {"question": "no answer"}], MathDataConfig(), "x.jsonl")
    with pytest.raises(MathDataError, match="####"):
        to_problems([{"question": "q", "answer": "no separator"}], MathDataConfig(), "x.jsonl")


def test_duplicate_ids_are_refused():
    cfg = MathDataConfig(preset="fields", question_field="q", answer_field="a", id_field="id")
    with pytest.raises(MathDataError, match="duplicate"):
        to_problems([{"q": "a", "a": "1", "id": 1}, {"q": "b", "a": "2", "id": 1}], cfg, "x.jsonl")


def test_jsonl_json_and_parquet_read_the_same_records(tmp_path):
    rows = [GSM, {**GSM, "question": "Another?"}]
    (tmp_path / "a.jsonl").write_text("\ufeff" + "\n".join(json.dumps(r) for r in rows) + "\n\n")
    (tmp_path / "a.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    assert read_records(str(tmp_path / "a.jsonl")) == read_records(str(tmp_path / "a.json")) == rows
    assert read_records(str(tmp_path / "a.parquet")) == rows


def test_unreadable_sources_say_why(tmp_path):
    with pytest.raises(MathDataError, match="no such problem file"):
        read_records(str(tmp_path / "missing.jsonl"))
    with pytest.raises(MathDataError, match="NAME\\[:CONFIG\\]@SPLIT"):
        read_records("not-a-file-or-spec")


def test_heldout_split_is_fixed_and_about_the_fraction():
    problems = to_problems([{**GSM, "question": f"q{i}"} for i in range(2000)], MathDataConfig(), "x.jsonl")
    held = [heldout_by_hash(p, 0.2) for p in problems]
    assert held == [heldout_by_hash(p, 0.2) for p in problems]
    assert abs(sum(held) / len(held) - 0.2) < 4 * (0.2 * 0.8 / 2000) ** 0.5


@pytest.mark.parametrize("step, answer", [
    ("The answer is 72.", "72"), ("So the final answer is: $\\frac{3}{4}$.", "\\frac{3}{4}"),
    ("thus \\boxed{\\{1, 2\\}} and more", "\\{1, 2\\}"), ("\\boxed{a} then \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("We add 3 and 4.", None), ("\\boxed{unclosed", None), ("The answer is .", None),
])
def test_stated_answer(step, answer):
    assert stated_answer(step) == answer


_balanced = st.recursive(st.text(alphabet="abc123+-\\^ ", max_size=6),
                         lambda inner: st.builds(lambda a, b: a + "{" + b + "}", inner, inner), max_leaves=8)


@given(st.text(alphabet="xyz .,", max_size=10), _balanced, st.text(alphabet="xyz .,", max_size=10))
def test_boxed_answer_returns_the_balanced_content(before, content, after):
    assert boxed_answer(f"{before}\\boxed{{{content}}}{after}") == content.strip()
