"""The read-only `Scorer` that search and RL consume (the paper, §3.2 and App. D).

For each (prompt, steps) a scorer returns, per step h = 1..H:
- ``q_base``      Q̂^π(s_h, a_h): the PQV's value of the prefix that ends with step h;
- ``q_prover``    Q̂^μ(s_h, a_h): for a Best-of-K prover 1 − (1 − Q̂^π)^K of the same outputs (one
                  model, as the paper does), or the values of a second verifier trained on the
                  prover's own labels;
- ``adv_prover``  Â^μ(s_h, a_h) = Q̂^μ(prefix h) − Q̂^μ(prefix h − 1) (Eq. 2), the question-only
                  prefix giving V^μ of the first step;
- ``effective_reward(alpha)`` = q_base + α · adv_prover;
and ``outcome``, the outcome score of the whole solution: the ORM's value after the last step when
an ORM is given, else the PQV's (the paper's "PRM as ORM"); ``verifier_tokens`` counts the tokens
every verifier model read for the solution (compute accounting, `pav.core.compute`).
All prefixes of all solutions of a call are scored in batched single forward passes per solution.
Steps the verifier cannot see (cut by its max length) get NaN, never a shifted value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pav.rollouts.estimates import advantages_from_prefix_values, best_of_k, effective_reward
from pav.verifier.extend import Store, extend_values
from pav.verifier.model import Encoded, ValueVerifier


@dataclass(frozen=True)
class ScoreSummary:
    """``summary.json`` of a `pav score` run."""
    STAGES = ("score",)
    solutions: int
    scores: str  # the scores.jsonl file


@dataclass(frozen=True)
class StepScores:
    """Scores of one solution; arrays are (H,), step h at index h − 1."""

    v_base: float  # V̂^π of the question-only prefix
    q_base: np.ndarray
    q_prover: np.ndarray
    adv_prover: np.ndarray
    outcome: float
    verifier_tokens: int = 0

    def effective_reward(self, alpha: float) -> np.ndarray:
        return effective_reward(self.q_base, self.adv_prover, alpha)


class Scorer(Protocol):
    def score(self, prompts: Sequence[str], steps_list: Sequence[Sequence[str]]) -> list[StepScores]:
        ...


def extending_prefixes(scorer: Scorer) -> AbstractContextManager:
    """``scorer.extending_prefixes()`` where the scorer has one (`VerifierScorer`: inside it, a
    solution that extends one of the last call's is read from where that one ended,
    `pav.verifier.extend`), else a no-op."""
    extend = getattr(scorer, "extending_prefixes", None)
    return extend() if extend is not None else nullcontext()


class VerifierScorer:
    """PQV (+ Best-of-K prover or a prover verifier) (+ ORM) as a `Scorer`."""

    def __init__(self, pqv: ValueVerifier, *, k: int | None = 4, prover: ValueVerifier | None = None,
                 orm: ValueVerifier | None = None, batch_size: int = 32) -> None:
        if (k is None) == (prover is None):
            raise ValueError("give exactly one prover: a Best-of-K size k, or a prover verifier")
        if k is not None and k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.pqv, self.k, self.prover, self.orm, self.batch_size = pqv, k, prover, orm, batch_size
        self._stores: dict[int, Store] | None = None  # per model (by id), inside extending_prefixes()

    @contextmanager
    def extending_prefixes(self) -> Iterator[None]:
        """Inside: each model keeps the KV of the solutions one call scored, and the next call reads
        only what its solutions add to them (`pav.verifier.extend`). Outputs are the same, up to
        floating-point rounding; ``verifier_tokens``
        still counts every token of every solution, as the compute accounting defines it."""
        self._stores = {}
        try:
            yield
        finally:
            self._stores = None

    def score(self, prompts: Sequence[str], steps_list: Sequence[Sequence[str]]) -> list[StepScores]:
        return self._score(len(prompts), lambda model: model.encode_many(prompts, steps_list))

    def reads_ids_of(self, tokenizer: Any) -> bool:
        """Whether `score_ids` may take ``tokenizer``'s ids: every model has its vocabulary (and the PQV's delimiter)."""
        vocab = tokenizer.get_vocab()
        return all(m.tokenizer.get_vocab() == vocab and m.delimiter == self.pqv.delimiter
                   for m in (self.pqv, self.prover, self.orm) if m is not None)

    def score_ids(self, prompts: Sequence[str], completion_ids: Sequence[Sequence[int]]
                  ) -> tuple[list[list[str]], list[StepScores]]:
        """(steps, scores) of completions given as token ids, read without tokenising their text again
        (`pav.verifier.model.encode_completions`; the ids' tokenizer must pass `reads_ids_of`)."""
        pqv = self.pqv.encode_ids(prompts, completion_ids)

        def encode(model: ValueVerifier) -> list[Encoded]:
            return [e for _, e in (pqv if model is self.pqv else model.encode_ids(prompts, completion_ids))]

        return [steps for steps, _ in pqv], self._score(len(prompts), encode)

    def _score(self, n: int, encode: Callable[[ValueVerifier], list[Encoded]]) -> list[StepScores]:
        tokens = np.zeros(n, dtype=np.int64)

        def values(model: ValueVerifier) -> list[np.ndarray]:  # (H + 1,) each
            encoded = encode(model)
            tokens[:] += [len(e.input_ids) for e in encoded]
            if self._stores is not None:
                found, self._stores[id(model)] = extend_values(model, encoded, self._stores.get(id(model), {}),
                                                               self.batch_size)
            else:
                found = model.values_of(encoded, self.batch_size)
            return _full(found, [e.n_prefixes - 1 for e in encoded])

        v_pi = values(self.pqv)
        if self.prover is not None:
            v_mu = values(self.prover)
        else:
            v_mu = _split(_bok_keep_nan(np.concatenate(v_pi), self.k), v_pi) if v_pi else []  # one vectorised call
        finals = [v[-1] for v in values(self.orm)] if self.orm is not None else [v[-1] for v in v_pi]
        return [StepScores(float(vp[0]), vp[1:], vm[1:], advantages_from_prefix_values(vm), float(f), int(t))
                for vp, vm, f, t in zip(v_pi, v_mu, finals, tokens)]


class MixedScorer:
    """A `Scorer` with ``base``'s Q^π and outcome and ``prover``'s Q^μ and A^μ: a PQV of π beside a
    prover's own verifier (trained on μ's rollouts) or exact values (`pav.verifier.exact`). Verifier
    tokens are the sum of both."""

    def __init__(self, base: Scorer, prover: Scorer) -> None:
        self.base, self.prover = base, prover

    @contextmanager
    def extending_prefixes(self) -> Iterator[None]:
        """`extending_prefixes` of both scorers."""
        with ExitStack() as stack:
            for scorer in (self.base, self.prover):
                stack.enter_context(extending_prefixes(scorer))
            yield

    def score(self, prompts: Sequence[str], steps_list: Sequence[Sequence[str]]) -> list[StepScores]:
        return [dataclasses.replace(b, q_prover=m.q_prover, adv_prover=m.adv_prover,
                                    verifier_tokens=b.verifier_tokens + m.verifier_tokens)
                for b, m in zip(self.base.score(prompts, steps_list), self.prover.score(prompts, steps_list), strict=True)]


def _bok_keep_nan(v: np.ndarray, k: int) -> np.ndarray:
    """Best-of-K values of ``v``, NaN (a prefix past the verifier's window) kept as NaN."""
    return best_of_k(np.nan_to_num(v, nan=0.0), k) + np.where(np.isnan(v), np.nan, 0.0)


def _split(flat: np.ndarray, like: list[np.ndarray]) -> list[np.ndarray]:
    """``flat`` cut into pieces of the lengths of ``like``."""
    return np.split(flat, np.cumsum([len(v) for v in like])[:-1]) if like else []


def _full(values: list[np.ndarray], n_steps: list[int]) -> list[np.ndarray]:
    """Pad each solution's values to H + 1 with NaN where the verifier's window cut it."""
    out = []
    for v, h in zip(values, n_steps):
        full = np.full(h + 1, np.nan)
        full[: len(v)] = v
        out.append(full)
    return out
