"""A policy that writes like the task's noisy demonstrator, for fast labelling tests without an LM."""

import random
import re
import zlib

import pytest

from pav.policies.base import Generation, SampleBatch
from pav.tasks.modreach import ModReach

PROMPT = re.compile(r"(\d+) to (\d+) mod \d+ ops ((?:[+*]\d+ ?)+) max (\d+)\n")


class ExpertPolicy:
    """Continues a ModReach context with the demonstrator (an honest, mediocre policy)."""

    def __init__(self, task: ModReach, policy_id: str = "expert"):
        self.task, self.policy_id = task, policy_id

    def sample(self, contexts, n, *, until, max_steps, max_new_tokens, temperature=1.0, top_p=1.0, seed=None,
               is_final_step=None):
        out, generated = [], 0
        for c, context in enumerate(contexts):
            m = PROMPT.match(context)
            problem = self.task.make_problem(m.group(3).split(), int(m.group(1)), int(m.group(2)), int(m.group(4)))
            prefix = self.task.split_steps(context[m.end():])
            rng = random.Random(f"{seed}-{zlib.crc32(context.encode())}-{c}")
            row = []
            for _ in range(n):
                lines = self.task.demonstrate(problem, rng, prefix)[: max(max_steps, 1)]
                text = "".join(line + "\n" for line in (lines[:1] if until == "step" else lines))
                row.append(Generation(text, len(text), True))
                generated += len(text)
            out.append(row)
        return SampleBatch(out, sum(len(c) for c in set(contexts)), generated, 0.0)

    def count_tokens(self, texts):
        return [len(t) for t in texts]


@pytest.fixture
def task():
    return ModReach()


@pytest.fixture
def expert(task):
    return ExpertPolicy(task)
