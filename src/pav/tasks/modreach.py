"""ModReach-10: reach a target digit with the listed operations mod 10, within a step budget.

Implements the built-in task a tiny GPT-2 learns on a CPU (its design: docs/design.md):
- Problem: draw ``n_ops`` distinct ops from a pool (rejecting sets with two ops that act
  identically on Z_M), a target t, the shortest distance d* uniformly among those in
  [d_min, d_max] that occur, a start s at that distance, and a budget B = d* + slack. The prompt is
  ``"{s} to {t} mod 10 ops {op1} {op2} {op3} max {B}\\n"`` (33 characters for one-digit B).
- Steps, one line each: move ``{x}{op}{a}={y}``, restate ``{x} to {t}``, answer ``ans {y}``.
- Checker: follows the true state; a move or restate uses one step of the budget. The
  solution succeeds iff every line before the answer is valid and the answer is the target,
  reached within the budget. ``analyse`` labels every line (progress, no_progress, regress, error,
  answer_ok, answer_bad) and flags budget pits (after the line, the distance left exceeds the
  budget left).
- Noisy expert: ``demonstrate``; errors propagate because it continues from what it wrote.
  ``expert_values`` gives its exact chance of success after any prefix (dynamic programming over
  (state, budget used)): exact prover values for oracle ablations, as the didactic task has.

Choices where the design is silent:
- Parsing is strict: whole-line regular expressions over ASCII digits in canonical form (no
  leading zeros, no extra spaces); anything else is a malformed line. Nothing is ever evaluated.
- The solution ends at its first answer line; later lines are labelled ``after_answer`` and
  ignored. Lines after the first invalid line are labelled ``after_error``.
- The train/heldout split is a fixed property of the canonical problem (M, sorted ops, s, t): a
  BLAKE2b hash mapped to [0, 1) is compared with ``heldout_fraction``. ``problems`` draws i.i.d.
  from ``Random(seed)`` and keeps those of the requested split, so repeats are possible.
- The expert's arithmetic slip and its "optimal" move from a dead end use an allowed op drawn
  uniformly; an off-list op is drawn uniformly from the rest of the pool (a slip if none is left).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pav.core.config import knob
from pav.core.records import Problem
from pav.core.steps import split_steps
from pav.tasks.base import Split

logger = logging.getLogger(__name__)

POOLS: dict[str, tuple[str, ...]] = {
    "P12": tuple(f"+{a}" for a in range(1, 10)) + ("*2", "*3", "*5"),
    "P7": tuple(f"+{a}" for a in range(1, 6)) + ("*2", "*3"),
    "full": tuple(f"+{a}" for a in range(1, 10)) + tuple(f"*{a}" for a in range(2, 10)),
}

Label = Literal["progress", "no_progress", "regress", "error", "answer_ok", "answer_bad",
                "after_error", "after_answer"]

_NUM = r"(0|[1-9][0-9]{0,5})"  # canonical ASCII decimal, short enough for int() to be safe
_MOVE = re.compile(rf"{_NUM}([+*]){_NUM}={_NUM}")
_RESTATE = re.compile(rf"{_NUM} to {_NUM}")
_ANSWER = re.compile(rf"ans {_NUM}")
_QUESTION = re.compile(rf"{_NUM} to {_NUM} mod {_NUM} ops ((?:[+*][0-9]+ )*[+*][0-9]+) max {_NUM}")
_MAX_MISSES = 100_000  # consecutive rejected draws before `problems` gives up


@dataclass(frozen=True)
class ModReachConfig:
    modulus: int = knob(10, "M: states are 0..M-1 (M > 10 needs 2-digit states)")
    n_ops: int = knob(3, "distinct ops listed in each problem")
    op_pool: Literal["P12", "P7", "full"] = knob("P12", "op pool: P12 {+1..+9,*2,*3,*5}, "
                                                 "P7 {+1..+5,*2,*3}, full {+1..+9,*2..*9}")
    d_min: int = knob(3, "smallest shortest-path distance d* from start to target")
    d_max: int = knob(5, "largest shortest-path distance d*")
    slack: tuple[int, ...] = knob((1, 2, 3), "budget B = d* + slack, slack drawn uniformly")
    heldout_fraction: float = knob(0.2, "share of canonical problems (M, sorted ops, s, t) held out")
    p_err: float = knob(0.08, "expert: chance of an invalid line")
    p_restate: float = knob(0.10, "expert: chance of restating the goal")
    p_rand: float = knob(0.15, "expert: chance of a uniformly random allowed move")
    max_steps: int = knob(12, "samplers stop a solution after this many lines")
    max_step_chars: int = knob(16, "a sampled line that reaches this many characters is cut there and ends the "
                                   "solution (legal lines have at most 6 at M = 10)")

    def __post_init__(self) -> None:
        if self.modulus < 2:
            raise ValueError(f"modulus must be >= 2, got {self.modulus}")
        if not 1 <= self.n_ops <= len(POOLS[self.op_pool]):
            raise ValueError(f"n_ops must be in 1..{len(POOLS[self.op_pool])}, got {self.n_ops}")
        if not 1 <= self.d_min <= self.d_max:
            raise ValueError(f"need 1 <= d_min <= d_max, got {self.d_min} and {self.d_max}")
        if not self.slack or min(self.slack) < 0:
            raise ValueError(f"slack must be a non-empty tuple of ints >= 0, got {self.slack}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in (0, 1), got {self.heldout_fraction}")
        probs = (self.p_err, self.p_restate, self.p_rand)
        if min(probs) < 0 or sum(probs) > 1:
            raise ValueError(f"p_err, p_restate, p_rand must be >= 0 with sum <= 1, got {probs}")
        if self.max_steps < 1 or self.max_step_chars < 1:
            raise ValueError("max_steps and max_step_chars must be >= 1")


@dataclass(frozen=True)
class StepInfo:
    """The checker's view of one line.

    ``detail`` refines the label: restate / same_state / sideways (no_progress), dead_end
    (regress), malformed / wrong_x / op_not_listed / wrong_result / wrong_target (error),
    wrong_answer / over_budget (answer_bad); otherwise "". ``state`` and ``dist`` are the true
    state and its distance to the target after the line (``dist`` None = unreachable); both are
    None on error and later lines. ``used`` counts budget steps used after the line.
    """

    label: Label
    detail: str = ""
    budget_pit: bool = False
    state: int | None = None
    dist: int | None = None
    used: int = 0


@dataclass(frozen=True)
class StepAnalysis:
    """Per-line checker output and the verdict; ``reason`` is ok, invalid_step, wrong_answer,
    over_budget or no_answer."""

    steps: tuple[StepInfo, ...]
    first_error: int | None  # index of the first invalid line
    success: bool
    reason: str

    @property
    def labels(self) -> tuple[Label, ...]:
        return tuple(s.label for s in self.steps)


# ------------------------------------------------------------------------------ arithmetic


def apply_op(op: str, x: int, modulus: int) -> int:
    """``x op`` mod M for an op string like "+4" or "*3"."""
    a = int(op[1:])
    return (x + a) % modulus if op[0] == "+" else (x * a) % modulus


@functools.lru_cache(maxsize=65536)
def _distances(ops: tuple[str, ...], target: int, modulus: int) -> tuple[float, ...]:
    """BFS on the reversed op graph: shortest number of moves from each x to the target."""
    preds: list[list[int]] = [[] for _ in range(modulus)]
    for x in range(modulus):
        for op in ops:
            preds[apply_op(op, x, modulus)].append(x)
    dist = [math.inf] * modulus
    dist[target] = 0
    frontier = [target]
    while frontier:
        nxt = []
        for y in frontier:
            for x in preds[y]:
                if dist[x] == math.inf:
                    dist[x] = dist[y] + 1
                    nxt.append(x)
        frontier = nxt
    return tuple(dist)


def distances(ops: Sequence[str], target: int, modulus: int = 10) -> list[int | None]:
    """Shortest number of moves from every state to ``target`` (None = unreachable)."""
    dist = _distances(tuple(sorted(ops)), target, modulus)
    return [None if d == math.inf else int(d) for d in dist]


@functools.lru_cache(maxsize=4096)
def _acts_distinctly(ops: tuple[str, ...], modulus: int) -> bool:
    """No two ops of the (sorted) set act identically on Z_M."""
    actions = {tuple(apply_op(op, x, modulus) for x in range(modulus)) for op in ops}
    return len(actions) == len(ops)


@functools.lru_cache(maxsize=1 << 20)
def _hash_unit(key: str) -> float:
    """A stable number in [0, 1) for ``key`` (BLAKE2b, not Python's salted hash)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64


# ------------------------------------------------------------------------------ problems


@dataclass(frozen=True)
class _Spec:
    """What the checker and the expert need from a problem's meta."""

    start: int
    target: int
    ops: tuple[str, ...]
    budget: int
    modulus: int

    @classmethod
    def of(cls, problem: Problem) -> _Spec:
        m = problem.meta
        return cls(m["start"], m["target"], tuple(m["ops"]), m["budget"], m["modulus"])

    @functools.cached_property
    def dist(self) -> tuple[float, ...]:
        return _distances(tuple(sorted(self.ops)), self.target, self.modulus)

    def line(self) -> str:
        return f"{self.start} to {self.target} mod {self.modulus} ops {' '.join(self.ops)} max {self.budget}"


def canonical_key(ops: Sequence[str], start: int, target: int, modulus: int = 10) -> str:
    """The split key of a problem: op order and budget do not matter."""
    return f"{modulus}|{','.join(sorted(ops))}|{start}|{target}"


# ------------------------------------------------------------------------------ the task


class ModReach:
    """The ModReach task (implements ``pav.tasks.base.Task``)."""

    name: str = "modreach"
    step_delimiter: str = "\n"

    def __init__(self, cfg: ModReachConfig | None = None) -> None:
        self.cfg = cfg or ModReachConfig()
        self.pool = POOLS[self.cfg.op_pool]
        self.max_steps = self.cfg.max_steps
        self.max_step_chars = self.cfg.max_step_chars

    # -- problems

    def problems(self, n: int, seed: int, split: Split = "train") -> list[Problem]:
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        rng, out, misses = random.Random(seed), [], 0
        while len(out) < n:
            drawn = self._draw(rng)
            if drawn is None or self.split_of(drawn[0], drawn[1], drawn[2]) != split:
                misses += 1
                if misses > _MAX_MISSES:
                    raise ValueError(f"no {split} problem found in {_MAX_MISSES} draws for {self.cfg}")
                continue
            misses = 0
            out.append(self.make_problem(*drawn, index=len(out)))
        logger.debug("drew %d %s problems from seed %d", n, split, seed)
        return out

    def make_problem(self, ops: Sequence[str], start: int, target: int, budget: int,
                     index: int = 0) -> Problem:
        """The problem record for these fields; the id hashes the question and appends ``index``."""
        spec = _Spec(start, target, tuple(ops), budget, self.cfg.modulus)
        question = spec.line()
        digest = hashlib.blake2b(question.encode(), digest_size=4).hexdigest()
        meta = {"start": start, "target": target, "ops": list(ops), "budget": budget,
                "distance": _finite(spec.dist[start]), "modulus": spec.modulus}
        return Problem(f"modreach-{digest}-{index}", question, str(target), meta)

    def split_of(self, ops: Sequence[str], start: int, target: int) -> Split:
        """Which split a canonical problem belongs to."""
        key = canonical_key(ops, start, target, self.cfg.modulus)
        return "heldout" if _hash_unit(key) < self.cfg.heldout_fraction else "train"

    def _draw(self, rng: random.Random) -> tuple[tuple[str, ...], int, int, int] | None:
        """One draw of a problem as (ops, start, target, budget); None when rejected."""
        cfg, modulus = self.cfg, self.cfg.modulus
        ops = tuple(rng.sample(self.pool, cfg.n_ops))
        key = tuple(sorted(ops))
        if not _acts_distinctly(key, modulus):
            return None
        target = rng.randrange(modulus)
        by_dist = _states_by_distance(key, target, modulus, cfg.d_min, cfg.d_max)
        if not by_dist:
            return None
        distance, states = rng.choice(by_dist)
        start = rng.choice(states)
        return ops, start, target, distance + rng.choice(cfg.slack)

    # -- text

    def prompt(self, problem: Problem) -> str:
        return problem.question + self.step_delimiter

    def split_steps(self, completion: str) -> list[str]:
        return split_steps(completion, self.step_delimiter)

    def is_final_step(self, step: str) -> bool:
        return _ANSWER.fullmatch(step) is not None

    def answer(self, steps: Sequence[str]) -> str | None:
        """The number of the first answer line (``ans 7`` -> ``"7"``), None without one."""
        for step in steps:
            m = _ANSWER.fullmatch(step)
            if m:
                return m.group(1)
        return None

    # -- checker

    def outcome(self, problem: Problem, steps: Sequence[str]) -> float:
        return 1.0 if self.analyse(problem, steps).success else 0.0

    def analyse(self, problem: Problem, steps: Sequence[str]) -> StepAnalysis:
        """Follow the true state through ``steps`` and label every line."""
        spec = _Spec.of(problem)
        cur, used = spec.start, 0
        infos: list[StepInfo] = []
        first_error = answer = None
        for line in steps:
            if first_error is not None:
                infos.append(StepInfo("after_error", used=used))
                continue
            if answer is not None:
                infos.append(StepInfo("after_answer", used=used))
                continue
            info = _check_line(spec, cur, used, line)
            infos.append(info)
            if info.label == "error":
                first_error = len(infos) - 1
            elif info.label in ("answer_ok", "answer_bad"):
                answer = len(infos) - 1
            else:
                cur, used = info.state, info.used
        reason = ("invalid_step" if first_error is not None else "no_answer" if answer is None
                  else infos[answer].detail or "ok")
        return StepAnalysis(tuple(infos), first_error, reason == "ok", reason)

    # -- noisy expert

    def demonstrate(self, problem: Problem, rng: random.Random, prefix: Sequence[str] = ()) -> list[str]:
        """The expert's lines; with ``prefix``, the lines it writes after those (continuing from the
        state the prefix's last line claims, as it does after its own slips)."""
        spec = _Spec.of(problem)
        believed, lines = _believed_state(spec, prefix), list(prefix)
        if any(self.is_final_step(line) for line in lines):
            return []
        while believed != spec.target and len(lines) < spec.budget + 3:
            line, believed = self._expert_line(spec, believed, rng)
            lines.append(line)
        lines.append(f"ans {believed}")
        return lines[len(prefix):]

    def expert_values(self, problem: Problem, steps: Sequence[str]) -> list[float]:
        """V^expert of every prefix ``steps[:h]``, h = 0..H: the exact chance that the noisy expert,
        continuing after the prefix (as ``demonstrate`` does), ends with a correct answer. A prefix with
        an invalid line is worth 0 and one with an answer line its outcome."""
        spec, analysis = _Spec.of(problem), self.analyse(problem, steps)
        table = _expert_table(tuple(spec.ops), spec.target, spec.budget, spec.modulus, self.cfg.p_err,
                              self.cfg.p_restate, self.cfg.p_rand)

        def value(x: int, used: int) -> float:
            return table[used][x] if used < len(table) else 0.0

        out = [value(spec.start, 0)]
        for info in analysis.steps:
            if info.label in ("error", "after_error"):
                out.append(0.0)
            elif info.label in ("answer_ok", "answer_bad", "after_answer"):
                out.append(1.0 if analysis.success else 0.0)
            else:
                out.append(value(info.state, info.used))
        return out

    def parse_question(self, question: str) -> Problem:
        """The problem whose ``question`` (or prompt) this is: the inverse of ``make_problem``."""
        m = _QUESTION.fullmatch(question.strip())
        if m is None:
            raise ValueError(f"not a ModReach question: {question[:80]!r}")
        start, target, modulus, ops, budget = int(m[1]), int(m[2]), int(m[3]), m[4].split(), int(m[5])
        if modulus != self.cfg.modulus:
            raise ValueError(f"question is mod {modulus}, the task mod {self.cfg.modulus}: {question!r}")
        return self.make_problem(ops, start, target, budget)

    def _expert_line(self, spec: _Spec, x: int, rng: random.Random) -> tuple[str, int]:
        """One non-answer line from believed state ``x`` and the state the expert then believes."""
        cfg, u = self.cfg, rng.random()
        if u < cfg.p_err:
            return self._expert_error(spec, x, rng)
        if u < cfg.p_err + cfg.p_restate:
            return f"{x} to {spec.target}", x
        if u < cfg.p_err + cfg.p_restate + cfg.p_rand:
            op = rng.choice(spec.ops)
        else:
            closer = [op for op in spec.ops if spec.dist[apply_op(op, x, spec.modulus)] < spec.dist[x]]
            op = rng.choice(closer or spec.ops)
        y = apply_op(op, x, spec.modulus)
        return f"{x}{op}={y}", y

    def _expert_error(self, spec: _Spec, x: int, rng: random.Random) -> tuple[str, int]:
        """60% arithmetic slip, 25% an off-list op computed correctly, 15% a wrong restated goal."""
        u, modulus = rng.random(), spec.modulus
        off_list = [op for op in self.pool if op not in spec.ops]
        if u >= 0.85:
            return f"{x} to {rng.choice([t for t in range(modulus) if t != spec.target])}", x
        if u >= 0.60 and off_list:
            op = rng.choice(off_list)
            y = apply_op(op, x, modulus)
            return f"{x}{op}={y}", y
        op = rng.choice(spec.ops)
        right = apply_op(op, x, modulus)
        if rng.random() < 0.5:
            near = sorted({(right + d) % modulus for d in (-2, -1, 1, 2)} - {right})
            y = rng.choice(near)
        else:
            y = rng.choice([v for v in range(modulus) if v != right])
        return f"{x}{op}={y}", y


@functools.lru_cache(maxsize=65536)
def _states_by_distance(ops: tuple[str, ...], target: int, modulus: int, d_min: int,
                        d_max: int) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """(d, states at distance d) for each d in [d_min, d_max] that occurs."""
    dist = _distances(ops, target, modulus)
    by_dist = ((d, tuple(x for x in range(modulus) if dist[x] == d)) for d in range(d_min, d_max + 1))
    return tuple((d, states) for d, states in by_dist if states)


@functools.lru_cache(maxsize=4096)
def _expert_table(ops: tuple[str, ...], target: int, budget: int, modulus: int, p_err: float, p_restate: float,
                  p_rand: float) -> tuple[tuple[float, ...], ...]:
    """table[used][x]: the expert's chance of success from true state x with ``used`` budget steps
    spent, used = 0..budget (more is worth 0). At the target it answers (success iff within the
    budget); elsewhere a line is an error (p_err: 0), a restate (p_restate), a uniformly random
    listed op (p_rand) or a uniform choice among the ops that get closer (all ops from a dead end),
    each of the last three spending one budget step, as ``_expert_line`` draws them."""
    p_opt, m, dist = 1.0 - p_err - p_restate - p_rand, modulus, _distances(tuple(sorted(ops)), target, modulus)
    nxt = [float(x == target) for x in range(m)]  # used == budget: only an answer is left
    rows = [tuple(nxt)]
    for _ in range(budget):
        row = []
        for x in range(m):
            if x == target:
                row.append(1.0)
                continue
            moves = [apply_op(op, x, m) for op in ops]
            closer = [y for y in moves if dist[y] < dist[x]] or moves
            row.append(p_restate * nxt[x] + p_rand * sum(nxt[y] for y in moves) / len(moves)
                       + p_opt * sum(nxt[y] for y in closer) / len(closer))
        nxt = row
        rows.append(tuple(row))
    return tuple(reversed(rows))


def _believed_state(spec: _Spec, prefix: Sequence[str]) -> int:
    """The state the last move or restate of ``prefix`` claims (the start if there is none)."""
    for line in reversed(prefix):
        if m := _MOVE.fullmatch(line):
            return int(m.group(4)) % spec.modulus
        if m := _RESTATE.fullmatch(line):
            return int(m.group(1)) % spec.modulus
    return spec.start


def _check_line(spec: _Spec, cur: int, used: int, line: str) -> StepInfo:
    """The checker's verdict on one line from true state ``cur`` with ``used`` steps spent."""
    if m := _MOVE.fullmatch(line):
        x, op, y = int(m[1]), m[2] + m[3], int(m[4])
        if x != cur:
            return StepInfo("error", "wrong_x", used=used)
        if op not in spec.ops:
            return StepInfo("error", "op_not_listed", used=used)
        if y != apply_op(op, x, spec.modulus):
            return StepInfo("error", "wrong_result", used=used)
        return _valid_step(spec, cur, y, used + 1, restate=False)
    if m := _RESTATE.fullmatch(line):
        if int(m[1]) != cur:
            return StepInfo("error", "wrong_x", used=used)
        if int(m[2]) != spec.target:
            return StepInfo("error", "wrong_target", used=used)
        return _valid_step(spec, cur, cur, used + 1, restate=True)
    if m := _ANSWER.fullmatch(line):
        y = int(m[1])
        detail = ("wrong_answer" if y != cur or y != spec.target
                  else "over_budget" if used > spec.budget else "")
        return StepInfo("answer_bad" if detail else "answer_ok", detail, False, cur,
                        _finite(spec.dist[cur]), used)
    return StepInfo("error", "malformed", used=used)


def _valid_step(spec: _Spec, x: int, y: int, used: int, restate: bool) -> StepInfo:
    """Label a valid move or restate from ``x`` to ``y`` by the change in distance."""
    before, after = spec.dist[x], spec.dist[y]
    if restate or y == x:
        label, detail = "no_progress", "restate" if restate else "same_state"
    elif after < before:
        label, detail = "progress", ""
    elif after == before:
        label, detail = "no_progress", "sideways"
    else:
        label, detail = "regress", "dead_end" if after == math.inf else ""
    pit = after > spec.budget - used
    return StepInfo(label, detail, pit, y, _finite(after), used)


def _finite(d: float) -> int | None:
    return None if d == math.inf else int(d)


def make_task(**options: object) -> ModReach:
    """The built-in task's factory (``task.source = "pav.tasks.modreach:make_task"``, the default):
    ``options`` are `ModReachConfig` knobs (``task.options.modulus=7``)."""
    from pav.core.config import apply_overrides

    return ModReach(apply_overrides(ModReachConfig(), options))


make_task.options_class = ModReachConfig  # type: ignore[attr-defined]  # its options, for --show-config
