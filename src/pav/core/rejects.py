"""Reading user-supplied JSONL that may be broken: keep the good records, account for every bad one.

`read_jsonl_lenient` reads a file line by line and never raises on a bad line. A UTF-8 byte-order
mark and CRLF line ends are accepted; every other problem is a `Reject` naming the file, the line,
the field (``""`` for the whole line) and the reason: invalid UTF-8, invalid JSON, a ``NaN`` /
``Infinity`` literal (not JSON, though Python's ``json`` accepts it), a line over ``max_line_bytes``,
a value that is not an object. Callers add their own rejects (missing or wrong-typed fields, empty
steps, duplicate ids) to the same `RejectLedger`, which writes ``rejects.jsonl`` and refuses a
source whose rejected share is above ``max_reject_rate`` (`TooManyRejects`).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pav.core.io import atomic_open

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 1 << 20


@dataclass(frozen=True)
class Reject:
    file: str
    line: int  # 1-based line (JSONL) or record index + 1 (other formats)
    field: str  # "" when the whole line is bad
    reason: str


class TooManyRejects(ValueError):
    """A source's rejected share is above the configured rate; ``ledger`` holds every reject."""

    def __init__(self, message: str, ledger: RejectLedger) -> None:
        super().__init__(message)
        self.ledger = ledger


@dataclass
class RejectLedger:
    """Rejects of one or more sources, with the counts of records read."""

    max_reject_rate: float = 0.05
    rejects: list[Reject] = field(default_factory=list)
    read: Counter = field(default_factory=Counter)  # records seen per file, good and bad

    def add(self, file: str, line: int, field_: str, reason: str) -> None:
        self.rejects.append(Reject(str(file), line, field_, reason))

    def ordered(self) -> list[Reject]:
        """Rejects by file and line (line-level ones are found before field-level ones)."""
        return sorted(self.rejects, key=lambda r: (r.file, r.line))

    def check(self, file: str) -> None:
        """Raise `TooManyRejects` if ``file``'s rejected share exceeds the rate; log any rejects."""
        bad = sum(r.file == str(file) for r in self.rejects)
        total = self.read[str(file)]
        if bad:
            log.warning("%s: %d of %d records rejected (see rejects.jsonl), e.g. line %d: %s", file, bad, total,
                        *next((r.line, r.reason) for r in self.ordered() if r.file == str(file)))
        if total and bad / total > self.max_reject_rate:
            raise TooManyRejects(f"{file}: {bad} of {total} records rejected, above the allowed share "
                                 f"{self.max_reject_rate:g} (raise it with max_reject_rate, or fix the file)", self)

    def write(self, path: str | Path) -> Path | None:
        """``rejects.jsonl`` with one line per reject (nothing when there are none)."""
        if not self.rejects:
            return None
        with atomic_open(path) as f:
            f.writelines(json.dumps(asdict(r)) + "\n" for r in self.ordered())
        return Path(path)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} overflows to a non-finite number")
    return value


def read_jsonl_lenient(path: str | Path, ledger: RejectLedger,
                       max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every good line; bad lines go to ``ledger``. Blank lines are skipped."""
    name = str(path)
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if len(raw) > max_line_bytes:
                ledger.read[name] += 1
                ledger.add(name, lineno, "", f"line over {max_line_bytes} bytes")
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                ledger.read[name] += 1
                ledger.add(name, lineno, "", f"invalid UTF-8 at byte {exc.start}")
                continue
            if not text.strip():
                continue
            ledger.read[name] += 1
            try:
                obj = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
            except ValueError as exc:
                reason = f"invalid JSON ({exc.msg})" if isinstance(exc, json.JSONDecodeError) else str(exc)
                ledger.add(name, lineno, "", reason)
                continue
            if not isinstance(obj, dict):
                ledger.add(name, lineno, "", f"a JSON {type(obj).__name__}, not an object")
                continue
            yield lineno, obj
