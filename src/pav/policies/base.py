"""The `Policy` protocol: sample steps or whole solutions from text contexts.

A policy is task-agnostic. A *context* is a prompt plus the steps written so far, as one string;
steps are separated by a delimiter (``"\\n"`` by default). ``sample`` continues every context ``n``
times, either by one step (``until="step"``, used to propose candidate next steps a_h) or to the
end of a solution (``until="solution"``, used for Monte-Carlo rollouts from a prefix s_h).

The stop rule lives here as a pure function, `scan_steps`, so every backend (transformers, a toy
policy, vLLM) stops rows in exactly the same way; where a step ends is `pav.core.steps`' rule (a
blank line never becomes a step). No torch at import.

Over-long steps. With ``max_step_chars`` (the task's, `pav.tasks.base.Task`), a row's text is cut
at its first step that reaches that many characters (counted as `pav.core.steps.split_steps` returns
it, the blank lines it starts with included), exactly that many characters in: the cut step has no
delimiter, so it is the solution's last (beam search ends a candidate without a delimiter, eval-policy
counts it as an over-long step), and the row is a budget cut (``finished=False``), like
``max_new_tokens``. `cut_over_long` applies it to every finished row of every backend, after the
stop rule; ``n_tokens`` then counts the fewest tokens whose text covers the cut, and what was
sampled past the cut is discarded, as vLLM's rows already are. The limit never stops a row earlier
than the stop rule would, so the other rows of a call draw exactly what they draw without it (with
one seed for a whole call, a row that left earlier would shift the shared generator's draws), and a
row whose steps stay shorter is not touched.
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
    when a budget cut it (``max_new_tokens``, the model's context window, ``max_steps``, or a step
    that reached ``max_step_chars``).
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
        max_step_chars: int | None = None,
    ) -> SampleBatch:
        """Continue each context ``n`` times.

        ``until="step"``: a row stops right after its first delimiter (included in the text).
        ``until="solution"``: a row stops after a completed step line (delimiter stripped) for
        which ``is_final_step(line)`` is true, or after ``max_steps`` delimiters. In both modes a
        row also stops at eos or after ``max_new_tokens`` tokens. Its text then ends at its first step
        that reaches ``max_step_chars`` characters, cut there (`cut_over_long`; None: no limit; pav's
        stages pass the task's). ``temperature=0`` is argmax.
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


def over_long_end(text: str, delimiter: str, max_step_chars: int) -> int | None:
    """Where the over-long-step rule cuts ``text``: ``max_step_chars`` characters into its first step
    (completed or not, its leading blank lines included) of that many characters or more; None: no
    step is that long."""
    steps, rest = complete_steps(text, delimiter)
    start = 0
    for step in steps:
        if len(step) >= max_step_chars:
            return start + max_step_chars
        start += len(step) + len(delimiter)
    return start + max_step_chars if len(rest) >= max_step_chars else None


def tokens_covering(decode: Callable[[list[int]], str], token_ids: Sequence[int], n_chars: int) -> int:
    """The fewest leading tokens of ``token_ids`` whose decoded text is ``n_chars`` characters or more."""
    ids = list(token_ids)
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(ids[:mid])) >= n_chars:
            hi = mid
        else:
            lo = mid + 1
    return lo


def cut_over_long(generation: Generation, token_ids: Sequence[int], *, delimiter: str, max_step_chars: int | None,
                  decode: Callable[[list[int]], str]) -> Generation:
    """A finished row after the over-long-step rule (module docstring): unchanged unless a step of
    its text reaches ``max_step_chars`` characters (None: no limit); else its text up to the cut, the
    fewest of ``token_ids`` (the tokens the row sampled) whose ``decode`` covers it, and a budget cut."""
    end = None if max_step_chars is None else over_long_end(generation.text, delimiter, max_step_chars)
    if end is None:
        return generation
    return Generation(generation.text[:end], tokens_covering(decode, token_ids, end), False)


def check_sample_args(
    n: int, until: str, max_steps: int, max_new_tokens: int, temperature: float, top_p: float,
    max_step_chars: int | None = None,
) -> None:
    """Raise ValueError on arguments that no backend can honour."""
    if until not in ("step", "solution"):
        raise ValueError(f"until must be 'step' or 'solution', got {until!r}")
    if n < 1 or max_steps < 1 or max_new_tokens < 1:
        raise ValueError(f"n, max_steps and max_new_tokens must be >= 1, got {n}, {max_steps}, {max_new_tokens}")
    if max_step_chars is not None and max_step_chars < 1:
        raise ValueError(f"max_step_chars must be >= 1 (or None: no limit), got {max_step_chars}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = argmax), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
