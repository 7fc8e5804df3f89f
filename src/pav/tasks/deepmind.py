"""DeepMind's ``mathematics-dataset`` as a pav task: problems generated in-process, never seen by pav's authors.

``task.source = "pav.tasks.deepmind:make_task"`` with ``task.options.module=arithmetic/add_sub_multiple``
and ``task.options.difficulty=easy`` (``pip install 'pav[deepmind]'``). Saxton et al. (2019)'s
generators are seeded, so problems are reproducible:

- ``problems(n, seed, split)`` seeds ``random`` and ``numpy.random`` (restoring both afterwards) and
  draws questions of the module until ``n`` distinct ones of ``split`` are found. A question belongs to
  the held-out split when a hash of its text says so (``heldout_fraction``), so the splits never share
  a question whatever seeds they are drawn with. ``difficulty`` is the dataset's train-easy / -medium /
  -hard entropy band.
- Prompts: the tokenizer's chat template (``template=chat``, or ``auto`` when the bound tokenizer has
  one) with an optional system prompt and ``shots`` worked examples as earlier user/assistant turns;
  ``plain`` writes the same examples as "Question:/Answer:" blocks.
- Steps are lines; a blank line never becomes a step (`pav.core.steps`, the rule every sampler applies). The step stating "The answer is X" (or
  ``\\boxed{X}``) ends a solution; X is graded against the gold answer by math-verify in worker
  processes (`pav.tasks.grader`, as the problem-set task grades), so ``-1/24``, ``559/5``, decimals and
  polynomials match their equivalent forms; the ``grader_*`` knobs are the problem-set task's.
  Nothing the model writes is evaluated.
- The demonstrator (SFT data, few-shot examples) exists for ``arithmetic/add_sub_multiple``: it works
  the expression innermost parentheses first, left to right, one operation per step
  (``1 - -4 - (3 + -3)``: ``3 + -3 = 0``, ``1 - -4 = 5``, ``5 - 0 = 5``), then states the answer.
  It is exact, not noisy. Steps are kept this short because every token is sampled many times
  over in labelling and search.
"""

from __future__ import annotations

import hashlib
import importlib
import random
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Literal

from pav.core.config import apply_overrides, knob
from pav.core.records import Problem
from pav.core.steps import split_steps
from pav.tasks.base import Split
from pav.tasks.math_data import stated_answer
from pav.tasks.grader import MathGrader
from pav.tasks.math_task import GraderConfig, MathTaskConfig, render_prompt, start_grader

LEVELS = {"easy": 0, "medium": 1, "hard": 2}  # the dataset's train-easy/-medium/-hard entropy bands
SHOTS_SEED = 10_007  # the few-shot examples' draw (train split), fixed so every prompt shows the same ones


@dataclass(frozen=True)
class DeepMindConfig(GraderConfig):
    module: str = knob("arithmetic/add_sub_multiple", "the generator, 'area/name' (e.g. arithmetic/mul, "
                                                      "numbers/gcd); demonstrations exist for arithmetic/add_sub_multiple")
    difficulty: Literal["easy", "medium", "hard"] = knob("easy", "the dataset's train-easy/-medium/-hard band")
    heldout_fraction: float = knob(0.2, "share of questions (by a hash of the text) in the held-out split")
    template: Literal["auto", "chat", "plain"] = knob("auto", "prompt: the tokenizer's chat template (chat), "
                                                      "Question:/Answer: text (plain), chat when the tokenizer has one (auto)")
    system: str = knob("", "chat prompts: a system turn (empty: none)")
    instruction: str = knob("One operation per line, then 'The answer is X.'",
                            "appended to every question (the examples' too)")
    shots: int = knob(0, "worked examples (the demonstrator's) before the question")
    max_steps: int = knob(12, "samplers stop a solution after this many steps")
    max_step_chars: int = knob(120, "a sampled step that reaches this many characters is cut there and ends the "
                                    "solution")

    def __post_init__(self) -> None:
        area, sep, name = self.module.partition("/")
        if not (sep and area and name):
            raise ValueError(f"module must be 'area/name' (e.g. arithmetic/add_sub_multiple), got {self.module!r}")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError("heldout_fraction must be in (0, 1)")
        if self.shots < 0 or self.max_steps < 1 or self.max_step_chars < 1:
            raise ValueError("shots must be >= 0, max_steps and max_step_chars >= 1")


