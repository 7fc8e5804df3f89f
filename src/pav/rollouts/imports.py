"""Step labels from other projects' formats, as pav records (`pav import-labels` writes them as a label run).

Every format becomes (Problem, Solution, StepLabels for prefixes h = 1..H), so `pav train-verifier`
and the exports read an import exactly like a `pav label` run. A label is the value of the prefix
that ends with the step, stored as counts: a hard label is ``n_correct ∈ {0, 1}`` of one
"rollout"; a soft label p in [0, 1] is ``round(p · soft_rollouts)`` of ``soft_rollouts`` (so the
verifier's noise estimate treats it as that many rollouts). The prompt is stored in
``meta["prompt"]`` and ends with a newline, as pav's verifier expects.

- ``trl-stepwise`` (TRL's stepwise supervision): ``prompt``, ``completions`` (the steps),
  ``labels`` (bools, or floats for soft labels).
- ``prm800k`` (OpenAI's PRM800K phase 1/2 rows): ``question.problem``; ``label.steps[*]`` with
  ``completions[*].rating`` in {-1, 0, 1} and ``chosen_completion`` (else ``human_completion``).
  The chosen path is followed; a step rated -1 is labelled 0 and ends the path (the data stops
  there too), ratings 0 and 1 are labelled 1 (no mistake yet), as in the paper's PRM800K use.
- ``processbench``: ``problem``, ``steps``, ``label`` (earliest wrong step, -1: none): steps before
  it are labelled 1, it and later ones 0.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from pav.core.records import Problem, Solution, StepLabel

Format = Literal["trl-stepwise", "prm800k", "processbench"]
IMPORTED = "imported"  # policy and prover id of imported labels: no pav policy produced them


@dataclass(frozen=True)
class ImportSummary:
    """``summary.json`` of a `pav import-labels` run."""
    STAGES = ("import",)
    format: str
    source: str
    records: int  # read from the source
    solutions: int
    step_labels: int
    skipped_records: int
    mean_q: float | None


class LabelImportError(ValueError):
    """A record does not fit the format it is read as."""


def _counts(label: Any, soft_rollouts: int) -> tuple[int, int]:
    if isinstance(label, bool):
        return int(label), 1
    p = float(label)
    if not 0.0 <= p <= 1.0:  # NaN fails this too
        raise LabelImportError(f"label {label!r} is not in [0, 1]")
    if p in (0.0, 1.0):
        return int(p), 1
    return round(p * soft_rollouts), soft_rollouts


def _trl(rec: dict[str, Any]) -> tuple[str, list[str], list[Any], float | None]:
    steps, labels = [str(s) for s in rec["completions"]], list(rec["labels"])
    if len(steps) != len(labels):
        raise LabelImportError(f"{len(steps)} completions but {len(labels)} labels")
    return str(rec["prompt"]), steps, labels, None


def _prm800k(rec: dict[str, Any]) -> tuple[str, list[str], list[Any], float | None]:
    steps, labels = [], []
    for step in rec["label"]["steps"]:
        chosen = step.get("chosen_completion")
        if chosen is not None:
            completion = step["completions"][chosen]
            text, rating = completion["text"], completion.get("rating")
        elif step.get("human_completion"):
            text, rating = step["human_completion"]["text"], 1
        elif step.get("completions"):  # no choice made: the path ends at its first completion
            text, rating = step["completions"][0]["text"], step["completions"][0].get("rating")
        else:
            break
        steps.append(str(text))
        labels.append(rating is not None and rating >= 0)
        if not labels[-1] or chosen is None:
            break
    return str(rec["question"]["problem"]), steps, labels, None


def _processbench(rec: dict[str, Any]) -> tuple[str, list[str], list[Any], float | None]:
    steps, first_wrong = [str(s) for s in rec["steps"]], int(rec["label"])
    if not -1 <= first_wrong < len(steps):
        raise LabelImportError(f"label {first_wrong} for {len(steps)} steps")
    labels = [first_wrong == -1 or i < first_wrong for i in range(len(steps))]
    outcome = rec.get("final_answer_correct")
    return str(rec["problem"]), steps, labels, None if outcome is None else float(bool(outcome))


READERS = {"trl-stepwise": _trl, "prm800k": _prm800k, "processbench": _processbench}


def import_records(records: list[dict[str, Any]], fmt: Format, source: str, render_prompt,
                   soft_rollouts: int = 100) -> Iterator[tuple[Problem, Solution, list[StepLabel]]]:
    """One (problem, solution, labels) per record with steps; ``render_prompt(question)`` gives the
    prompt (TRL rows carry theirs). A record that does not fit raises `LabelImportError` naming it."""
    tag = hashlib.blake2b(source.encode(), digest_size=4).hexdigest()
    for i, rec in enumerate(records):
        try:
            question, steps, labels, outcome = READERS[fmt](rec)
            counts = [_counts(lab, soft_rollouts) for lab in labels]
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise LabelImportError(f"{source}: record {i} is not {fmt} ({err!r})") from None
        if not steps:
            continue  # nothing to label (e.g. a PRM800K row whose first step had no completion)
        pid = f"{tag}-{i}"
        prompt = question if fmt == "trl-stepwise" else render_prompt(question)
        prompt = prompt if prompt.endswith("\n") else prompt + "\n"
        if outcome is None and labels and counts[-1][1] == 1:
            outcome = float(counts[-1][0])  # a fully labelled path: its last step's hard label
        problem = Problem(pid, question, "", {"prompt": prompt, "source": source, "format": fmt})
        solution = Solution(pid, f"{pid}/s0", tuple(steps), IMPORTED, outcome)
        yield problem, solution, [StepLabel(pid, solution.solution_id, h, k, n, IMPORTED, IMPORTED)
                                  for h, (k, n) in enumerate(counts, start=1)]
