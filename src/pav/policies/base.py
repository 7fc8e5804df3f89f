"""The `Policy` protocol: sample steps or whole solutions from text contexts.

A policy is task-agnostic. A *context* is a prompt plus the steps written so far, as one string;
steps are separated by a delimiter (``"\\n"`` by default). ``sample`` continues every context ``n``
times, either by one step (``until="step"``, used to propose candidate next steps a_h) or to the
end of a solution (``until="solution"``, used for Monte-Carlo rollouts from a prefix s_h).

The stop rule lives here as a pure function, `scan_steps`, so every backend (transformers, a toy
policy, vLLM) stops rows in exactly the same way; where a step ends is `pav.core.steps`' rule (a
blank line never becomes a step). No torch at import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol, runtime_checkable

from pav.core.steps import complete_steps

Until = Literal["step", "solution"]


class PolicyLoadError(RuntimeError):
    """A policy (model or tokenizer) could not be loaded."""


@dataclass(frozen=True)
class Generation:
    """One sampled continuation of a context.

    ``text`` is the decoded continuation (never the context, never an eos token); ``n_tokens``
    counts the sampled tokens, an eos included; ``finished`` is True when the row stopped by its
    stop rule (a delimiter in ``step`` mode, a final step in ``solution`` mode) or by eos, and False
    when a budget cut it (``max_new_tokens``, the model's context window, or ``max_steps``).
    """

    text: str
    n_tokens: int
    finished: bool


@dataclass(frozen=True)
class SampleBatch:
    """The result of one `Policy.sample` call.

    ``generations[c][r]`` is rollout r of context c; ``prompt_tokens`` counts the tokens of the
    distinct contexts actually encoded (each once, however many rollouts share it);
    ``generated_tokens`` counts sampled tokens over all rows (no padding).
    """

    generations: list[list[Generation]]  # (C, R)
    prompt_tokens: int
    generated_tokens: int
    seconds: float

    @property
    def texts(self) -> list[list[str]]:
        return [[g.text for g in row] for row in self.generations]


@runtime_checkable
class Policy(Protocol):
    """A sampler over text. See the module docstring for what contexts and steps are."""

    policy_id: str

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
    ) -> SampleBatch:
        """Continue each context ``n`` times.

        ``until="step"``: a row stops right after its first delimiter (included in the text).
        ``until="solution"``: a row stops after a completed step line (delimiter stripped) for
        which ``is_final_step(line)`` is true, or after ``max_steps`` delimiters. In both modes a
        row also stops at eos or after ``max_new_tokens`` tokens. ``temperature=0`` is argmax.
        ``seed``: an int seeds the whole call; a sequence gives one seed per context, and then
        rollout r of context c depends on (seed[c], r) only, not on the other contexts of the call
        (step-level beam search relies on this); None is nondeterministic.
        """
        ...


def reusing_prefixes(policy: Policy) -> AbstractContextManager:
    """``policy.reuse_prefixes()`` where the policy has one (`pav.policies.hf.HFPolicy`: its
    step-mode calls extend the last call's rows instead of encoding contexts again), else a no-op."""
    reuse = getattr(policy, "reuse_prefixes", None)
    return reuse() if reuse is not None else nullcontext()


def context_tokens(policy: Policy, texts: Sequence[str]) -> list[int]:
    """Tokens of each context as the policy encodes it, in one call of its ``count_tokens``
    (a policy without one: characters)."""
    count = getattr(policy, "count_tokens", None)
    if not texts:
        return []
    return [int(n) for n in count(texts)] if count else [len(t) for t in texts]


class StepScan(NamedTuple):
    """What `scan_steps` found in a row's generated text."""

    end: int | None  # cut the text at text[:end] (just after a delimiter); None: keep going
    finished: bool  # the stop was the stop rule, not the max_steps budget
    n_steps: int  # completed step lines seen (scanning resumes from here next time)


def scan_steps(
    text: str,
    steps_seen: int,
    *,
    until: Until,
    delimiter: str,
    max_steps: int,
    is_final_step: Callable[[str], bool] | None,
) -> StepScan:
    """Apply the stop rule to the completed step lines of ``text`` from line ``steps_seen`` on.

    Incremental: a backend calls it each time a row emits a delimiter and passes the returned
    ``n_steps`` back, so ``is_final_step`` sees every line once.
    """
    lines, _ = complete_steps(text, delimiter)  # completed steps; a blank line starts the next one
    end = sum(len(line) + len(delimiter) for line in lines[:steps_seen])
    for k in range(steps_seen, len(lines)):
        end += len(lines[k]) + len(delimiter)
        if until == "step" or (is_final_step is not None and is_final_step(lines[k])):
            return StepScan(end, True, k + 1)
        if k + 1 >= max_steps:
            return StepScan(end, False, k + 1)
    return StepScan(None, False, len(lines))


def check_sample_args(
    n: int, until: str, max_steps: int, max_new_tokens: int, temperature: float, top_p: float
) -> None:
    """Raise ValueError on arguments that no backend can honour."""
    if until not in ("step", "solution"):
        raise ValueError(f"until must be 'step' or 'solution', got {until!r}")
    if n < 1 or max_steps < 1 or max_new_tokens < 1:
        raise ValueError(f"n, max_steps and max_new_tokens must be >= 1, got {n}, {max_steps}, {max_new_tokens}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = argmax), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
