"""Step-level beam search with the effective reward (the paper, §4.1 and App. C), batched across problems.

Per problem: the beam starts as B copies of the question. At each depth every prefix in the beam
gets C candidate next steps from the policy (one step = text up to the delimiter); every candidate is
scored by the effective reward ``Q̂^π + α·Â^μ`` of its last step (α = 0: the PQV's Q̂^π, the
Snell et al. baseline); the top candidates are kept. All problems' beams advance together: one
sampler call and one scorer call per depth.

Choices where the paper is silent (the paper does not specify them; we follow Snell et al.):
- The first depth samples B·C first steps from the question (B copies of the single initial
  state; Snell et al. start from N first-step samples). Starting from one state, a beam of width
  128 with C = 3 would fill only after five depths, longer than most solutions here.
- A candidate is *complete* when its step is a final step (`Task.is_final_step`), when the policy
  stopped without a delimiter (eos or the step-token budget: it cannot continue), at
  ``max_steps`` steps, or when it fills the policy's context window (``policy.max_positions``). Complete candidates that make the top ranks are set aside; the others form
  the next beam. At each depth only ``width − (solutions set aside)`` candidates are kept, so the
  search ends when ``width`` complete solutions exist (or at ``max_steps``, where every candidate
  is complete). The beam never holds more than ``width`` prefixes.
- Identical candidates of one problem at one depth are merged before ranking (``dedup``). On
  free-text maths two sampled steps are rarely identical; on a task with a small step vocabulary,
  such as the built-in one, copies would otherwise fill the beam with one state.
- The final answer is the complete solution with the highest PQV value of its last prefix (the
  PQV repurposed as ORM, as the paper does). The sampled candidates of every prefix are paid for
  whether kept or not (`pav.core.compute`).

Prefix reuse: the policy keeps the KV states of each depth's sampled steps, and the next depth
encodes only the delimiter a kept candidate adds (`pav.policies.prefix_store`); a forked beam's
children read one copy of their parent's prefix. The scorer does the same: a candidate's values are
computed from its parent's KV and its new step's tokens (`pav.verifier.extend`).

The collector: a search allocates many small objects per depth (candidates, texts, token lists),
which triggers full collections of Python's cyclic garbage collector, and each would scan every
object the process already holds (~365k once transformers and a model are loaded). The search
freezes those for its duration (`gc.freeze`, undone at its end; not where the caller has frozen
objects itself): 12–17% less time for a batched search of 30 problems on the built-in model.

Randomness: candidate j of beam prefix i of a problem at depth d comes from the sampler's keyed
noise with seed ``derive_seed(seed, problem_id, d, i)``, so searching one problem at a time gives
exactly what the batched search gives (up to floating-point differences in logits and scores).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from pav.core.compute import Compute
from pav.core.records import Problem
from pav.core.seeding import derive_seed
from pav.policies.base import Policy, context_tokens, reusing_prefixes
from pav.tasks.base import Task, join_steps
from pav.verifier.scorer import Scorer, extending_prefixes


@dataclass(frozen=True)
class BeamSettings:
    """One search's settings; no defaults: `pav.search.stage.SearchConfig` holds them."""

    width: int  # B: beam width = complete solutions wanted = N on the paper's x-axis
    candidates: int  # C: next steps sampled per beam prefix
    alpha: float  # α of Q̂^π + α·Â^μ
    max_steps: int  # depth limit: a prefix with this many steps is complete
    step_tokens: int  # token budget of one step
    temperature: float
    top_p: float
    dedup: bool  # merge identical candidates of a problem at a depth

    def __post_init__(self) -> None:
        if self.width < 1 or self.candidates < 1 or self.max_steps < 1 or self.step_tokens < 1:
            raise ValueError("width, candidates, max_steps and step_tokens must be >= 1")


@dataclass
class BeamResult:
    problem_id: str
    steps: tuple[str, ...]  # the chosen solution
    score: float  # its PQV value (the outcome estimate that chose it)
    complete: list[tuple[tuple[str, ...], float]]  # every complete solution and its PQV value
    depth: int  # depths searched
    compute: Compute = field(default_factory=Compute)


@dataclass
class _Candidate:
    steps: tuple[str, ...]
    complete: bool
    tokens: int | None = None  # tokens of prompt + steps as the policy encodes them, once counted


class _ProblemBeam:
    """One problem's beam: prefixes to expand and complete solutions set aside."""

    def __init__(self, problem: Problem, prompt: str) -> None:
        self.problem, self.prompt = problem, prompt
        self.beam: list[_Candidate] = [_Candidate((), False)]
        self.complete: list[tuple[tuple[str, ...], float]] = []
        self.compute = Compute()
        self.depth = 0

    def keep(self, candidates: list[_Candidate], rewards: np.ndarray, q_last: np.ndarray, width: int) -> None:
        """Top ``width − len(complete)`` candidates by effective reward: complete ones set aside,
        the rest become the beam. NaN rewards rank last; ties keep sampling order."""
        order = np.argsort(-np.where(np.isnan(rewards), -np.inf, rewards), kind="stable")
        kept = order[: width - len(self.complete)]
        self.complete += [(candidates[i].steps, float(q_last[i])) for i in kept if candidates[i].complete]
        self.beam = [candidates[i] for i in kept if not candidates[i].complete]

    def result(self) -> BeamResult:
        if self.complete:
            q = np.array([v for _, v in self.complete])
            best = int(np.argmax(np.where(np.isnan(q), -np.inf, q)))
            steps, score = self.complete[best]
        else:  # nothing complete: no candidate survived (cannot happen with width >= 1)
            steps, score = (), float("nan")
        return BeamResult(self.problem.problem_id, steps, score, self.complete, self.depth, self.compute)


