"""`MathTask`: a GSM8K/MATH-style problem set behind the `Task` protocol, graded by `MathGrader`.

- Problems come from `pav.tasks.math_data` (files or a `datasets` split). ``problems(n, seed,
  split)`` is a seeded shuffle of the split, all of it when ``n`` exceeds its size.
- Prompts: ``template="chat"`` renders the question (plus ``instruction``) with the tokenizer's
  chat template, ``"plain"`` fills ``plain_template``, ``"auto"`` picks chat when the bound
  tokenizer has a template. A stage binds the policy's tokenizer with `bind_tokenizer`. A problem
  whose ``meta["prompt"]`` is set (label runs store the rendered prompt there) keeps that prompt, so
  later stages see exactly the text the policy was sampled with. ``system`` adds a system turn (a
  first paragraph in plain prompts) and ``shots`` worked examples, the reference solutions of a
  fixed draw of training problems, as earlier user/assistant turns (plain: filled templates).
- Steps are lines (``delimiter="newline"``) or paragraphs (``"blank-line"``); a blank line never
  becomes a step (`pav.core.steps`). A step that states an answer (``answer_pattern``'s first group
  where it matches, else ``\\boxed{}``, else "The answer is ...") ends the solution; it is graded against the
  gold answer by math-verify in worker processes (`pav.tasks.grader`), so model text is never
  evaluated. Ungraded answers (timeout, crash) score 0 and are counted in ``grader.counters``.
- The demonstrator is the reference solution (``meta["solution"]``); it is not noisy.
"""

from __future__ import annotations

import atexit
import logging
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pav.core.config import knob
from pav.core.records import Problem
from pav.core.steps import split_steps
from pav.tasks.base import Split, join_steps
from pav.core.rejects import RejectLedger
from pav.tasks.answer_forms import AnswerPolicy, IrrationalPolicy, PercentPolicy
from pav.tasks.grader import MathGrader
from pav.tasks.math_data import (
    MathDataConfig,
    MathDataError,
    heldout_by_hash,
    numbered_records,
    stated_answer,
    to_problems,
)

log = logging.getLogger(__name__)
DELIMITERS = {"newline": "\n", "blank-line": "\n\n"}
SHOTS_SEED = 10_007  # the order few-shot examples are drawn in from the training split (fixed: every prompt shows the same)


@dataclass(frozen=True)
class GraderConfig:
    """The grading knobs of a task graded by `MathGrader` (see `start_grader`)."""

    grader_workers: int = knob(2, "math-verify worker processes")
    grader_deadline: float = knob(5.0, "seconds before a grading call is cut off (ungraded-timeout)")
    grader_percent: PercentPolicy = knob(AnswerPolicy.percent, "50% against a gold without %: 50 or 0.5 (either), "
                                         "0.5 only (fraction), 50 only (number)")
    grader_irrational: IrrationalPolicy = knob(AnswerPolicy.irrational, "a decimal against an irrational gold "
                                               "(6.2832 vs 2\\pi): the value rounded to the decimal's places, 3+ "
                                               "significant digits (rounded), or math-verify's 6 places only (exact)")


@dataclass(frozen=True)
class MathTaskConfig(MathDataConfig, GraderConfig):
    template: Literal["auto", "chat", "plain"] = knob("auto", "prompt: the tokenizer's chat template (chat), "
                                                      "plain_template (plain), chat when the tokenizer has one (auto)")
    plain_template: str = knob("Question: {question}\nAnswer:\n", "plain prompt; {question} is the question")
    instruction: str = knob("Solve it step by step, one step per line, and end with 'The answer is X.'",
                            "chat prompts: appended to the question in the user turn")
    system: str = knob("", "a system prompt: chat prompts' system turn, plain prompts' first paragraph (empty: none)")
    shots: int = knob(0, "few-shot: worked examples (reference solutions of training problems) before the question")
    answer_pattern: str = knob("", "a regular expression whose first group is the final answer, tried before "
                                   "\\boxed{} and 'The answer is X' (empty: those two only)")
    delimiter: Literal["newline", "blank-line"] = knob("newline", "steps are lines, or paragraphs")
    max_steps: int = knob(16, "samplers stop a solution after this many steps")
    max_step_chars: int = knob(400, "a sampled step that reaches this many characters is cut there and ends the "
                                    "solution")

    def __post_init__(self) -> None:
        super().__post_init__()
        if "{question}" not in self.plain_template:
            raise ValueError("plain_template must contain {question}")
        if self.max_steps < 1 or self.max_step_chars < 1 or self.shots < 0:
            raise ValueError("max_steps and max_step_chars must be >= 1, shots >= 0")
        if self.answer_pattern:
            try:
                groups = re.compile(self.answer_pattern).groups
            except re.error as exc:
                raise ValueError(f"answer_pattern is not a regular expression: {exc}") from None
            if groups < 1:
                raise ValueError("answer_pattern needs a group around the answer, e.g. 'Final: (.+)'")


def render_prompt(question: str, cfg: MathTaskConfig, tokenizer: Any, delimiter: str,
                  examples: Sequence[tuple[str, Sequence[str]]] = ()) -> str:
    """The prompt of ``question`` under ``cfg.template`` (see the module docstring), after the system
    prompt and the worked ``examples`` (question, steps); ends with ``delimiter``."""
    chat = cfg.template == "chat" or (cfg.template == "auto" and getattr(tokenizer, "chat_template", None))
    if chat:
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("template=chat needs a tokenizer with a chat template (bind_tokenizer)")
        user = lambda q: {"role": "user", "content": f"{q}\n{cfg.instruction}".strip()}  # noqa: E731
        turns = [{"role": "system", "content": cfg.system}] if cfg.system else []
        for q, steps in examples:
            turns += [user(q), {"role": "assistant", "content": delimiter.join(steps)}]
        text = tokenizer.apply_chat_template([*turns, user(question)], tokenize=False, add_generation_prompt=True)
    else:
        shown = [cfg.plain_template.replace("{question}", q) + join_steps(steps, delimiter) + "\n" for q, steps in examples]
        text = (cfg.system + "\n\n" if cfg.system else "") + "".join(shown) + cfg.plain_template.replace("{question}", question)
    return text if text.endswith(delimiter) else text.rstrip("\n") + delimiter


