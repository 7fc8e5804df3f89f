"""The built-in task's noisy expert as a `Policy`: a prover μ that is not the base policy.

`ExpertPolicy` continues a ModReach context (prompt, then the steps so far) the way the task's
demonstrator does (`ModReach.demonstrate` with a prefix: from the state the last line claims), so
`pav label --set prover=expert` labels the base policy's seed solutions with Monte-Carlo rollouts of
the expert. A verifier trained on those labels is a learned PAV of a different prover, the paper's
cross-model prover (the paper, §4.2, Fig. 5(c)), whose exact values (`ModReach.expert_values`) are known;
`pav.verifier.exact` uses the exact ones directly.

The expert samples from its own noise model (``task.p_err``, ``p_restate``, ``p_rand``): temperature
and top-p do not apply and are refused unless 1. Its "tokens" are characters, which are the built-in
character tokenizer's tokens. Rollout r of context c depends on (the seed of context c, r) only.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

from pav.core.seeding import derive_seed
from pav.policies.base import Generation, SampleBatch, Until, check_sample_args, over_long_end
from pav.tasks.modreach import ModReach

EXPERT = "expert"  # the `prover` value that names this policy (`pav label`)


class ExpertPolicy:
    """ModReach's noisy expert as a sampler (module docstring)."""

    def __init__(self, task: object) -> None:
        if not isinstance(task, ModReach):
            raise ValueError(f"the expert prover is the built-in ModReach task's; {getattr(task, 'name', task)!r} "
                             "has none (use a checkpoint as prover)")
        cfg = task.cfg
        self.task = task
        self.policy_id = f"modreach-expert(p_err={cfg.p_err:g},p_restate={cfg.p_restate:g},p_rand={cfg.p_rand:g})"

    def sample(
        self,
        contexts: Sequence[str],
        n: int,
        *,
        until: Until,
        max_steps: int,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | Sequence[int] | None = None,
        is_final_step: Callable[[str], bool] | None = None,
        max_step_chars: int | None = None,
    ) -> SampleBatch:
        check_sample_args(n, until, max_steps, max_new_tokens, temperature, top_p, max_step_chars)
        if temperature != 1.0 or top_p != 1.0:
            raise ValueError("the expert samples from its own noise model: temperature and top_p must be 1")
        start = time.perf_counter()
        seeds = _context_seeds(seed, len(contexts))
        generations = []
        for context, context_seed in zip(contexts, seeds):
            problem, prefix = self._parse(context)
            rngs = [random.Random(derive_seed(context_seed, r)) if context_seed is not None else random.Random()
                    for r in range(n)]
            generations.append([self._continue(problem, prefix, rng, until, max_steps, max_new_tokens, max_step_chars)
                                for rng in rngs])
        generated = sum(g.n_tokens for row in generations for g in row)
        return SampleBatch(generations, sum(len(c) for c in set(contexts)), generated, time.perf_counter() - start)

    def _parse(self, context: str) -> tuple:
        """(problem, steps so far) of a context: its first line is the question."""
        delimiter = self.task.step_delimiter
        question, sep, rest = context.partition(delimiter)
        if not sep:
            raise ValueError(f"not a ModReach context (no step delimiter after the question): {context[:80]!r}")
        if rest and not rest.endswith(delimiter):
            raise ValueError(f"the expert continues after whole steps; the context ends mid-step: {rest[-40:]!r}")
        return self.task.parse_question(question), self.task.split_steps(rest)

    def _continue(self, problem, prefix: list[str], rng: random.Random, until: Until, max_steps: int,
                  max_new_tokens: int, max_step_chars: int | None) -> Generation:
        lines = self.task.demonstrate(problem, rng, prefix)  # [] after an answer: it stops at once, as at eos
        finished = True
        if until == "step":
            lines = lines[:1]
        elif len(lines) > max_steps:
            lines, finished = lines[:max_steps], False
        text = "".join(line + self.task.step_delimiter for line in lines)
        if len(text) > max_new_tokens:
            text, finished = text[:max_new_tokens], False
        end = None if max_step_chars is None else over_long_end(text, self.task.step_delimiter, max_step_chars)
        if end is not None:  # as any sampler cuts (`pav.policies.base.cut_over_long`); never at modulus 10 (<= 6 chars)
            text, finished = text[:end], False
        return Generation(text, len(text), finished)


def _context_seeds(seed: int | Sequence[int] | None, n_contexts: int) -> list[int | None]:
    """One seed per context: as given, derived from one seed, or None (nondeterministic)."""
    if seed is None:
        return [None] * n_contexts
    if isinstance(seed, int):
        return [derive_seed(seed, "context", c) for c in range(n_contexts)]
    if len(seed) != n_contexts:
        raise ValueError(f"{len(seed)} seeds for {n_contexts} contexts")
    return list(seed)
