"""The DeepMind mathematics-dataset task (`pav.tasks.deepmind`): splits, prompts, grading, demonstrator."""

import random
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pav.core.records import Problem
from pav.tasks.build import build_task, task_config
from pav.tasks.deepmind import make_task, work_add_sub
from pav.tasks.math_task import MathTaskConfig, render_prompt

SOURCE = "pav.tasks.deepmind:make_task"


@pytest.fixture(scope="module")
def task():
    return make_task()


def test_splits_are_seeded_disjoint_and_leave_the_global_rngs_alone(task):
    random.seed(5)
    np.random.seed(5)
    before = random.random(), np.random.random()
    random.seed(5)
    np.random.seed(5)
    train = task.problems(200, 0, "train")
    heldout = task.problems(200, 0, "heldout")
    assert (random.random(), np.random.random()) == before
    assert [p.problem_id for p in task.problems(200, 0, "train")] == [p.problem_id for p in train]
    assert [p.problem_id for p in task.problems(200, 1, "train")] != [p.problem_id for p in train]
    assert not {p.question for p in train} & {p.question for p in heldout}
    assert len({p.problem_id for p in train}) == 200


def test_the_demonstrator_solves_every_generated_problem(task):
    problems = task.problems(300, 3, "train") + task.problems(100, 3, "heldout")
    assert all(task.outcome(p, task.demonstrate(p, random.Random(0))) == 1.0 for p in problems)


def test_the_demonstrator_works_innermost_parentheses_first():
    assert work_add_sub("What is the value of 1 - -4 - (3 + -3)?") == [
        "3 + -3 = 0", "1 - -4 = 5", "5 - 0 = 5", "The answer is 5."]
    assert work_add_sub("Evaluate 12 - (-13 + (11 - -15)) - 4.") == [
        "11 - -15 = 26", "-13 + 26 = 13", "12 - 13 = -1", "-1 - 4 = -5", "The answer is -5."]


def _expression(depth: int):
    number = st.integers(-30, 30).map(lambda v: (str(v), v))
    if depth == 0:
        return number
    inner = st.one_of(number, _expression(depth - 1).map(lambda e: (f"({e[0]})", e[1])))
    return st.lists(st.tuples(st.sampled_from("+-"), inner), min_size=1, max_size=3).flatmap(
        lambda rest: inner.map(lambda first: _fold(first, rest)))


def _fold(first, rest):
    text, value = first
    for op, (t, v) in rest:
        text, value = f"{text} {op} {t}", value + v if op == "+" else value - v
    return text, value


@settings(max_examples=100, deadline=None)
@given(_expression(2), st.sampled_from(["What is {}?", "Calculate {}.", "Evaluate {}.", "{}"]))
def test_the_demonstrator_evaluates_any_add_sub_expression(expression, phrasing):
    text, value = expression
    steps = work_add_sub(phrasing.format(text))
    assert steps[-1] == f"The answer is {value}."
    assert len(steps) == text.count(" + ") + text.count(" - ") + 1  # one step per operation, then the answer


@pytest.mark.parametrize("stated, gold, same", [
    ("5", "5", True), ("-5", "5", False), ("05", "5", True), ("12", "-12", False), ("-3/4", "-3/4", True),
    ("-0.75", "-3/4", True), ("6/8", "3/4", True), ("111.8", "559/5", True),
    ("-0.0416666666667", "-1/24", True), ("-0.04167", "-1/24", False),  # a rational gold: math-verify's 6 places, no rounding
    ("x+1", "x + 1", True), ("-2*x**3 + 5", "5 - 2*x**3", True),
])
def test_outcome_grades_equivalent_forms_with_math_verify(task, stated, gold, same):
    assert task.outcome(Problem("p", "q", gold, {}), [f"The answer is {stated}."]) == float(same)


def test_a_fraction_module_question_accepts_its_decimal_equivalent():
    task = make_task(module="arithmetic/div", grader_workers=1)
    problem = next(p for p in task.problems(50, 0) if "/" in p.answer)
    decimal = f"{float(Fraction(problem.answer)):.13g}"
    assert task.outcome(problem, [f"The answer is {problem.answer}."]) == 1.0
    assert task.outcome(problem, [f"The answer is {decimal}."]) == 1.0
    assert task.outcome(problem, [f"The answer is {float(Fraction(problem.answer)) + 0.01:.13g}."]) == 0.0


