"""Math problem sets: records from JSONL, JSON, parquet or a `datasets` name, mapped to `Problem`s.

A source is a path ending in ``.jsonl``, ``.json`` or ``.parquet``, or a Hugging Face dataset
written ``NAME[:CONFIG]@SPLIT`` (e.g. ``openai/gsm8k:main@test``; needs the ``datasets``
package, and the network or a local cache). Layouts (``preset``):

- ``gsm8k``: ``question``; ``answer`` holds the worked solution, one step per line with
  ``<<a*b=c>>`` calculator notes, and the final answer after ``####``;
- ``math``: ``problem``; ``solution`` holds the worked solution with the final answer in the
  last ``\\boxed{...}``;
- ``fields``: any layout, named by the ``*_field`` knobs (the answer field holds the answer only).

Each `Problem` keeps the gold answer in ``answer`` and the reference solution's steps in
``meta["solution"]`` (the SFT demonstrations; the final step always states the answer as
"The answer is X."). Nothing in a record is evaluated.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pav.core.config import knob
from pav.core.records import Problem
from pav.core.rejects import RejectLedger, read_jsonl_lenient

Preset = Literal["gsm8k", "math", "fields"]
_CALCULATOR = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator annotations
_ANSWER_IS = re.compile(r"(?i)\b(?:the\s+)?(?:final\s+)?answer\s+is\s*:?\s*(.+?)\s*\.?\s*$")


class MathDataError(ValueError):
    """A problem source cannot be read or does not have the fields its preset needs."""


@dataclass(frozen=True)
class MathDataConfig:
    train: str = knob("", "training problems: a .jsonl/.json/.parquet file or a `datasets` name as "
                          "NAME[:CONFIG]@SPLIT")
    heldout: str = knob("", "held-out problems, same forms; empty: a held-out share of `train`")
    heldout_fraction: float = knob(0.2, "share of `train` held out (by a hash of the id) when `heldout` is empty")
    preset: Preset = knob("gsm8k", "record layout: gsm8k (question; answer with '#### N'), math (problem; "
                                   "solution with \\boxed{}), fields (the *_field knobs)")
    question_field: str = knob("question", "fields preset: the question")
    answer_field: str = knob("answer", "fields preset: the final answer only")
    solution_field: str = knob("", "fields preset: a worked solution, one step per line (optional)")
    id_field: str = knob("", "a field with a unique problem id; empty: a hash of the question (so the "
                         "held-out split does not depend on where the file lies)")
    max_reject_rate: float = knob(0.01, "share of malformed records a source may have: they are skipped and listed "
                                        "in the run's rejects.jsonl; above it the stage stops")

    def __post_init__(self) -> None:
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if not 0 <= self.max_reject_rate <= 1:
            raise ValueError(f"max_reject_rate must be in [0, 1], got {self.max_reject_rate}")


def read_records(source: str) -> list[dict[str, Any]]:
    """The records of a file or a `datasets` split; any malformed line is an error."""
    ledger = RejectLedger(max_reject_rate=0.0)
    records = [r for _, r in numbered_records(source, ledger)]
    ledger.check(source)
    return records


def numbered_records(source: str, ledger: RejectLedger) -> list[tuple[int, dict[str, Any]]]:
    """(line, record) of a file or a `datasets` split (see the module docstring for the forms); in
    JSONL, malformed lines go to ``ledger`` (`pav.core.rejects`), other forms number records from 1."""
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".parquet"):
        if not path.is_file():
            raise MathDataError(f"no such problem file: {source}")
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return _numbered(pq.read_table(path).to_pylist(), source, ledger)
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8-sig"))
            return _numbered(data if isinstance(data, list) else list(data.get("data", [])), source, ledger)
        return list(read_jsonl_lenient(path, ledger))
    return _numbered(_read_dataset(source), source, ledger)


def _numbered(records: list[Any], source: str, ledger: RejectLedger) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for i, record in enumerate(records, start=1):
        ledger.read[source] += 1
        if isinstance(record, dict):
            out.append((i, record))
        else:
            ledger.add(source, i, "", f"a {type(record).__name__}, not an object")
    return out


def _read_dataset(spec: str) -> list[dict[str, Any]]:
    name, _, split = spec.partition("@")
    name, _, config = name.partition(":")
    if not name or not split:
        raise MathDataError(f"{spec!r} is neither a .jsonl/.json/.parquet file nor a dataset written NAME[:CONFIG]@SPLIT")
    try:
        import datasets
    except ImportError:
        raise MathDataError(f"reading {spec!r} needs the `datasets` package (pip install datasets), "
                            "or give a .jsonl/.parquet file") from None
    try:
        return datasets.load_dataset(name, config or None, split=split).to_list()
    except Exception as err:  # offline, unknown name or split
        raise MathDataError(f"could not load dataset {spec!r}: {err}") from err


def boxed_answer(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``, braces balanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1:j].strip()
    return None


def stated_answer(step: str, pattern: re.Pattern[str] | None = None) -> str | None:
    """The answer a step states: the first group of ``pattern`` where it matches (a task's own
    final-answer form), else its last ``\\boxed{}``, else what follows "The answer is"."""
    if pattern is not None:
        m = pattern.search(step)
        if m is not None and m.group(1) is not None and m.group(1).strip():
            return m.group(1).strip()
    boxed = boxed_answer(step)
    if boxed is not None:
        return boxed
    m = _ANSWER_IS.search(step)
    if m is None:
        return None
    answer = m.group(1).strip().rstrip(".").strip().strip("$").strip()
    return answer or None


def _gsm8k(record: dict[str, Any]) -> tuple[str, str, list[str]]:
    worked, sep, gold = str(record["answer"]).rpartition("####")
    if not sep:
        raise KeyError("answer has no '####'")
    gold = gold.strip().replace(",", "")
    steps = [_CALCULATOR.sub("", line).strip() for line in worked.splitlines()]
    return str(record["question"]), gold, [s for s in steps if s] + [f"The answer is {gold}."]


def _math(record: dict[str, Any]) -> tuple[str, str, list[str]]:
    solution = str(record["solution"])
    gold = boxed_answer(solution)
    if gold is None:
        raise KeyError("solution has no \\boxed{}")
    steps = [line.strip() for line in solution.splitlines() if line.strip()]
    return str(record["problem"]), gold, steps + [f"The answer is ${gold}$."]


def _fields(record: dict[str, Any], cfg: MathDataConfig) -> tuple[str, str, list[str]]:
    gold = str(record[cfg.answer_field]).strip()
    worked = str(record.get(cfg.solution_field) or "") if cfg.solution_field else ""
    steps = [line.strip() for line in worked.splitlines() if line.strip()]
    return str(record[cfg.question_field]), gold, steps + [f"The answer is {gold}."]


def to_problems(records: list[dict[str, Any]] | list[tuple[int, dict[str, Any]]], cfg: MathDataConfig, source: str,
                ledger: RejectLedger | None = None) -> list[Problem]:
    """`Problem`s of one source's records. A record that does not fit the preset (a field missing,
    of the wrong type or empty; a duplicate id) goes to ``ledger`` with its line and field; without
    a ledger it is an error. Numbered records are (line, record) pairs."""
    strict = ledger is None
    ledger = ledger if ledger is not None else RejectLedger(max_reject_rate=0.0)
    numbered = [r if isinstance(r, tuple) else (i, r) for i, r in enumerate(records, start=1)]
    out, seen, repeats = [], set(), Counter()
    for line, record in numbered:
        if strict:
            ledger.read[source] += 1
        field_, why = _misfit(record, cfg)
        if not why:
            try:
                question, gold, steps = (_gsm8k(record) if cfg.preset == "gsm8k" else _math(record)
                                         if cfg.preset == "math" else _fields(record, cfg))
            except KeyError as err:
                field_, why = {"gsm8k": "answer", "math": "solution"}.get(cfg.preset, ""), str(err.args[0])
        if cfg.id_field and cfg.id_field in record:
            pid = str(record.get(cfg.id_field))
        else:  # from the question, not the file's path or line: the held-out split must not move with the file
            pid = "" if why else _content_id(question, repeats)
        if not why and pid in seen:
            field_, why = cfg.id_field or "id", "duplicate problem id"
        if why:
            if strict:
                raise MathDataError(f"{source}: record {line - 1} does not fit the {cfg.preset!r} layout: "
                                    f"{field_ or 'record'}: {why}")
            ledger.add(source, line, field_, why)
            continue
        seen.add(pid)
        out.append(Problem(pid, question.strip(), gold, {"solution": steps}))
    if not strict:
        ledger.check(source)
    if not out:
        raise MathDataError(f"{source} holds no problems")
    return out


def _misfit(record: dict[str, Any], cfg: MathDataConfig) -> tuple[str, str]:
    """(field, reason) when the record lacks a field the preset needs or holds a wrong or empty value."""
    needed = {"gsm8k": ("question", "answer"), "math": ("problem", "solution")}.get(
        cfg.preset, (cfg.question_field, cfg.answer_field))
    for name in needed:
        value = record.get(name)
        if name not in record or value is None:
            return name, "missing"
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            return name, f"wrong type ({type(value).__name__})"
        if not str(value).strip():
            return name, "empty"
    if cfg.solution_field and record.get(cfg.solution_field) is not None \
            and not isinstance(record[cfg.solution_field], str):
        return cfg.solution_field, f"wrong type ({type(record[cfg.solution_field]).__name__})"
    return "", ""


def _content_id(question: str, repeats: Counter) -> str:
    """An id for a record without one: a hash of its question, numbered when the question repeats."""
    digest = hashlib.blake2b(question.strip().encode(), digest_size=6).hexdigest()
    repeats[digest] += 1
    return f"q-{digest}" if repeats[digest] == 1 else f"q-{digest}-{repeats[digest]}"


def heldout_by_hash(problem: Problem, fraction: float) -> bool:
    """A fixed split: the id's BLAKE2b hash mapped to [0, 1) is below ``fraction``."""
    h = int.from_bytes(hashlib.blake2b(problem.problem_id.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < fraction
