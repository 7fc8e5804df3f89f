"""`MathTask`: problems, prompts, step grammar and grading of a GSM8K-format set."""

import json
import random
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pav.core.records import Problem
from pav.tasks.base import Task, join_steps
from pav.tasks.build import MATH, TaskPluginError, build_task, prompt_of, task_config, with_prompt
from pav.tasks.math_data import MathDataError
from pav.tasks.math_task import MathTask, MathTaskConfig
from pav.tasks.modreach import ModReach

GSM8K_TINY = Path(__file__).parents[1] / "data" / "gsm8k_tiny.jsonl"


@pytest.fixture(scope="module")
def task():
    t = MathTask(MathTaskConfig(train=str(GSM8K_TINY), grader_deadline=3.0))
    yield t
    t.grader.close()


def test_it_is_a_task_with_disjoint_seeded_splits(task):
    assert isinstance(task, Task)
    train, held = task.problems(100, 0, "train"), task.problems(100, 0, "heldout")
    n = len(GSM8K_TINY.read_text().splitlines())
    assert len(train) + len(held) == n and held
    assert not {p.problem_id for p in train} & {p.problem_id for p in held}
    assert task.problems(5, 3) == task.problems(5, 3) != task.problems(5, 4)


def test_plain_and_chat_prompts_end_with_the_delimiter(task, tiny_qwen):
    from transformers import AutoTokenizer

    p = task.problems(1, 0)[0]
    assert task.prompt(p) == f"Question: {p.question}\nAnswer:\n"
    chat = MathTask(MathTaskConfig(train=str(GSM8K_TINY)))
    chat.bind_tokenizer(AutoTokenizer.from_pretrained(tiny_qwen))
    text = chat.prompt(p)
    assert text.startswith("<|im_start|>user\n" + p.question) and text.endswith("<|im_start|>assistant\n")
    stored = with_prompt(p, chat)
    assert prompt_of(stored) == text == task.prompt(stored)  # a stored prompt wins over re-rendering


def test_chat_template_without_a_tokenizer_is_an_error():
    t = MathTask(MathTaskConfig(train=str(GSM8K_TINY), template="chat"))
    with pytest.raises(ValueError, match="chat template"):
        t.prompt(t.problems(1, 0)[0])


def test_steps_answers_and_outcomes(task):
    p = next(x for x in task.problems(100, 0) if x.answer == "18")
    assert task.demonstrate(p, random.Random(0))[-1] == "The answer is 18."
    assert task.outcome(p, task.demonstrate(p, random.Random(0))) == 1.0
    assert task.outcome(p, ["14 + 4 = 18", "so \\boxed{18}"]) == 1.0
    assert task.outcome(p, ["The answer is 18.0."]) == 1.0
    assert task.outcome(p, ["The answer is 19."]) == 0.0
    assert task.outcome(p, ["14 + 4 = 18"]) == 0.0  # no stated answer
    assert task.is_final_step("The answer is 3.") and not task.is_final_step("3 + 4 = 7")
    assert task.answer(["a", "The answer is $7$.", "The answer is 8."]) == "7"


@given(st.lists(st.text(alphabet="ab 1+=.\n", min_size=1, max_size=8).filter(lambda s: "\n\n" not in s
                                                                              and not s.endswith("\n")
                                                                              and not s.startswith("\n")
                                                                              and s.strip()),
                max_size=5))
def test_blank_line_steps_round_trip(steps):
    t = MathTask(MathTaskConfig(train=str(GSM8K_TINY), delimiter="blank-line"))
    assert t.split_steps(join_steps(steps, t.step_delimiter)) == steps


def test_task_source_picks_the_task_and_a_math_task_needs_problems():
    assert isinstance(build_task(task_config()), ModReach)
    assert isinstance(build_task(task_config(MATH, train=str(GSM8K_TINY), grader_workers=1)), MathTask)
    with pytest.raises(MathDataError):
        MathTask(MathTaskConfig())
    with pytest.raises(TaskPluginError, match="task.options.train=FILE"):
        build_task(task_config(MATH))


