"""Progress rewards inside other RL trainers, in-process (no server needed).

- `PAVReward`: a reward function for TRL's ``GRPOTrainer`` / ``RLOOTrainer``
  (``reward_funcs=[PAVReward("runs/pqv")]``). TRL takes one scalar per completion, so the step
  rewards Q̂^π + α·Â^μ are reduced (`pav.serve.reduce`; ``min`` by default, the weakest step).
  When the dataset has a gold-answer column (``gold_column``, default ``answer``; TRL passes every
  column to reward functions), the final step carries the checked outcome (`pav.serve.graded`),
  graded by ``task`` (the built-in task by default). Given the policy's tokenizer
  (``policy_tokenizer``, TRL's ``processing_class``) and a verifier with the same vocabulary, the
  verifier reads TRL's ``completion_ids`` as they are (`VerifierScorer.score_ids`: the tokens the
  policy sampled, not a re-tokenisation of their text); otherwise, or when the ids do not decode to
  the completion's text, it reads the text with its own tokenizer, which need not be the policy's.
  Plain-text and conversational (list of messages) prompts and completions are both accepted;
  conversational prompts are rendered with the verifier's chat template.
- `token_level_rewards`: the dense form verl's token-level reward tensor expects: (B, L) over
  the sampled response tokens, each step's effective reward placed on the token that completes
  that step (the token covering its delimiter, or the last response token for a final step with
  no delimiter), zeros elsewhere and on padding. Call it from a custom verl reward manager with
  ``data.batch["responses"]`` and the response part of ``data.batch["attention_mask"]``.

Both read a saved verifier (or take a `Scorer`), score every solution of a call in one batch and
never evaluate model text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pav.core import steps as core_steps
from pav.serve.graded import checked_outcome, load_task, with_outcome
from pav.serve.reduce import REDUCTIONS, reduce_steps


def load_scorer(verifier: Any, *, k: int = 4, orm: str = "", batch_size: int = 32) -> Any:
    """A `Scorer` from a verifier path (a `pav train-verifier` run or its verifier/), a loaded
    `ValueVerifier`, or a `Scorer` (returned as it is)."""
    if hasattr(verifier, "score"):
        return verifier
    from pav.verifier.scorer import VerifierScorer
    from pav.verifier.load import load_scorer as from_files, load_verifier

    if isinstance(verifier, str):
        return from_files(verifier, k=k, orm=orm, batch_size=batch_size)
    return VerifierScorer(verifier, k=k, orm=load_verifier(orm) if orm else None, batch_size=batch_size)


def split_steps(completion: str, delimiter: str) -> list[str]:
    """The steps of a completion under pav's step rule (`pav.core.steps`: a blank line is never a step)."""
    return core_steps.split_steps(completion, delimiter)