def make_task(**options: Any) -> "DeepMindTask":
    """The factory ``task.source`` names; ``options`` are `DeepMindConfig` knobs."""
    return DeepMindTask(apply_overrides(DeepMindConfig(), options))


make_task.options_class = DeepMindConfig  # type: ignore[attr-defined]  # its options, for --show-config

class DeepMindTask:
    """See the module docstring."""

    step_delimiter = "\n"

    def __init__(self, cfg: DeepMindConfig) -> None:
        self.cfg = cfg
        self.name = f"deepmind:{cfg.module}:{cfg.difficulty}"
        self.max_steps = cfg.max_steps
        self.max_step_chars = cfg.max_step_chars
        area, _, name = cfg.module.partition("/")
        self._generate = _generator(area, name, cfg.difficulty)
        self._tokenizer: Any = None
        self._examples: list[tuple[str, list[str]]] | None = None
        self._grader: MathGrader | None = None
        # math_task's rendering, with the instruction already in each question
        self._style = MathTaskConfig(template=cfg.template, system=cfg.system, instruction="",
                                     plain_template="Question: {question}\nAnswer:\n")

    # -- problems and prompts

    def problems(self, n: int, seed: int, split: Split = "train") -> list[Problem]:
        if split not in ("train", "heldout"):
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        rng_state, np_state = _seed(f"{self.name}/{split}/{seed}")
        try:
            out: dict[str, Problem] = {}
            for _ in range(200 * n + 1000):
                if len(out) == n:
                    break
                question, answer = self._generate()
                if _is_heldout(question, self.cfg.heldout_fraction) != (split == "heldout"):
                    continue
                pid = f"dm-{hashlib.sha256(question.encode()).hexdigest()[:12]}"
                out.setdefault(pid, Problem(pid, question, answer, {"module": self.cfg.module}))
        finally:
            _restore(rng_state, np_state)
        if len(out) < n:
            raise ValueError(f"{self.cfg.module} ({self.cfg.difficulty}) gave only {len(out)} distinct {split} "
                             f"questions of the {n} asked for")
        return list(out.values())

    def bind_tokenizer(self, tokenizer: Any) -> None:
        """The tokenizer whose chat template renders prompts (template auto/chat)."""
        self._tokenizer = tokenizer

    def prompt(self, problem: Problem) -> str:
        stored = problem.meta.get("prompt")
        if isinstance(stored, str):
            return stored
        ask = lambda q: f"{q}\n{self.cfg.instruction}".strip()  # noqa: E731  # the instruction shows in plain prompts too
        examples = [(ask(q), steps) for q, steps in self.examples()]
        return render_prompt(ask(problem.question), self._style, self._tokenizer, self.step_delimiter, examples)

    def examples(self) -> list[tuple[str, list[str]]]:
        """The ``shots`` worked examples every prompt shows: (question, demonstrator steps)."""
        if self._examples is None:
            drawn = self.problems(self.cfg.shots, SHOTS_SEED, "train") if self.cfg.shots else []
            self._examples = [(p.question, self.demonstrate(p, random.Random(0))) for p in drawn]
        return self._examples

    # -- steps and grading

    def split_steps(self, completion: str) -> list[str]:
        return split_steps(completion, self.step_delimiter)

    def is_final_step(self, step: str) -> bool:
        return stated_answer(step) is not None

    def answer(self, steps: Sequence[str]) -> str | None:
        for step in steps:
            stated = stated_answer(step)
            if stated is not None:
                return stated
        return None

    def outcome(self, problem: Problem, steps: Sequence[str]) -> float:
        answer = self.answer(steps)
        return 0.0 if answer is None else float(self.grader.grade(answer, problem.answer).correct)

    @property
    def grader(self) -> MathGrader:
        """math-verify in worker processes (`pav.tasks.grader`), started on first use and closed at exit."""
        if self._grader is None:
            self._grader = start_grader(self.cfg)
        return self._grader

    def demonstrate(self, problem: Problem, rng: random.Random) -> list[str]:
        if self.cfg.module != "arithmetic/add_sub_multiple":
            raise ValueError(f"no demonstrator for {self.cfg.module} (only arithmetic/add_sub_multiple has one)")
        return work_add_sub(problem.question)


# -- the demonstrator: +/- expressions worked one operation at a time

_TOKEN = re.compile(r"\d+|[()+\-]")
_EXPRESSION = re.compile(r"[\d\s()+\-]*\d[\d\s()+\-]*")


