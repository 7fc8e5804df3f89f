"""On-disk record types: problems, sampled solutions and Monte-Carlo step labels.

Every record is a frozen dataclass that validates itself on construction, so an invalid record
cannot exist in memory. ``to_dict`` adds ``schema_version`` and ``kind``; ``from_dict`` is strict
(missing, unknown or mistyped fields, non-finite floats, broken invariants, wrong kind, missing or
newer schema version all raise ``RecordError``). Validation is driven by two tables: one checker
per field annotation, and per-class numeric bounds plus cross-field invariants.

A ``StepLabel`` is the Monte-Carlo estimate behind ``v_prover``/``v_base`` of one prefix: ``n_correct``
of ``n_rollouts`` continuations from the first ``prefix_len`` steps reached the right answer.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, get_type_hints

SCHEMA_VERSION = 1
INT64_MAX = 2**63 - 1  # int fields are stored as Parquet int64

R = TypeVar("R", bound="Record")


class RecordError(ValueError):
    """A record (or a file of records) is malformed."""


# ----------------------------------------------------------------------------------------------
# Field checkers: each takes the raw value and returns the normalised value or raises ValueError
# with a reason. They are looked up by the field's type annotation.


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a str, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("is not valid unicode (lone surrogate)") from exc
    return value


def _check_int(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"must be an int, got {type(value).__name__}")
    return value


def _check_float(value: Any) -> float:
    if not _is_number(value):
        raise ValueError(f"must be a float, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"must be finite, got {value}")
    return value


def _check_optional_float(value: Any) -> float | None:
    return None if value is None else _check_float(value)


def _check_steps(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"must be a list of str, got {type(value).__name__}")
    for i, step in enumerate(value):
        try:
            _check_str(step)
        except ValueError as exc:
            raise ValueError(f"item {i} {exc}") from None
    return tuple(value)


def _check_json_value(value: Any, where: str) -> None:
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} must be finite, got {value}")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_json_value(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{where} keys must be str, got {type(key).__name__}")
            _check_json_value(item, f"{where}.{key}")
        return
    raise ValueError(f"{where} must be a JSON value (None/bool/int/float/str/list/dict), "
                     f"got {type(value).__name__}")


def _check_meta(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"must be a dict, got {type(value).__name__}")
    _check_json_value(value, "meta")
    return copy.deepcopy(value)


_CHECKERS: dict[Any, Callable[[Any], Any]] = {
    str: _check_str,
    int: _check_int,
    float | None: _check_optional_float,
    tuple[str, ...]: _check_steps,
    dict[str, Any]: _check_meta,
}


# ----------------------------------------------------------------------------------------------
# The shared record machinery.


class Record:
    """Base of all on-disk records: table-driven validation and dict conversion."""

    KIND: ClassVar[str]
    # field -> (lowest allowed, highest allowed); None means unbounded.
    BOUNDS: ClassVar[dict[str, tuple[float | None, float | None]]] = {}
    # (reason, predicate) pairs checked once every field is valid; reason is a format string
    # over the field names.
    INVARIANTS: ClassVar[tuple[tuple[str, Callable[[Any], bool]], ...]] = ()

    def __post_init__(self) -> None:
        for name, check in _field_checkers(type(self)):
            try:
                value = check(getattr(self, name))
                _check_bounds(value, self.BOUNDS.get(name))
            except ValueError as exc:
                raise RecordError(f"{type(self).__name__}.{name} {exc}") from None
            object.__setattr__(self, name, value)
        for reason, holds in self.INVARIANTS:
            if not holds(self):
                raise RecordError(f"{type(self).__name__}: {reason.format(**vars(self))}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict with ``schema_version`` and ``kind`` first."""
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "kind": self.KIND}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else copy.deepcopy(value)
        return out

    @classmethod
    def from_dict(cls: type[R], d: Mapping[str, Any]) -> R:
        """Build a record from ``to_dict`` output, rejecting anything that does not match exactly."""
        name = cls.__name__
        if not isinstance(d, Mapping):
            raise RecordError(f"{name}: expected a dict, got {type(d).__name__}")
        check_schema_version(d.get("schema_version"), where=name)
        if d.get("kind") != cls.KIND:
            raise RecordError(f"{name}: field 'kind' must be {cls.KIND!r}, got {d.get('kind')!r}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields) - {"schema_version", "kind"})
        if unknown:
            raise RecordError(f"{name}: unknown field(s) {', '.join(map(repr, unknown))}")
        missing = [n for n, f in fields.items() if n not in d and _is_required(f)]
        if missing:
            raise RecordError(f"{name}: missing field(s) {', '.join(map(repr, missing))}")
        return cls(**{n: d[n] for n in fields if n in d})


def check_schema_version(version: Any, where: str) -> None:
    """Raise ``RecordError`` unless ``version`` is a schema version this code can read."""
    if version is None:
        raise RecordError(f"{where}: missing field 'schema_version'")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise RecordError(f"{where}: field 'schema_version' must be a positive int, got {version!r}")
    if version > SCHEMA_VERSION:
        raise RecordError(f"{where}: schema_version {version} is newer than supported "
                          f"({SCHEMA_VERSION}); upgrade pav to read this data")


def _is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _check_bounds(value: Any, bounds: tuple[float | None, float | None] | None) -> None:
    if bounds is None or value is None:
        return
    low, high = bounds
    if low is not None and value < low:
        raise ValueError(f"must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"must be <= {high}, got {value}")


@functools.cache
def _field_checkers(cls: type[Record]) -> tuple[tuple[str, Callable[[Any], Any]], ...]:
    """(field name, checker) for each field of ``cls``, chosen by its type annotation."""
    hints = get_type_hints(cls)
    return tuple((f.name, _CHECKERS[hints[f.name]]) for f in dataclasses.fields(cls))


# ----------------------------------------------------------------------------------------------
# The records.


@dataclass(frozen=True)
class Problem(Record):
    """A question with its reference final answer; ``meta`` holds task-specific JSON extras."""

    problem_id: str
    question: str
    answer: str
    meta: dict[str, Any] = field(default_factory=dict, hash=False)

    KIND: ClassVar[str] = "problem"


@dataclass(frozen=True)
class Solution(Record):
    """One sampled solution, split into steps; ``outcome`` is its final-answer reward in [0, 1]."""

    problem_id: str
    solution_id: str
    steps: tuple[str, ...]
    policy_id: str
    outcome: float | None = None

    KIND: ClassVar[str] = "solution"
    BOUNDS: ClassVar[dict[str, tuple[float | None, float | None]]] = {"outcome": (0.0, 1.0)}


@dataclass(frozen=True)
class StepLabel(Record):
    """``n_correct`` of ``n_rollouts`` prover rollouts from the first ``prefix_len`` steps succeeded."""

    problem_id: str
    solution_id: str
    prefix_len: int  # number of solution steps in the prefix; 0 = the question alone
    n_correct: int
    n_rollouts: int
    policy_id: str
    prover_id: str
    tokens_generated: int = 0
    tokens_prompt: int = 0

    KIND: ClassVar[str] = "step_label"
    BOUNDS: ClassVar[dict[str, tuple[float | None, float | None]]] = {
        "prefix_len": (0, INT64_MAX),
        "n_correct": (0, INT64_MAX),
        "n_rollouts": (1, INT64_MAX),
        "tokens_generated": (0, INT64_MAX),
        "tokens_prompt": (0, INT64_MAX),
    }
    INVARIANTS: ClassVar[tuple[tuple[str, Callable[[Any], bool]], ...]] = (
        ("n_correct ({n_correct}) must be <= n_rollouts ({n_rollouts})",
         lambda r: r.n_correct <= r.n_rollouts),
    )

