"""Toy policies and an oracle scorer over hand-made step trees, for exact beam-search tests."""

from collections.abc import Sequence

import numpy as np
import pytest

from pav.core.records import Problem
from pav.policies.base import Generation, SampleBatch
from pav.rollouts.estimates import advantages_from_prefix_values
from pav.verifier.scorer import StepScores

PROMPT = "q\n"


class TreePolicy:
    """Proposes the children of a prefix in a fixed tree, cycling through them for each of n samples;
    a token is a character (so compute can be counted by hand)."""

    policy_id = "tree"

    def __init__(self, tree: dict[tuple[str, ...], list[str]]):
        self.tree, self.calls = tree, []

    def sample(self, contexts, n, *, until, max_steps, max_new_tokens, temperature=1.0, top_p=1.0, seed=None,
               is_final_step=None, max_step_chars=None):
        assert until == "step"
        self.calls.append((list(contexts), n, seed))
        out = []
        for context in contexts:
            prefix = tuple(context[len(PROMPT):].split("\n")[:-1])
            children = self.tree[prefix]
            out.append([Generation(children[j % len(children)] + "\n", len(children[j % len(children)]) + 1, True)
                        for j in range(n)])
        gen = sum(g.n_tokens for row in out for g in row)
        return SampleBatch(out, sum(len(c) for c in set(contexts)), gen, 0.0)


class OracleScorer:
    """Q^π of a prefix from a table; the prover is π itself (A^μ = A^π); tokens = characters."""

    def __init__(self, q: dict[tuple[str, ...], float]):
        self.q, self.calls = q, 0

    def score(self, prompts: Sequence[str], steps_list: Sequence[Sequence[str]]) -> list[StepScores]:
        self.calls += 1
        out = []
        for prompt, steps in zip(prompts, steps_list):
            v = np.array([self.q[tuple(steps[:h])] for h in range(len(steps) + 1)])
            out.append(StepScores(float(v[0]), v[1:], v[1:], advantages_from_prefix_values(v), float(v[-1]),
                                  len(prompt) + sum(len(s) + 1 for s in steps)))
        return out


class TreeTask:
    """The minimum of `Task` that beam search uses; steps starting with "ans" are final."""

    name, step_delimiter, max_steps, max_step_chars = "tree", "\n", 6, 16

    def prompt(self, problem):
        return PROMPT

    def is_final_step(self, step):
        return step.startswith("ans")


@pytest.fixture
def problem():
    return Problem("p0", "q", "0", {})


@pytest.fixture
def toys():
    """The toy classes, for tests that build their own trees."""
    class Toys:
        tree_policy, oracle, task = TreePolicy, OracleScorer, TreeTask
    return Toys