def test_outcome_reads_the_stated_answer_and_blank_lines_are_not_steps(task):
    p = Problem("p", "What is 2 + 3?", "5", {})
    assert task.outcome(p, ["2 + 3 = 5", "The answer is 5."]) == 1.0
    assert task.outcome(p, ["2 + 3 = 5", "The answer is \\boxed{5}"]) == 1.0
    assert task.outcome(p, ["2 + 3 = 6", "The answer is 6."]) == 0.0
    assert task.outcome(p, ["2 + 3 = 5"]) == 0.0
    steps = task.split_steps("\n2 + 3 = 5\n \n\nThe answer is 5.")
    assert [s.strip() for s in steps] == ["2 + 3 = 5", "The answer is 5."]
    assert task.outcome(p, steps) == 1.0


def test_plain_prompts_show_the_worked_examples_and_end_with_the_delimiter():
    task = make_task(template="plain", shots=2)
    problem = task.problems(1, 0, "heldout")[0]
    prompt = task.prompt(problem)
    (q1, s1), (q2, _) = task.examples()
    assert prompt.startswith(f"Question: {q1}\n{task.cfg.instruction}\nAnswer:\n" + "\n".join(s1) + "\n\n")
    assert prompt.endswith(f"Question: {problem.question}\n{task.cfg.instruction}\nAnswer:\n")
    assert q2 in prompt and q1 != problem.question


@pytest.mark.parametrize("template, shots, system, instruction", [
    ("plain", 0, "", "One operation per line."), ("plain", 2, "You are a calculator.", ""),
    ("chat", 0, "You are a calculator.", ""), ("chat", 2, "", "One operation per line."),
])
def test_prompts_are_the_problem_set_tasks_rendering(template, shots, system, instruction):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from pav.policies.tiny import CHAT_TEMPLATE

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")))
    tokenizer.chat_template = CHAT_TEMPLATE
    task = make_task(template=template, shots=shots, system=system, instruction=instruction)
    task.bind_tokenizer(tokenizer)
    style = MathTaskConfig(template=template, system=system, instruction="", plain_template="Question: {question}\nAnswer:\n")
    ask = lambda q: f"{q}\n{instruction}".strip()  # noqa: E731
    examples = [(ask(q), steps) for q, steps in task.examples()]
    for problem in task.problems(5, 0, "heldout"):
        assert task.prompt(problem) == render_prompt(ask(problem.question), style, tokenizer, "\n", examples)
    if template == "chat":
        assert task.prompt(problem).startswith(f"<|im_start|>system\n{system}" if system else "<|im_start|>user\n")


def test_it_is_a_task_plug_in_and_refuses_bad_options():
    task = build_task(task_config(SOURCE, module="arithmetic/mul", difficulty="medium"))
    assert task.name == "deepmind:arithmetic/mul:medium" and task.problems(3, 0, "train")[0].answer
    with pytest.raises(ValueError, match="no module arithmetic/nope"):
        build_task(task_config(SOURCE, module="arithmetic/nope"))
    with pytest.raises(ValueError, match="no demonstrator for arithmetic/mul"):
        task.demonstrate(task.problems(1, 0)[0], random.Random(0))


@pytest.mark.parametrize("preset, config", [
    ("smollm2_sft", "pav.sft.stage:SFTConfig"), ("smollm2_eval", "pav.eval.stage:EvalPolicyConfig"),
    ("smollm2_label", "pav.rollouts.stage:LabelConfig"), ("smollm2_search", "pav.search.stage:SearchConfig"),
])
def test_the_smollm2_presets_resolve_to_this_task(preset, config):
    import importlib

    from pav.core.config import resolve

    module, name = config.split(":")
    cfg = resolve(getattr(importlib.import_module(module), name), preset)
    assert cfg.task.source == SOURCE and cfg.task.options["module"] == "arithmetic/add_sub_multiple"
    build_task(cfg.task, check=False)  # the options are the factory's