def work_add_sub(question: str) -> list[str]:
    """Steps that evaluate the integer +/- expression in ``question``, innermost parentheses first,
    left to right, one operation per step, then "The answer is N."."""
    expression = max(_EXPRESSION.findall(question), key=len).strip()
    tokens = _literals(_TOKEN.findall(expression))
    steps = []
    while len(tokens) > 1:
        start, end = _innermost(tokens)  # tokens[start:end] is one flat a op b op c ...
        if end - start == 1:  # (x) -> x
            tokens = tokens[:start - 1] + tokens[start:end] + tokens[end + 1:]
            continue
        a, op, b = tokens[start], tokens[start + 1], tokens[start + 2]
        value = a + b if op == "+" else a - b
        head = f"{_number(a)} {op} {_number(b)} = {_number(value)}"
        inner = [value] + tokens[start + 3:end]
        if len(inner) == 1 and start > 0 and tokens[start - 1] == "(":  # (x) -> x
            tokens = tokens[:start - 1] + inner + tokens[end + 1:]
        else:
            tokens = tokens[:start] + inner + tokens[end:]
        steps.append(head)
    return steps + [f"The answer is {_number(tokens[0])}."]


def _literals(tokens: list[str]) -> list[Any]:
    """Ints for numbers (a '-' that is not a binary operator belongs to the number), '(' ')' '+' '-'."""
    out: list[Any] = []
    sign = 1
    for tok in tokens:
        if tok == "-" and (not out or out[-1] in ("(", "+", "-")) and sign == 1:
            sign = -1
        elif sign == -1 and not tok.isdigit():
            raise ValueError("the demonstrator negates numbers, not parenthesised groups")
        elif tok.isdigit():
            out.append(sign * int(tok))
            sign = 1
        else:
            out.append(tok)
    return out


def _innermost(tokens: list[Any]) -> tuple[int, int]:
    """[start, end) of the first parenthesised group without groups inside (the whole list if none)."""
    close = next((i for i, t in enumerate(tokens) if t == ")"), None)
    if close is None:
        return 0, len(tokens)
    open_ = max(i for i in range(close) if tokens[i] == "(")
    return open_ + 1, close


def _number(x: int) -> str:
    return str(x)


# -- splits


def _is_heldout(question: str, fraction: float) -> bool:
    digest = hashlib.sha256(question.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


# -- the third-party generator


@lru_cache(maxsize=None)
def _generator(area: str, name: str, difficulty: str) -> Callable[[], tuple[str, str]]:
    """A function returning one (question, answer) of ``area/name`` at ``difficulty``."""
    try:
        generate, modules = _import_dataset()
    except ImportError as exc:
        raise ValueError(f"the deepmind task needs mathematics-dataset: pip install 'pav[deepmind]' ({exc})") from None
    fns = modules.train(generate._make_entropy_fn(LEVELS[difficulty], len(LEVELS)))
    if area not in fns or name not in fns[area]:
        known = ", ".join(f"{a}/{n}" for a in sorted(fns) for n in sorted(fns[a]))
        raise ValueError(f"mathematics-dataset has no module {area}/{name} (it has: {known})")
    fn = fns[area][name]

    def one() -> tuple[str, str]:
        problem = fn()
        return str(problem.question), str(problem.answer)

    return one


def _import_dataset() -> tuple[Any, Any]:
    """(generate, modules) of mathematics_dataset. Its import of a function that sympy >= 1.7 moved
    (``sympy.solvers.diophantine.base_solution_linear``) is redirected to the new place first."""
    import sympy.solvers.diophantine  # noqa: F401 - the package the dataset reaches into

    old = sys.modules["sympy.solvers.diophantine"]
    if not hasattr(old, "base_solution_linear"):
        old.base_solution_linear = importlib.import_module("sympy.solvers.diophantine.diophantine").base_solution_linear
    from mathematics_dataset import generate
    from mathematics_dataset.modules import modules

    return generate, modules


def _seed(key: str) -> tuple[Any, Any]:
    import numpy as np

    state = random.getstate(), np.random.get_state()
    value = int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "big")
    random.seed(value)
    np.random.seed(value)
    return state


def _restore(rng_state: Any, np_state: Any) -> None:
    import numpy as np

    random.setstate(rng_state)
    np.random.set_state(np_state)