def start_grader(cfg: GraderConfig) -> MathGrader:
    """A `MathGrader` under ``cfg``'s grader_workers, grader_deadline, grader_percent and
    grader_irrational knobs, closed at exit."""
    policy = AnswerPolicy(percent=cfg.grader_percent, irrational=cfg.grader_irrational)
    grader = MathGrader(cfg.grader_workers, cfg.grader_deadline, policy=policy)
    atexit.register(grader.close)
    return grader


class MathTask:
    """See the module docstring."""

    def __init__(self, cfg: MathTaskConfig) -> None:
        if not cfg.train:
            raise MathDataError("a math task needs problems: --set task.options.train=FILE (or NAME[:CONFIG]@SPLIT)")
        self.cfg = cfg
        self.name = f"math:{cfg.preset}"
        self.step_delimiter = DELIMITERS[cfg.delimiter]
        self.max_steps = cfg.max_steps
        self.max_step_chars = cfg.max_step_chars
        self.rejects = RejectLedger(cfg.max_reject_rate)  # malformed records, for the run's rejects.jsonl
        train = to_problems(numbered_records(cfg.train, self.rejects), cfg, cfg.train, self.rejects)
        if cfg.heldout:
            heldout = to_problems(numbered_records(cfg.heldout, self.rejects), cfg, cfg.heldout, self.rejects)
            clash = {p.problem_id for p in train} & {p.problem_id for p in heldout}
            if clash:
                what = "problem ids" if cfg.id_field else "questions (ids are hashes of the question)"
                raise MathDataError(f"{len(clash)} {what} are in both train and heldout, e.g. {min(clash)!r}; "
                                    "held-out problems must not be trained on")
        else:
            heldout = [p for p in train if heldout_by_hash(p, cfg.heldout_fraction)]
            train = [p for p in train if not heldout_by_hash(p, cfg.heldout_fraction)]
        self._splits: dict[str, list[Problem]] = {"train": train, "heldout": heldout}
        self._tokenizer: Any = None
        self._grader: MathGrader | None = None
        self._said_short: dict[str, bool] = {}  # "asked for more problems than the set has" logged once
        self._pattern = re.compile(cfg.answer_pattern) if cfg.answer_pattern else None
        shown = [p for p in train if p.meta.get("solution")]  # few-shot candidates, in a fixed order
        random.Random(SHOTS_SEED).shuffle(shown)
        self._shots = shown[: cfg.shots + 1]  # one spare: a problem is never its own example

    # -- problems and prompts

    def problems(self, n: int, seed: int, split: Split = "train") -> list[Problem]:
        if split not in self._splits:
            raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
        pool = list(self._splits[split])
        if not pool:
            raise MathDataError(f"the {split} split is empty; give more problems or task.options.heldout")
        random.Random(seed).shuffle(pool)
        if n > len(pool) and not self._said_short.get(split):
            self._said_short[split] = True
            log.info("%s: %d %s problems asked for, the set has %d: using all", self.name, n, split, len(pool))
        return pool[:n]

    def bind_tokenizer(self, tokenizer: Any) -> None:
        """The tokenizer whose chat template renders prompts (template auto/chat)."""
        self._tokenizer = tokenizer

    def prompt(self, problem: Problem) -> str:
        stored = problem.meta.get("prompt")
        if isinstance(stored, str):
            return stored
        examples = [(p.question, p.meta["solution"]) for p in self._shots if p.problem_id != problem.problem_id]
        return render_prompt(problem.question, self.cfg, self._tokenizer, self.step_delimiter,
                             examples[: self.cfg.shots])

    # -- steps and grading

    def split_steps(self, completion: str) -> list[str]:
        return split_steps(completion, self.step_delimiter)

    def is_final_step(self, step: str) -> bool:
        return stated_answer(step, self._pattern) is not None

    def answer(self, steps: Sequence[str]) -> str | None:
        for step in steps:
            stated = stated_answer(step, self._pattern)
            if stated is not None:
                return stated
        return None

    def outcome(self, problem: Problem, steps: Sequence[str]) -> float:
        answer = self.answer(steps)
        if answer is None:
            return 0.0
        return 1.0 if self.grader.grade(answer, problem.answer).correct else 0.0

    @property
    def grader(self) -> MathGrader:
        """The task's worker pool, started on first use and closed at exit."""
        if self._grader is None:
            self._grader = start_grader(self.cfg)
        return self._grader

    def demonstrate(self, problem: Problem, rng: random.Random) -> list[str]:
        steps = problem.meta.get("solution")
        if not steps:
            raise MathDataError(f"problem {problem.problem_id} has no reference solution to demonstrate")
        return list(steps)


def make_task(**options: object) -> MathTask:
    """The problem-set task's factory (``task.source = "pav.tasks.math_task:make_task"``): ``options``
    are `MathTaskConfig` knobs (``task.options.train=FILE``)."""
    from pav.core.config import apply_overrides

    return MathTask(apply_overrides(MathTaskConfig(), options))


make_task.options_class = MathTaskConfig  # type: ignore[attr-defined]  # its options, for --show-config
