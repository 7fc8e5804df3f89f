"""The task's noisy expert as a rollout policy: its Monte-Carlo values are its exact values."""

import random

import numpy as np
import pytest

from pav.rollouts.label import Sampling, rollout_counts
from pav.tasks.math_task import MathTask

SAMPLING = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=200)  # the label stage's defaults


def _prefixes(task, n_problems=4):
    items = []
    for i, p in enumerate(task.problems(n_problems, seed=11)):
        steps = task.demonstrate(p, random.Random(i))
        items += [(p, steps[:h]) for h in range(len(steps) + 1)]
    return items


def test_rollout_success_rates_are_the_exact_expert_values(task, expert):
    items = _prefixes(task)
    n = 1500
    wins, *_ = rollout_counts(expert, task, items, n, SAMPLING, seed=0)
    exact = np.array([task.expert_values(p, steps)[-1] for p, steps in items])
    se = np.sqrt(np.maximum(exact * (1 - exact), 1e-12) / n)
    assert np.all(np.abs(np.array(wins) / n - exact) <= 4 * se + 1e-12), (np.array(wins) / n, exact)
    assert ((exact > 0) & (exact < 1)).sum() > 10  # not vacuous: many prefixes are uncertain
    answered = [i for i, (_, steps) in enumerate(items) if steps and task.is_final_step(steps[-1])]
    assert answered and all(wins[i] in (0, n) for i in answered)  # nothing follows an answer


def test_step_mode_writes_one_line_and_solution_mode_ends_with_an_answer(task, expert):
    p = task.problems(1, seed=3)[0]
    steps = expert.sample([task.prompt(p)], 5, until="step", max_steps=10, max_new_tokens=200, seed=1)
    for g in steps.generations[0]:
        assert g.text.endswith("\n") and g.text.count("\n") == 1 and g.finished and g.n_tokens == len(g.text)
    whole = expert.sample([task.prompt(p)], 5, until="solution", max_steps=task.max_steps, max_new_tokens=400, seed=1)
    for g in whole.generations[0]:
        assert g.finished and task.is_final_step(task.split_steps(g.text)[-1])
    cut = expert.sample([task.prompt(p)], 5, until="solution", max_steps=1, max_new_tokens=400, seed=1)
    assert all(g.text.count("\n") == 1 for g in cut.generations[0])
    assert whole.generated_tokens == sum(g.n_tokens for g in whole.generations[0])
    assert whole.prompt_tokens == len(task.prompt(p))


def test_a_rollout_depends_on_its_context_seed_and_index_only(task, expert):
    a, b = (task.prompt(p) for p in task.problems(2, seed=4))
    kw = dict(until="solution", max_steps=task.max_steps, max_new_tokens=400)
    both = expert.sample([a, b], 6, seed=[7, 8], **kw).texts
    alone = expert.sample([b], 6, seed=[8], **kw).texts
    assert both[1] == alone[0] and len(set(both[1])) > 1  # rollouts of one context differ from each other
    assert expert.sample([a, b], 6, seed=5, **kw).texts == expert.sample([a, b], 6, seed=5, **kw).texts


def test_the_expert_refuses_what_it_cannot_do(task, expert):
    from pav.rollouts.expert import ExpertPolicy

    p = task.problems(1, seed=3)[0]
    kw = dict(until="step", max_steps=4, max_new_tokens=50)
    with pytest.raises(ValueError, match="temperature"):
        expert.sample([task.prompt(p)], 1, temperature=0.7, **kw)
    with pytest.raises(ValueError, match="mid-step"):
        expert.sample([task.prompt(p) + "3+1"], 1, **kw)
    with pytest.raises(ValueError, match="not a ModReach"):
        expert.sample(["what is 2+2?\n"], 1, **kw)
    with pytest.raises(ValueError, match="ModReach"):
        ExpertPolicy(MathTask.__new__(MathTask))


def test_after_an_answer_the_expert_writes_nothing_and_has_finished(task, expert):
    p = task.problems(1, seed=3)[0]
    done = task.prompt(p) + "".join(line + "\n" for line in task.demonstrate(p, random.Random(0)))
    [[g]] = expert.sample([done], 1, until="solution", max_steps=4, max_new_tokens=50, seed=0).generations
    assert (g.text, g.n_tokens, g.finished) == ("", 0, True)
