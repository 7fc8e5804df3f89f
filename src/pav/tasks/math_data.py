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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pav.core.config import knob
from pav.core.records import Problem

Preset = Literal["gsm8k", "math", "fields"]
_CALCULATOR = re.compile(r"<<[^<>]*>>")  # GSM8K's calculator annotations
_ANSWER_IS = re.compile(r"(?i)\b(?:the\s+)?(?:final\s+)?answer\s+is\s*:?\s*(.+?)\s*\.?\s*$")


class MathDataError(ValueError):
    """A problem source cannot be read or does not have the fields its preset needs."""


@dataclass(frozen=True)
class MathDataConfig:
    train: str = knob("", "training problems: a .jsonl/.json/.parquet file or a `datasets` name as "
                          "NAME[:CONFIG]@SPLIT; empty: the built-in task")
    heldout: str = knob("", "held-out problems, same forms; empty: a held-out share of `train`")
    heldout_fraction: float = knob(0.2, "share of `train` held out (by a hash of the id) when `heldout` is empty")
    preset: Preset = knob("gsm8k", "record layout: gsm8k (question; answer with '#### N'), math (problem; "
                                   "solution with \\boxed{}), fields (the *_field knobs)")
    question_field: str = knob("question", "fields preset: the question")
    answer_field: str = knob("answer", "fields preset: the final answer only")
    solution_field: str = knob("", "fields preset: a worked solution, one step per line (optional)")
    id_field: str = knob("", "a field with a unique problem id; empty: source name and record index")

    def __post_init__(self) -> None:
        if not 0 <= self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")


def read_records(source: str) -> list[dict[str, Any]]:
    """The records of a file or a `datasets` split (see the module docstring for the forms)."""
    path = Path(source).expanduser()
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".parquet"):
        if not path.is_file():
            raise MathDataError(f"no such problem file: {source}")
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        text = path.read_text(encoding="utf-8-sig")
        if suffix == ".json":
            data = json.loads(text)
            return data if isinstance(data, list) else list(data.get("data", []))
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return _read_dataset(source)


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


def stated_answer(step: str) -> str | None:
    """The answer a step states: its last ``\\boxed{}``, else what follows "The answer is"."""
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


def to_problems(records: list[dict[str, Any]], cfg: MathDataConfig, source: str) -> list[Problem]:
    """`Problem`s of one source's records; a record without the preset's fields is an error naming it."""
    tag = hashlib.blake2b(source.encode(), digest_size=4).hexdigest()
    out, seen = [], set()
    for i, record in enumerate(records):
        try:
            question, gold, steps = (_gsm8k(record) if cfg.preset == "gsm8k" else _math(record)
                                     if cfg.preset == "math" else _fields(record, cfg))
        except (KeyError, TypeError, AttributeError) as err:
            raise MathDataError(f"{source}: record {i} does not fit the {cfg.preset!r} layout ({err})") from None
        pid = str(record[cfg.id_field]) if cfg.id_field and cfg.id_field in record else f"{tag}-{i}"
        if pid in seen:
            raise MathDataError(f"{source}: duplicate problem id {pid!r} (record {i})")
        seen.add(pid)
        out.append(Problem(pid, question.strip(), gold, {"solution": steps}))
    if not out:
        raise MathDataError(f"{source} holds no problems")
    return out


def heldout_by_hash(problem: Problem, fraction: float) -> bool:
    """A fixed split: the id's BLAKE2b hash mapped to [0, 1) is below ``fraction``."""
    h = int.from_bytes(hashlib.blake2b(problem.problem_id.encode(), digest_size=8).digest(), "big")
    return h / 2**64 < fraction
