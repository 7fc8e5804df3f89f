"""OpenRLHF's remote reward-model contract (0.11): requests in, rewards out.

OpenRLHF's ``SingleTurnAgentExecutor`` (``--reward.remote_url URL``) POSTs one sample per request,
``{"query": [prompt + response], "prompts": [prompt], "labels": [label]}``, the query decoded with
special tokens kept, and reads ``rewards``, ``scores`` (it falls back to ``rewards``) and
``extra_logs`` (a list per key, one number per query) from the reply. A URL ending in ``.py``
instead loads ``reward_func(queries, prompts, labels)`` returning the same keys
(examples/openrlhf_reward_func.py). Both paths go through `parse` and `reply` here.

The response is the query's text after its prompt (after its first occurrence when the policy's
tokenizer put a BOS before it), less trailing special tokens of the verifier's tokenizer (the EOS
the policy ended with), split into steps at the step delimiter. Each reward is the reduction
(`pav.serve.reduce`) of the response's step rewards, with the checked outcome on the final step
when its label is a gold answer (`pav.serve.graded`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pav.core.steps import split_steps
from pav.serve.graded import checked_outcome, extra_logs, with_outcome
from pav.serve.reduce import reduce_steps


class BadRequest(ValueError):
    """A request pav cannot score; the message names the field and the rule, never its values."""


@dataclass(frozen=True)
class Parsed:
    prompts: list[str]
    steps: list[list[str]]
    golds: list[str | None]


def parse(queries: Sequence[Any], prompts: Sequence[Any], labels: Sequence[Any] | None, delimiter: str,
          special_tokens: Sequence[str] = ()) -> Parsed:
    """The prompt, steps and gold answer of each query; raises `BadRequest`."""
    if not queries:
        raise BadRequest("query is empty")
    if len(queries) != len(prompts):
        raise BadRequest("query and prompts must have the same length")
    if labels is not None and len(labels) != len(queries):
        raise BadRequest("labels and query must have the same length")
    golds = [str(g) if isinstance(g, int) and not isinstance(g, bool) else g for g in labels] if labels is not None \
        else [None] * len(queries)  # an integer gold answer (a JSON dataset's 42) reads as "42"
    for name, values in (("query", queries), ("prompts", prompts)):
        if not all(isinstance(v, str) for v in values):
            raise BadRequest(f"every entry of {name} must be a string")
    if not all(g is None or isinstance(g, str) for g in golds):
        raise BadRequest("every entry of labels must be a string, an integer or null")
    steps = []
    for i, (query, prompt) in enumerate(zip(queries, prompts)):
        at = query.find(prompt) if prompt else -1
        if at < 0:
            raise BadRequest(f"query {i} does not contain its prompt")
        response = _strip_special(query[at + len(prompt):], special_tokens)
        st = split_steps(response, delimiter)  # pav's step rule: a blank line is never a step
        if not st:
            raise BadRequest(f"query {i}: the response has no steps")
        steps.append(st)
    return Parsed(list(prompts), steps, golds)


def _strip_special(text: str, special_tokens: Sequence[str]) -> str:
    """``text`` without the special tokens (EOS, padding) it ends with."""
    tokens = [t for t in special_tokens if t]
    while True:
        stripped = text.rstrip()
        end = next((t for t in tokens if stripped.endswith(t)), None)
        if end is None:
            return text
        text = stripped[: -len(end)]


def reply(scores: Sequence[Any], outcomes: Sequence[float | None], alpha: float, reduction: str) -> dict[str, Any]:
    """OpenRLHF's reply for these `StepScores` and checked outcomes (None: no gold answer)."""
    rewards, logs = [], []
    for sc, outcome in zip(scores, outcomes, strict=True):
        graded = with_outcome(sc, outcome)
        step_rewards = graded.effective_reward(alpha)
        rewards.append(reduce_steps(step_rewards, graded.outcome, reduction))
        logs.append(extra_logs(step_rewards, outcome))
    return {"rewards": rewards, "scores": rewards, "extra_logs": {k: [row[k] for row in logs] for k in logs[0]}}


def special_tokens_of(scorer: Any) -> list[str]:
    """The verifier tokenizer's special tokens, longest first."""
    tokenizer = getattr(getattr(scorer, "pqv", None), "tokenizer", None)
    return sorted(getattr(tokenizer, "all_special_tokens", []) or [], key=len, reverse=True)


def outcomes_of(task: Any, parsed: Parsed) -> list[float | None]:
    """The checked outcome of each response with a gold answer (raises `GoldAnswerError`)."""
    return [checked_outcome(task, p, st, g) for p, st, g in zip(parsed.prompts, parsed.steps, parsed.golds)]


def rewards(scorer: Any, task: Any, queries: Sequence[Any], prompts: Sequence[Any], labels: Sequence[Any] | None, *,
            alpha: float, reduction: str, delimiter: str) -> dict[str, Any]:
    """The whole contract in-process (OpenRLHF's ``reward_func`` path)."""
    parsed = parse(queries, prompts, labels, delimiter, special_tokens_of(scorer))
    outcomes = outcomes_of(task, parsed)
    return reply(scorer.score(parsed.prompts, parsed.steps), outcomes, alpha, reduction)
