"""KV states of decoded rows, kept from one sampler call to the next so a context that extends a
row is not encoded again (step-level beam search, step-at-a-time sampling).

A row that stops after sampling tokens ``x_0 .. x_t`` has fed the model its context's tokens and
``x_0 .. x_{t-1}``: its keys and values for exactly those ids are what a later call needs when
it continues ``context + x_0 .. x_t`` (the next call feeds only ``x_t`` and what follows). The store
maps those ids to the row's KV, as *parts*: the context's prefix (a view of the cohort's prefix
tensors, shared by all the context's rows, with a mask of its valid columns) and the row's own
suffix (a copy, since the suffix buffers are reused).

A lookup returns the longest common prefix of the new context's ids with any stored row's ids,
and that row's KV cut to it (views, no copy): the KV of a causal model's first n positions
depends on its first n ids only. Re-tokenising a row's text can merge its last tokens with what
follows (``" "`` then ``"\\n"`` becomes ``" \\n"``), or split a character's bytes differently further
back; the context then still reads everything before the first id that differs, and a context
that differs from every row early on still reads the few-shot header or system turn they share.
Only equal ids are used, so reuse never changes what is computed beyond floating-point rounding.
The rows are kept sorted, and the longest common prefix of ids with a sorted set is found next to
where the ids would be inserted, so a lookup costs two comparisons after a binary search.

The sampler keeps a store only inside `HFPolicy.reuse_prefixes()` and only one call's rows at a
time: memory is bounded by what one call held anyway, and a model trained between calls (RL) never
meets a stale cache.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch


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
        self._sorted: list[tuple[int, ...]] | None = None  # the stored ids in order, built at the first lookup

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, ids: tuple[int, ...], parts: tuple[Part, ...]) -> None:
        self._entries[ids] = parts
        self._sorted = None

    def longest(self, ids: list[int]) -> tuple[int, tuple[Part, ...]]:
        """(n, parts): the KV of ``ids[:n]``, where n is the longest common prefix of ``ids`` with a
        stored row's ids, at most ``len(ids) - 1`` (at least one id is left to feed); (0, ()) when
        no stored row starts with ``ids[0]``."""
        if not self._entries or len(ids) < 2:
            return 0, ()
        if self._sorted is None:
            self._sorted = sorted(self._entries)
        query = tuple(ids[:-1])
        at = bisect.bisect_left(self._sorted, query)
        n, best = max(((_common(query, self._sorted[i]), self._sorted[i]) for i in (at - 1, at)
                       if 0 <= i < len(self._sorted)), key=lambda c: c[0])
        return (n, _first(self._entries[best], n)) if n else (0, ())


def _common(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Length of the longest common prefix of a and b (a binary search over slice comparisons, which
    run in C)."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _first(parts: tuple[Part, ...], n: int) -> tuple[Part, ...]:
    """The first n real columns of ``parts`` (views)."""
    out = []
    for part in parts:
        if n <= 0:
            break
        length = part.length
        if length > n:  # cut this part after its n-th real column
            end = n if part.valid is None else int(part.valid.nonzero()[n - 1]) + 1
            valid = None if part.valid is None else part.valid[:end]
            part = Part([k[:, :end] for k in part.keys], [v[:, :end] for v in part.values], valid)
            length = n
        out.append(part)
        n -= length
    return tuple(out)


def write_parts(parts: tuple[Part, ...], keys: list[torch.Tensor], values: list[torch.Tensor], row: int,
                end: int) -> None:
    """Copy a sequence's parts into columns ``[end - n, end)`` of row ``row`` of per-layer buffers
    (B, H, L, d), where n is the parts' total real length."""
    start = end - sum(p.length for p in parts)
    for part in parts:
        for a, b in _runs(part):  # slices, not a boolean gather: one copy, no temporary
            for buf, src in zip((*keys, *values), (*part.keys, *part.values)):
                buf[row, :, start:start + b - a] = src[:, a:b]
            start += b - a


def _runs(part: Part) -> list[tuple[int, int]]:
    """The column ranges [a, b) of ``part``'s real columns, in order (left padding and a reuse gap
    split them; usually one or two)."""
    if part.valid is None:
        return [(0, part.keys[0].shape[1])]
    zero = torch.zeros(1, dtype=torch.int8, device=part.valid.device)  # the mask lives with the KV (a GPU's)
    edges = torch.diff(part.valid.to(torch.int8), prepend=zero, append=zero).nonzero().flatten().tolist()
    return list(zip(edges[::2], edges[1::2]))
