"""KV states of decoded rows, kept from one sampler call to the next so a context that extends a
row is not encoded again (step-level beam search, step-at-a-time sampling).

A row that stops after sampling tokens ``x_0 .. x_t`` has fed the model its context's tokens and
``x_0 .. x_{t-1}``: its keys and values for exactly those ids are what a later call needs when
it continues ``context + x_0 .. x_t`` (the next call feeds only ``x_t`` and what follows). The store
maps those ids to the row's KV, as *parts*: the context's prefix (a view of the cohort's prefix
tensors, shared by all the context's rows, with a mask of its valid columns) and the row's own
suffix (a copy, since the suffix buffers are reused). A lookup takes the longest stored ids that
are a prefix of the new context's ids, trying the last `LOOKBACK` lengths (a re-tokenised context
may merge the last sampled token with what follows; then the match is shorter). A row is stored
under its ids and under its ids minus the last few (its KV minus as many columns, `SHORTER`):
re-tokenising the text may also merge the last *fed* tokens with the next one (``" "`` then
``"\n"`` becomes ``" \n"``), and the row is then still found, a token or two shorter. Only an exact id match is used,
so reuse never changes what is computed beyond floating-point rounding.

The sampler keeps a store only inside `HFPolicy.reuse_prefixes()` and only one call's rows at a
time: memory is bounded by what one call held anyway, and a model trained between calls (RL) never
meets a stale cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOOKBACK = 8  # id lengths tried below the new context's own length minus one
SHORTER = 4  # a row is also stored under its ids minus its last 1 .. SHORTER - 1 ids


@dataclass(frozen=True)
class Part:
    """Consecutive KV columns of one sequence: per layer (H, n, d), and which columns are real."""

    keys: list[torch.Tensor]  # per layer (H, n, d)
    values: list[torch.Tensor]
    valid: torch.Tensor | None = None  # (n,) bool; None: every column

    @property
    def length(self) -> int:
        return int(self.valid.sum()) if self.valid is not None else self.keys[0].shape[1]


class PrefixStore:
    """Token ids -> KV parts of the rows one sampler call decoded; see the module docstring."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, ...], tuple[Part, ...]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, ids: tuple[int, ...], parts: tuple[Part, ...]) -> None:
        self._entries[ids] = parts
        for drop in range(1, min(SHORTER, len(ids))):
            parts = _without_last(parts)
            if parts is None:
                break
            self._entries.setdefault(ids[:-drop], parts)

    def longest(self, ids: list[int]) -> tuple[int, tuple[Part, ...]]:
        """(n, parts): the longest stored ids equal to ``ids[:n]`` with ``n < len(ids)`` (at least
        one id is left to feed); (0, ()) when none is stored."""
        for n in range(len(ids) - 1, max(0, len(ids) - 1 - LOOKBACK), -1):
            parts = self._entries.get(tuple(ids[:n]))
            if parts is not None:
                return n, parts
        return 0, ()


def _without_last(parts: tuple[Part, ...]) -> tuple[Part, ...] | None:
    """``parts`` without their last column (None when that column is not a real one, or is absent)."""
    if not parts:
        return None
    *head, last = parts
    if last.keys[0].shape[1] == 0:  # an emptied part: drop from the one before
        return _without_last(tuple(head))
    if last.valid is not None and not bool(last.valid[-1]):
        return None
    valid = None if last.valid is None else last.valid[:-1]
    return (*head, Part([k[:, :-1] for k in last.keys], [v[:, :-1] for v in last.values], valid))


def write_parts(parts: tuple[Part, ...], keys: list[torch.Tensor], values: list[torch.Tensor], row: int,
                end: int) -> None:
    """Copy a sequence's parts into columns ``[end - n, end)`` of row ``row`` of per-layer buffers
    (B, H, L, d), where n is the parts' total real length."""
    start = end - sum(p.length for p in parts)
    for part in parts:
        n = part.length
        for buf, src in zip((*keys, *values), (*part.keys, *part.values)):
            buf[row, :, start:start + n] = src if part.valid is None else src[:, part.valid]
        start += n
