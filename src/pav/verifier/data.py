"""Verifier training data from a labelling run directory (`pav label`, the paper, §4.2 and App. D).

A label run holds ``problems.jsonl``, ``solutions/shard-*.jsonl`` and
``labels/shard-*.parquet`` (a shard is finished once its labels file exists). This module meets
the labelling job only through those files.

- PQV view (``view="pqv"``): one example per labelled solution = (prompt, steps, labelled
  prefix_lens, targets Q̂ = n_correct / n_rollouts, weights, n_rollouts). The verifier learns
  ``Q^π`` of the rollout policy; Best-of-K values are derived from its outputs later (§4.5), never
  applied to the targets here. The complete solution's label (its checked outcome as one
  zero-length rollout) is a target like any other.
- ORM view (``view="orm"``): one target per complete solution = its outcome, read at the last step.
- Prompts are those the label run stored in its ``problems.jsonl`` (built-in task runs without
  them: rendered again), matched by problem_id; a label run without the file is an error.

Rejected at load, counted by reason and logged in one warning (they never reach a tensor): label
rows with a missing, non-finite or non-integral count (integral floats are read as ints), ``n_rollouts < 1``, ``n_correct < 0`` or
``> n_rollouts``, a prefix_len outside ``0..len(steps)``, a solution_id with no solution record,
a problem_id that disagrees with the solution's, or a repeated (solution_id, prefix_len).

Held-out split (a choice): by a BLAKE2b hash of the problem's *question text* mapped to [0, 1), not
of its problem_id: ``ModReach.problems`` can repeat a question under two ids (index suffix), and
hashing the text keeps both copies on the same side.

Class-balanced sampling (§4.4: buckets Q̂ < 0.5 and Q̂ ≥ 0.5). An example holds several prefixes,
so examples cannot be drawn "from one bucket". ``balanced_probs`` draws example i with probability
``p_i ∝ exp(θ · d_i)``, where ``d_i`` = (weight of i's prefixes with Q̂ < 0.5) − (weight of its
prefixes with Q̂ ≥ 0.5), and θ is solved (bisection; E_p[d] is increasing in θ) so that
``Σ_i p_i d_i = 0``: per drawn example, the two buckets carry equal expected loss weight. Among all
distributions with that property it is the closest to uniform (minimum KL), so no example is
dropped. If one bucket is empty the draw is uniform (with a warning); if every example leans the
same way, balance is impossible and ``balanced_probs`` raises. Draws are i.i.d. with replacement
from a numpy Generator whose state is the sampler's resumable position.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Literal

import numpy as np

from pav.core.records import Problem, RecordError, Solution, StepLabel, check_schema_version
from pav.core.labelrun import label_files, read_problems, read_solutions
from pav.core.rundir import readable_run

log = logging.getLogger(__name__)

Q_SPLIT = 0.5  # bucket boundary of class-balanced sampling (§4.4)


@dataclass(frozen=True)
class VerifierExample:
    """One solution with its labelled prefixes; the per-prefix tuples are aligned."""

    problem_id: str
    solution_id: str
    prompt: str
    steps: tuple[str, ...]
    prefix_lens: tuple[int, ...]  # labelled prefixes, increasing; 0 = question only
    targets: tuple[float, ...]  # Q̂ = n_correct / n_rollouts (PQV) or the outcome (ORM)
    weights: tuple[float, ...]
    n_rollouts: tuple[int, ...]

    def __post_init__(self) -> None:
        n = len(self.prefix_lens)
        if not n or {len(self.targets), len(self.weights), len(self.n_rollouts)} != {n}:
            raise ValueError(f"{self.solution_id}: need aligned, non-empty per-prefix tuples")
        if list(self.prefix_lens) != sorted(set(self.prefix_lens)) or not 0 <= self.prefix_lens[0] \
                or self.prefix_lens[-1] > len(self.steps):
            raise ValueError(f"{self.solution_id}: prefix_lens must increase within 0..{len(self.steps)}")
        values = (*self.targets, *self.weights)
        if not all(math.isfinite(v) for v in values) or not all(0 <= t <= 1 for t in self.targets) \
                or min(self.weights) < 0:
            raise ValueError(f"{self.solution_id}: targets must lie in [0, 1] and weights be finite, >= 0")


# ------------------------------------------------------------------------------ reading a run


def load_examples(run_dir: str | Path, view: Literal["pqv", "orm"] = "pqv"
                  ) -> tuple[list[VerifierExample], dict[str, int]]:
    """Examples of a label run and the count of rejected label rows per reason."""
    run_dir = readable_run(run_dir, "labels")  # the stages check it is a label run of this schema
    problems, task = _rebuild_problems(run_dir)
    solutions = _read_solutions(run_dir)
    if view == "orm":
        return _non_empty(orm_examples(solutions, problems, task), run_dir), {}
    if view != "pqv":
        raise ValueError(f"view must be 'pqv' or 'orm', got {view!r}")
    rows, rejected = _read_label_rows(run_dir)
    examples = _non_empty(pqv_examples(rows, solutions, problems, task, rejected), run_dir)
    if rejected:
        log.warning("verifier data: rejected %d label rows of %s (%s)", sum(rejected.values()), run_dir,
                    ", ".join(f"{n} {why}" for why, n in sorted(rejected.items())))
    log.info("verifier data: %d examples, %d labelled prefixes from %s", len(examples),
             sum(len(e.prefix_lens) for e in examples), run_dir)
    return examples, dict(rejected)


def _non_empty(examples: list[VerifierExample], run_dir: Path) -> list[VerifierExample]:
    if not examples:
        raise ValueError(f"labels: {run_dir} holds no usable labelled solutions; label more problems "
                         "(pav label --set problems=N) or check its rejected rows")
    return examples


def _rebuild_problems(run_dir: Path) -> tuple[dict[str, Problem], Any]:
    """The run's problems from its ``problems.jsonl`` and what renders their prompts (the prompts
    a label run stored, or the built-in task's for older runs)."""
    from pav.tasks.build import prompt_of

    return {p.problem_id: p for p in read_problems(run_dir)}, SimpleNamespace(prompt=prompt_of)


