"""Progress of long loops: a bar on a terminal, a periodic log line anywhere else.

`progress_bar` is a drop-in for ``tqdm(...)``: with ``show`` it is tqdm's own bar (``tqdm.auto``, so
notebooks get a widget); without it, the same counter writes one plain log line every
``every`` seconds and one when the loop ends, so a job on a pipe, in CI or under a scheduler
shows that it is alive without filling its log with carriage returns.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

LOG_EVERY_S = 30.0
LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} {unit}, {elapsed} elapsed, {remaining} left"


class _LogLines:
    """A file for tqdm that turns each refresh into one log line."""

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._last = ""

    def write(self, text: str) -> None:
        line = text.strip("\r\n\x1b[A ")
        if line and line != self._last:  # tqdm repeats the final state when it closes
            self._log.info(line)
            self._last = line

    def flush(self) -> None:
        pass


def progress_bar(iterable: Any = None, *, show: bool, desc: str, total: int | None = None, initial: int = 0,
             unit: str = "it", every: float = LOG_EVERY_S, log: logging.Logger | None = None):
    """tqdm's bar when ``show``, else a tqdm that logs one line per ``every`` seconds on ``log``."""
    from tqdm.auto import tqdm

    if show:
        return tqdm(iterable, desc=desc, total=total, initial=initial, unit=unit)
    from tqdm import tqdm as plain

    return plain(iterable, desc=desc, total=total, initial=initial, unit=unit, file=_LogLines(log or logger),
                 mininterval=every, maxinterval=every, bar_format=LOG_FORMAT)