def test_system_prompt_and_few_shot_examples(tiny_qwen):
    from transformers import AutoTokenizer

    t = MathTask(MathTaskConfig(train=str(GSM8K_TINY), shots=2, system="Be brief."))
    p = t.problems(1, 0)[0]
    plain = t.prompt(p)
    assert plain.startswith("Be brief.\n\nQuestion: ") and plain.count("Question: ") == 3
    assert plain.endswith(f"Question: {p.question}\nAnswer:\n") and plain.count("The answer is") == 2
    for q in t.problems(100, 0):  # never its own example: always two others
        assert t.prompt(q).count(q.question) == 1 and t.prompt(q).count("Question: ") == 3
    t.bind_tokenizer(AutoTokenizer.from_pretrained(tiny_qwen))
    chat = t.prompt(p)
    assert chat.startswith("<|im_start|>system\nBe brief.") and chat.count("<|im_start|>assistant\n") == 3


def test_a_final_answer_pattern_comes_before_boxed_and_the_answer_is(task):
    t = MathTask(MathTaskConfig(train=str(GSM8K_TINY), answer_pattern=r"^Final: *(\S+)"))
    assert t.answer(["x", "Final: 42"]) == "42" and t.is_final_step("Final: 7")
    assert t.answer(["Final: 5 \\boxed{3}"]) == "5" and t.answer(["so \\boxed{3}"]) == "3"
    assert t.answer(["The answer is 7."]) == "7" and not t.is_final_step("Final:")
    with pytest.raises(ValueError, match="needs a group"):
        MathTaskConfig(train="x", answer_pattern="Final")


def test_prompt_of_falls_back_to_the_builtin_task():
    p = ModReach().problems(1, 0)[0]
    assert prompt_of(p) == ModReach().prompt(p)
    assert prompt_of(Problem("x", "q", "1", {"prompt": "P\n"})) == "P\n"


def test_heldout_file_and_clashing_ids(tmp_path):
    rows = [json.loads(line) for line in GSM8K_TINY.read_text().splitlines()]
    (tmp_path / "t.jsonl").write_text("\n".join(json.dumps({**r, "id": f"t{i}"}) for i, r in enumerate(rows[5:])))
    (tmp_path / "h.jsonl").write_text("\n".join(json.dumps({**r, "id": f"h{i}"}) for i, r in enumerate(rows[:5])))
    t = MathTask(MathTaskConfig(train=str(tmp_path / "t.jsonl"), heldout=str(tmp_path / "h.jsonl")))
    assert len(t.problems(100, 0, "heldout")) == 5 and len(t.problems(100, 0)) == len(rows) - 5
    with pytest.raises(MathDataError, match="5 questions .* both train and heldout"):  # the same questions
        MathTask(MathTaskConfig(train=str(GSM8K_TINY), heldout=str(tmp_path / "h.jsonl")))
    with pytest.raises(MathDataError, match="problem ids are in both"):  # the same ids
        MathTask(MathTaskConfig(train=str(tmp_path / "h.jsonl"), heldout=str(tmp_path / "h.jsonl"), id_field="id"))


def test_the_heldout_split_does_not_depend_on_where_the_file_lies(tmp_path, monkeypatch):
    """Ids of records without one come from the question, so a copy of the file elsewhere (or the
    same file named by a relative or an absolute path) gives the same problems and the same split."""
    copy = tmp_path / "deeper" / "copy.jsonl"
    copy.parent.mkdir()
    copy.write_bytes(GSM8K_TINY.read_bytes())
    monkeypatch.chdir(tmp_path)
    tasks = [MathTask(MathTaskConfig(train=path)) for path in (str(GSM8K_TINY), str(copy), "deeper/copy.jsonl")]
    splits = [([p.problem_id for p in t.problems(100, 0)], [p.problem_id for p in t.problems(100, 0, "heldout")])
              for t in tasks]
    assert splits[0] == splits[1] == splits[2] and splits[0][1]