def _candidates(task: Task, prefix: tuple[str, ...], texts: Sequence[str], max_steps: int) -> list[_Candidate]:
    """Sampled step texts → candidate prefixes; a text without its delimiter ends the solution."""
    delim = task.step_delimiter
    out = []
    for text in texts:
        ended = not text.endswith(delim)  # eos or the step budget: the policy cannot go on from here
        step = text if ended else text[: -len(delim)]
        steps = prefix + (step,)
        out.append(_Candidate(steps, ended or task.is_final_step(step) or len(steps) >= max_steps))
    return out


def _unique(candidates: list[_Candidate]) -> list[_Candidate]:
    """The first of each set of identical candidates, in sampling order."""
    seen: set[tuple[str, ...]] = set()
    out = []
    for c in candidates:
        if c.steps not in seen:
            seen.add(c.steps)
            out.append(c)
    return out


def beam_search(policy: Policy, scorer: Scorer, task: Task, problems: Sequence[Problem],
                settings: BeamSettings, seed: int, on_depth: Callable[[], None] | None = None) -> list[BeamResult]:
    """Search every problem; all beams advance together (see the module docstring). ``on_depth``
    is called after each depth (a progress bar). The policy extends each kept prefix's KV cache by
    its chosen step instead of encoding the prefix again (`reusing_prefixes`), and the scorer reads
    only each candidate's new step after its kept parent (`extending_prefixes`)."""
    with reusing_prefixes(policy), extending_prefixes(scorer), _frozen_heap():
        return _search(policy, scorer, task, problems, settings, seed, on_depth)


@contextlib.contextmanager
def _frozen_heap() -> Iterator[None]:
    """The objects alive on entry leave the cyclic collector's scans until the block ends (module
    docstring); where the caller froze objects itself, nothing changes (unfreezing would undo it)."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _search(policy: Policy, scorer: Scorer, task: Task, problems: Sequence[Problem], settings: BeamSettings,
            seed: int, on_depth: Callable[[], None] | None) -> list[BeamResult]:
    beams = [_ProblemBeam(p, task.prompt(p)) for p in problems]
    delim, window = task.step_delimiter, getattr(policy, "max_positions", None)
    for depth in range(settings.max_steps):
        active = [b for b in beams if b.beam]
        if not active:
            break
        expand = [(b, i, prefix) for b in active for i, prefix in enumerate(b.beam)]  # (problem, rank, prefix)
        contexts = [b.prompt + join_steps(prefix.steps, delim) for b, _, prefix in expand]
        n = settings.candidates * (settings.width if depth == 0 else 1)  # depth 0: B copies of the question
        batch = policy.sample(contexts, n, until="step", max_steps=1,
                              max_new_tokens=settings.step_tokens, temperature=settings.temperature,
                              top_p=settings.top_p, max_step_chars=task.max_step_chars,
                              seed=[derive_seed(seed, b.problem.problem_id, depth, i) for b, i, _ in expand])
        per_beam: dict[int, list[_Candidate]] = {id(b): [] for b in active}
        unknown = [c for (_, _, prefix), c in zip(expand, contexts) if prefix.tokens is None]
        counted = iter(context_tokens(policy, unknown))
        for (b, _, prefix), gens in zip(expand, batch.generations):
            encoded = prefix.tokens if prefix.tokens is not None else next(counted)
            b.compute.add(generated=sum(g.n_tokens for g in gens), encoded=encoded, samples=len(gens))
            per_beam[id(b)] += _candidates(task, prefix.steps, [g.text for g in gens], settings.max_steps)
        if settings.dedup:
            per_beam = {k: _unique(v) for k, v in per_beam.items()}
        if window is not None:  # a prefix that fills the policy's context window cannot go on
            todo = [(b, c) for b in active for c in per_beam[id(b)]]
            counts = context_tokens(policy, [b.prompt + join_steps(c.steps, delim) for b, c in todo])
            for (b, c), tokens in zip(todo, counts):
                c.tokens = tokens  # reused if expanded
                c.complete = c.complete or c.tokens >= window
        flat = [(b, c) for b in active for c in per_beam[id(b)]]
        scores = scorer.score([b.prompt for b, _ in flat], [c.steps for _, c in flat])  # one call per depth
        at = 0
        for b in active:
            n = len(per_beam[id(b)])
            mine = scores[at: at + n]
            at += n
            b.compute.add(scored=sum(s.verifier_tokens for s in mine))
            rewards = np.array([s.effective_reward(settings.alpha)[-1] for s in mine])
            b.keep(per_beam[id(b)], rewards, np.array([s.q_base[-1] for s in mine]), settings.width)
            b.depth = depth + 1
        if on_depth is not None:
            on_depth()
    return [b.result() for b in beams]
