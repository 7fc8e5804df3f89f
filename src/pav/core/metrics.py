"""Metrics logging: one JSON object per line in ``metrics.jsonl``.

Each line is ``{"step": int, "time": seconds since the logger started, **metrics}``. Keys are
namespaced by stage (``label/...``, ``verifier/...``, ``rl/...``). Every line is flushed as it is
written, so a crashed run keeps its metrics; ``read_metrics`` skips a torn last line.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
_RESERVED = ("step", "time")


def _metrics_path(path: str | Path) -> Path:
    """``path`` itself, or ``path/metrics.jsonl`` when ``path`` is a directory."""
    path = Path(path)
    return path / METRICS_FILE if path.is_dir() else path


def _check_metric(key: Any, value: Any) -> float | int:
    if not isinstance(key, str) or not key:
        raise ValueError(f"metric key must be a non-empty str, got {key!r}")
    if key in _RESERVED:
        raise ValueError(f"metric key {key!r} is reserved")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"metric {key!r} must be a real number, got {type(value).__name__}")
    if isinstance(value, numbers.Integral):
        return int(value)
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"metric {key!r} is not finite: {value}")
    return value


class MetricsLogger:
    """Append metrics to ``path`` (a file, or a run directory holding ``metrics.jsonl``).

    Use as a context manager, or call ``close()``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = _metrics_path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8", newline="\n")
        self._start = time.monotonic()

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        """Write one line; rejects (before writing anything) a bad step, key or non-finite value."""
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise ValueError(f"step must be an int, got {step!r}")
        clean = {key: _check_metric(key, value) for key, value in metrics.items()}
        line = {"step": int(step), "time": round(time.monotonic() - self._start, 6), **clean}
        self._file.write(json.dumps(line, ensure_ascii=False, allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All lines of a metrics file (or a run directory's ``metrics.jsonl``), in order."""
    path = _metrics_path(path)
    lines = path.read_text(encoding="utf-8").split("\n")
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except ValueError as exc:
            if lineno == len(lines):  # no trailing newline: a write cut short by a crash
                logger.warning("%s:%d: skipping a torn last line", path, lineno)
                continue
            raise ValueError(f"{path}:{lineno}: invalid JSON: {exc}") from exc
    return rows


def trim_metrics(path: str | Path, step: int) -> None:
    """Drop the lines a killed run wrote after the checkpoint (at ``step``) it resumes from."""
    from pav.core.io import atomic_open

    path = _metrics_path(path)
    if not path.is_file():
        return
    rows = read_metrics(path)
    keep = [r for r in rows if r["step"] <= step]
    if len(keep) < len(rows):
        with atomic_open(path, "w") as f:
            f.writelines(json.dumps(r, allow_nan=False) + "\n" for r in keep)