def label_run_delimiter(run_dir: str | Path) -> str:
    """The step delimiter of a label run's problems (one for the whole run)."""
    from pav.tasks.build import delimiter_of

    problems, _ = _rebuild_problems(Path(run_dir))
    found = {delimiter_of(p) for p in problems.values()}
    if len(found) > 1:
        raise ValueError(f"{run_dir} mixes step delimiters {sorted(found)}")
    return found.pop() if found else "\n"


def _read_solutions(run_dir: Path) -> dict[str, Solution]:
    """Solutions of finished shards (those whose labels file exists), by solution_id."""
    return {s.solution_id: s for s in read_solutions(run_dir, finished=True)}


def _read_label_rows(run_dir: Path) -> tuple[list[StepLabel], Counter[str]]:
    """Every valid label row of every shard; invalid rows are counted by reason, not raised."""
    import pyarrow.parquet as pq

    rows: list[StepLabel] = []
    rejected: Counter[str] = Counter()
    for path in label_files(run_dir):
        table = pq.read_table(path)
        meta = table.schema.metadata or {}
        version = meta.get(b"pav.schema_version", b"").decode()
        check_schema_version(int(version) if version.isdigit() else None, where=str(path))
        if meta.get(b"pav.kind", b"").decode() != StepLabel.KIND:
            raise RecordError(f"{path}: does not hold step labels")
        header = {"schema_version": int(version), "kind": StepLabel.KIND}
        for raw in table.to_pylist():
            row, why = clean_label_row(raw)
            if why is None:
                try:
                    rows.append(StepLabel.from_dict({**header, **row}))
                    continue
                except RecordError:
                    why = "malformed record"
            rejected[why] += 1
    return rows, rejected