class PAVReward:
    """A TRL reward function: one reduced effective reward per completion (module docstring)."""

    def __init__(self, verifier: Any, *, alpha: float = 0.5, k: int = 4, reduction: str = "min",
                 delimiter: str | None = None, orm: str = "", batch_size: int = 32, gold_column: str = "answer",
                 task: Any = None, policy_tokenizer: Any = None) -> None:
        if reduction not in REDUCTIONS:
            raise ValueError(f"unknown reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}")
        self.scorer = load_scorer(verifier, k=k, orm=orm, batch_size=batch_size)
        pqv = getattr(self.scorer, "pqv", None)
        self.delimiter = delimiter or getattr(pqv, "delimiter", "\n")
        self.tokenizer = getattr(pqv, "tokenizer", None)
        self.reads_ids = (policy_tokenizer is not None and hasattr(self.scorer, "score_ids")
                          and self.delimiter == pqv.delimiter and self.scorer.reads_ids_of(policy_tokenizer))
        self.alpha, self.reduction, self.gold_column = alpha, reduction, gold_column
        self._task_spec, self._task = task, None
        self.__name__ = f"pav_{reduction}"  # TRL logs each reward function under its __name__

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        texts = [self._prompt_text(p) for p in prompts]
        completions = [_completion_text(c) for c in completions]
        ids = kwargs.get("completion_ids")
        if self.reads_ids and ids is not None and self.tokenizer.batch_decode(ids, skip_special_tokens=True) == completions:
            steps, scores = self.scorer.score_ids(texts, ids)  # the policy's own tokens, as sampled
        else:
            steps = [split_steps(c, self.delimiter) for c in completions]
            scores = self.scorer.score(texts, steps)
        golds = kwargs.get(self.gold_column)  # TRL passes every dataset column by name
        if golds is not None:
            outcomes = [checked_outcome(self.task, t, st, g) for t, st, g in zip(texts, steps, golds, strict=True)]
            scores = [with_outcome(s, o) for s, o in zip(scores, outcomes)]
        return [reduce_steps(s.effective_reward(self.alpha), s.outcome, self.reduction) for s in scores]

    @property
    def task(self) -> Any:
        """The task that grades gold answers, built on first use (`pav.serve.graded.load_task`)."""
        if self._task is None:
            self._task = load_task(self._task_spec, self.tokenizer)
        return self._task

    def _prompt_text(self, prompt: Any) -> str:
        if isinstance(prompt, str):
            return prompt
        if self.tokenizer is None or not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("conversational prompts need a verifier whose tokenizer has a chat template")
        return self.tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)


def _completion_text(completion: Any) -> str:
    if isinstance(completion, str):
        return completion
    return "".join(m.get("content", "") for m in completion if m.get("role", "assistant") == "assistant")


def token_level_rewards(scorer: Any, tokenizer: Any, prompts: Sequence[str], response_ids: Any, response_mask: Any,
                        *, alpha: float = 0.5, delimiter: str = "\n"):
    """(B, L) float tensor of step rewards on the tokens that complete each step (module docstring).

    ``response_ids`` (B, L) and ``response_mask`` (B, L) are verl's right-padded response tokens and
    their mask; steps past the verifier's window get no reward.
    """
    import torch

    rewards = torch.zeros(response_ids.shape, dtype=torch.float32)  # (B, L)
    rows, ends = [], []
    for b in range(response_ids.shape[0]):
        steps, token_ends = steps_with_token_ends(tokenizer, response_ids[b][response_mask[b].bool()].tolist(), delimiter)
        rows.append(steps)
        ends.append(token_ends)
    scores = scorer.score(list(prompts), rows)
    for b, (sc, token_ends) in enumerate(zip(scores, ends)):
        positions = response_mask[b].bool().nonzero().flatten().tolist()
        for r, t in zip(sc.effective_reward(alpha), token_ends):
            if np.isfinite(r) and t is not None:
                rewards[b, positions[t]] += float(r)
    return rewards


def steps_with_token_ends(tokenizer: Any, ids: list[int], delimiter: str) -> tuple[list[str], list[int | None]]:
    """The non-blank steps of the response ``ids`` and, per step, the index of the token that completes
    it (the token covering its delimiter, or the last token of a final step without one)."""
    from pav.verifier.model import decode_with_offsets

    text, char_end = decode_with_offsets(tokenizer, ids)
    steps, rest = core_steps.complete_steps(text, delimiter)  # a blank line starts the next step
    token_ends, at = [], 0
    for step in steps:
        at += len(step) + len(delimiter)
        token_ends.append(_token_at(char_end, at))
    if rest.strip():  # a final step without its delimiter
        steps.append(rest)
        token_ends.append(_token_at(char_end, at + len(rest)))
    return steps, token_ends


def _token_at(char_end: list[int], char: int) -> int | None:
    """The first token whose text reaches character ``char`` (the token completing a step)."""
    for t, end in enumerate(char_end):
        if end >= char:
            return t
    return None