def clean_label_row(row: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """The row with integral float counts made ints, and why it cannot be a label (None if it can)."""
    row = dict(row)
    for name in ("prefix_len", "n_correct", "n_rollouts"):
        value = row.get(name)
        if value is None:
            return row, f"missing {name}"
        if isinstance(value, float) and not math.isfinite(value):
            return row, f"non-finite {name}"
        if isinstance(value, float) and value.is_integer():
            row[name] = value = int(value)  # a foreign writer's float64 column
        if isinstance(value, bool) or not isinstance(value, int):
            return row, f"non-integer {name}"
    if row["n_rollouts"] < 1:
        return row, "n_rollouts < 1"
    if row["n_correct"] < 0 or row["prefix_len"] < 0:
        return row, "negative count"
    if row["n_correct"] > row["n_rollouts"]:
        return row, "n_correct > n_rollouts"
    return row, None


def pqv_examples(labels: Sequence[StepLabel], solutions: dict[str, Solution], problems: dict[str, Problem],
                 task: Any, rejected: Counter[str]) -> list[VerifierExample]:
    """Group valid labels by solution into examples; impossible ones are added to ``rejected``."""
    grouped: dict[str, dict[int, StepLabel]] = {}
    for lab in labels:
        sol = solutions.get(lab.solution_id)
        why = ("unknown solution_id" if sol is None else
               "problem_id differs from the solution's" if sol.problem_id != lab.problem_id else
               "prefix_len beyond the solution" if lab.prefix_len > len(sol.steps) else
               "repeated (solution_id, prefix_len)" if lab.prefix_len in grouped.get(lab.solution_id, {}) else
               None)
        if why:
            rejected[why] += 1
        else:
            grouped.setdefault(lab.solution_id, {})[lab.prefix_len] = lab
    examples = []
    for sid, by_h in grouped.items():
        sol = solutions[sid]
        hs = sorted(by_h)
        examples.append(VerifierExample(
            sol.problem_id, sid, task.prompt(_problem(problems, sol.problem_id)), sol.steps, tuple(hs),
            tuple(by_h[h].n_correct / by_h[h].n_rollouts for h in hs), (1.0,) * len(hs),
            tuple(by_h[h].n_rollouts for h in hs)))
    return examples


def orm_examples(solutions: dict[str, Solution], problems: dict[str, Problem], task: Any) -> list[VerifierExample]:
    """One target per complete solution: its outcome, read after the last step."""
    out, ungraded = [], 0
    for sol in solutions.values():
        if sol.outcome is None:
            ungraded += 1
            continue
        out.append(VerifierExample(sol.problem_id, sol.solution_id, task.prompt(_problem(problems, sol.problem_id)),
                                   sol.steps, (len(sol.steps),), (sol.outcome,), (1.0,), (1,)))
    if ungraded:
        log.warning("verifier data: %d solutions without an outcome left out of the ORM view", ungraded)
    return out


def _problem(problems: dict[str, Problem], problem_id: str) -> Problem:
    try:
        return problems[problem_id]
    except KeyError:
        raise ValueError(f"problem {problem_id!r} is not among the problems the run's config.toml "
                         "rebuilds; was the run made with another task config?") from None


# ------------------------------------------------------------------------------ split and sampling


def heldout_share(question: str, seed: int = 0) -> float:
    """A stable number in [0, 1) for a question (BLAKE2b, not Python's salted hash)."""
    digest = hashlib.blake2b(f"{seed}|{question}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_heldout(examples: Sequence[VerifierExample], fraction: float, seed: int = 0
                  ) -> tuple[list[VerifierExample], list[VerifierExample]]:
    """(train, heldout): a problem's examples all land on one side, chosen by its question's hash."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"heldout fraction must be in [0, 1), got {fraction}")
    train, heldout = [], []
    for ex in examples:
        (heldout if heldout_share(ex.prompt, seed) < fraction else train).append(ex)
    return train, heldout


def bucket_mass(examples: Sequence[VerifierExample]) -> np.ndarray:
    """(N, 2): weight of each example's prefixes with Q̂ < 0.5 and with Q̂ >= 0.5."""
    out = np.zeros((len(examples), 2))
    for i, ex in enumerate(examples):
        for t, w in zip(ex.targets, ex.weights):
            out[i, int(t >= Q_SPLIT)] += w
    return out


def balanced_probs(examples: Sequence[VerifierExample]) -> np.ndarray:
    """Example probabilities under which both buckets carry equal expected mass (module docstring)."""
    mass = bucket_mass(examples)
    d = mass[:, 0] - mass[:, 1]  # (N,) low minus high
    if not (mass[:, 0].sum() > 0 and mass[:, 1].sum() > 0):
        log.warning("class-balanced sampling: one Q̂ bucket is empty; drawing uniformly")
        return np.full(len(examples), 1 / len(examples))
    if not (d.min() < 0 < d.max()) and not np.all(d == 0):
        raise ValueError("class-balanced sampling is impossible: every example has more prefixes in the "
                         "same Q̂ bucket; train without balancing")
    lo, hi = -50.0 / np.abs(d).max(), 50.0 / np.abs(d).max()
    for _ in range(200):
        theta = (lo + hi) / 2
        lo, hi = (theta, hi) if _tilted(d, theta) @ d < 0 else (lo, theta)
    p = _tilted(d, (lo + hi) / 2)
    log.info("class-balanced sampling: theta %.3g, effective examples %.0f of %d",
             (lo + hi) / 2, 1 / np.sum(p**2), len(p))
    return p


def _tilted(d: np.ndarray, theta: float) -> np.ndarray:
    z = theta * d
    p = np.exp(z - z.max())
    return p / p.sum()


class ExampleSampler:
    """I.i.d. draws of example indices from ``probs``; its state is the resumable data position."""

    def __init__(self, probs: np.ndarray, seed: int) -> None:
        self.probs = np.asarray(probs, dtype=np.float64)
        if self.probs.ndim != 1 or not len(self.probs) or not np.all(np.isfinite(self.probs)) \
                or self.probs.min() < 0 or not math.isclose(self.probs.sum(), 1.0, rel_tol=1e-9):
            raise ValueError("probs must be a non-empty, finite probability vector")
        self.rng = np.random.default_rng(seed)
        self.drawn = 0

    def draw(self, n: int) -> np.ndarray:
        """(n,) example indices."""
        self.drawn += n
        return self.rng.choice(len(self.probs), size=n, p=self.probs)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state, "drawn": self.drawn, "n": len(self.probs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["n"] != len(self.probs):
            raise ValueError(f"sampler state is for {state['n']} examples, not {len(self.probs)}")
        self.rng.bit_generator.state = state["rng"]
        self.drawn = state["drawn"]
