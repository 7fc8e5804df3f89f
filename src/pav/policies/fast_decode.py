"""The fast GPT-2 decode path of `HFPolicy.sample`: cohorts of contexts decoded on `FastGPT2`.

A *cohort* is a group of contexts prefilled together and decoded in step: its contexts and their
rollouts form a `PrefixGrid` (each prefix kept once, not copied per row), all its rows write the
same suffix column, and stopped rows stay in the grid, ignored, until repacking it saves
`FAST_PRUNE_FRACTION` of it. The grid is rectangular (the same number of rows per context), so when
contexts have very different numbers of live rows a repack spreads a context's rows over several
copies of its prefix (`_grid_width`): on the labelling bench 93% of the computed slots hold a live
row, against 82% when every context kept one grid context. Cohorts are packed from the contexts in
order (shortest first) up to ``batch_size`` rows; a context with more rows than that is split over
several cohorts.

Continuous batching (off by default: ``HFPolicy(cohorts=1)``): with ``cohorts > 1``,
whenever at least `REFILL_FRACTION` of ``batch_size`` rows are free, the next contexts that fit are
prefilled as a new cohort and decode alongside the running ones; one `FastGPT2.grids_step` runs
all cohorts' rows together, each cohort attending over its own grid. On one CPU thread it does not
pay: repacking already keeps a cohort's cost proportional to its live rows, so filling the batch
saves only the per-step fixed cost, which the extra attention ops of each cohort eat up (labelling
bench, 5 alternating runs each: median 43.5k tokens/s with one cohort, 43.0k with two where the
second starts once 87.5% of the batch is free; sampler bench 10% slower with 3 cohorts). Nor on an H200, where a
step's cost hardly depends on its rows: 4 cohorts labelled at 36k tokens/s against 45k with one
(batch 256), the per-cohort ops and prefills costing more than the fuller batch gains.

Python work per step is limited to rows that just sampled a token that may end them (the
delimiter's last character or eos) or reached their budget; a row's text is cut at an over-long
step when it stops, as on the transformers path (`pav.policies.base.cut_over_long`). The sampled
tokens are copied to the host once per step and kept there, so on a GPU a step waits for the device
once (+14% labelling throughput on an H200 at batch 256). Outputs depend on the seed and on ``batch_size`` (which rows
share a draw and a cohort), nothing else; with keyed noise (one seed per context,
`pav.policies.noise`) on the seeds alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch

from pav.policies.base import Generation, StepScan
from pav.policies.fast_gpt2 import FastGPT2, KVBuffer, PrefixGrid
from pav.policies.noise import step_salt
from pav.policies.prefix_store import Part, PrefixStore, write_parts

FAST_PRUNE_FRACTION = 0.1  # a cohort repacks its grid when that saves this share of it
GRID_SLACK = 1.25  # ... and shares prefixes only if the grid has at most this many slots per row
GROUP_COST = 1  # what one more grid context (one more copy of a prefix) costs, in grid slots
REFILL_FRACTION = 0.375  # with several cohorts: start a new cohort once this share of batch_size rows is free
# FastGPT2 prefills a cohort when its attention scores (contexts x heads x tokens^2) are at most this
# many floats (64 MB; the tiny policies' cohorts use ~1 MB); larger ones go through transformers
FAST_PREFILL_MAX_SCORES = 2**24
# contexts of a cohort that start with the same ids (a few-shot header, a system turn) read one copy of
# that prefix's KV, encoded once, when it is at least this many tokens (`shared_prefix`)
SHARED_PREFIX_MIN = 16
# a prefill in which the contexts' new ids fill less than PREFILL_FILL of the padded width (one context
# that reuses nothing among many that do) runs in several passes over consecutive rows, each as wide
# as its longest row, split where that saves more than PREFILL_PASS_COST ids per extra pass (`_passes`)
PREFILL_FILL = 0.5
PREFILL_PASS_COST = 32


class CohortHost(Protocol):
    """What the cohort decoder reads from its sampler (`pav.policies.hf.HFPolicy` is one): this
    module never imports the sampler, so imports point one way (hf -> fast_decode)."""

    device: torch.device
    batch_size: int
    cohorts: int
    max_positions: int | None
    eos_id: int | None
    pad_id: int
    _flagged: torch.Tensor  # (V,) bool on the host: tokens after which a row is looked at

    def _decode_texts(self, rows: list[list[int]]) -> list[str]: ...

    def _prefill(self, seqs: list[list[int]]) -> tuple[object, torch.Tensor, torch.Tensor]: ...


def left_padded(seqs: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token sequences as left-padded rows on ``device``: input_ids, mask, positions (G, T)."""
    input_ids = torch.nn.utils.rnn.pad_sequence(
        [torch.tensor(s) for s in seqs], batch_first=True, padding_value=pad_id, padding_side="left"
    ).to(device)  # (G, T)
    mask = torch.nn.utils.rnn.pad_sequence(
        [torch.ones(len(s), dtype=torch.long) for s in seqs], batch_first=True, padding_side="left"
    ).to(device)  # (G, T)
    return input_ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


class _Cohort:
    """One prefill group's rows decoding in step; results go to ``out[u][k]``."""

    def __init__(self, policy: CohortHost, fast: FastGPT2, units: list[tuple[int, int, int]],
                 ids: Sequence[list[int]], max_new_tokens: int, keys_of: Sequence[torch.Tensor] | None,
                 reuse: PrefixStore | None = None, keep: PrefixStore | None = None) -> None:
        device = policy.device
        seqs = [ids[u] for u, _, _ in units]
        hits = [reuse.longest(x) for x in seqs] if reuse is not None else [(0, ())] * len(seqs)
        hits, shared = shared_prefix(fast, seqs, hits, policy.device)
        cached, new = max(n for n, _ in hits), max(len(x) - n for x, (n, _) in zip(seqs, hits))
        counts = [c for _, _, c in units]
        one_each = max(counts) == 1  # one row per context: the prefill's buffer becomes the rows' own
        adopted = None
        if len(seqs) * fast.n_head * new * (cached + new) <= FAST_PREFILL_MAX_SCORES:
            adopted, logits, mask = _prefill(policy, fast, seqs, hits, room=max_new_tokens if one_each else 0)
            width = mask.shape[1]
            prefix_keys, prefix_values = [k[:, :, :width] for k in adopted.keys], [v[:, :, :width] for v in adopted.values]
        else:  # long contexts: transformers' attention does not materialise the scores
            cache, logits, mask = policy._prefill(seqs)
            prefix_keys, prefix_values = [x.keys for x in cache.layers], [x.values for x in cache.layers]
            hits, cached = [(0, ())] * len(seqs), 0
        self.reused = sum(n for n, _ in hits) - shared  # context tokens not encoded by this cohort
        self.ids, self.keep = ids, keep
        self.kept: list[tuple[int, int]] = []  # (slot, tokens fed) of stopped rows not yet in ``keep``
        self.hits, self.cached = {u: h for (u, _, _), h in zip(units, hits)}, cached  # stored KV each context reused
        self.owner = [(u, k0 + j) for u, k0, c in units for j in range(c)]  # (context, rollout) of each row
        rows = torch.repeat_interleave(torch.arange(len(units)), torch.tensor(counts)).to(device)
        n_ctx, per = len(counts), max(counts)
        if per == 1 or n_ctx * per > GRID_SLACK * len(rows):  # sharing does not pay: one row per context
            contexts, counts, n_ctx, per = rows, [1] * len(rows), len(rows), 1
        else:
            contexts = torch.arange(n_ctx, device=device)
        slot_row: list[int] = []  # cohort row of each grid slot, -1: an empty slot
        first = 0
        for c in counts:
            slot_row += list(range(first, first + c)) + [-1] * (per - c)
            first += c
        n_rows = len(rows)
        ctx_len = mask[contexts].sum(-1)  # (G,) real context tokens = position of the first new token
        self.ends: dict[int, list[int]] = {}  # step -> cohort rows whose budget ends with that step's token
        lens = ctx_len.tolist()
        for r, c in enumerate(slot_row):
            if c >= 0:
                m = lens[r // per]
                budget = max_new_tokens if policy.max_positions is None else min(max_new_tokens, policy.max_positions - m)
                self.ends.setdefault(budget - 1, []).append(c)
        longest = max(self.ends) + 1  # the cohort stops when its longest budget ends
        if one_each and adopted is not None:  # rows in context order, with room for their new tokens: no copy
            self.grid = PrefixGrid(prefix_keys, prefix_values, mask.bool(), 1, longest, flat=adopted)
        else:
            self.grid = PrefixGrid([k[contexts] for k in prefix_keys], [v[contexts] for v in prefix_values],
                                   mask[contexts].bool(), per, longest)
        slot_ctx = torch.arange(n_ctx, device=device).repeat_interleave(per)  # (G*R,)
        self.logits = logits[contexts][slot_ctx]  # (n, V)
        self.positions = ctx_len[slot_ctx]  # (n,) position of the token fed next
        self.tokens = torch.empty(self.grid.n_slots, longest, dtype=torch.long)  # (n, T), on the host
        self.slot_row, self.per = slot_row, per
        self.where = {r: i for i, r in enumerate(slot_row) if r >= 0}  # grid slot of each cohort row
        self.live_in = list(counts)  # live rows per grid context
        self.steps_seen = [0] * n_rows
        self.results: list[Generation | None] = [None] * n_rows
        self.done = [r < 0 for r in slot_row]  # per slot: empty or stopped
        self.n_live = n_rows
        self.t = 0
        self.tok: torch.Tensor | None = None
        self.keys: torch.Tensor | None = None  # (n, 2) keyed-noise keys of the slots (empty slots: 0)
        if keys_of is not None:  # gathered on the host, moved in one copy
            zero = torch.zeros(2, dtype=torch.int64)
            self.keys = torch.stack([keys_of[self.owner[r][0]][self.owner[r][1]] if r >= 0 else zero
                                     for r in slot_row]).to(device)

    def after_draw(self, policy: CohortHost, tok: torch.Tensor, stop: Callable[[str, int], StepScan],
                   cut: Callable[[Generation, list[int]], Generation], out: list[list[Generation | None]]) -> None:
        """Record the tokens of step t (n,), stop rows, write finished results (after ``cut``) to ``out``."""
        t, slot_row, results = self.t, self.slot_row, self.results
        host = tok.cpu()  # (n,) the step's one wait for the device
        self.tokens[: self.grid.n_slots, t] = host
        hits = policy._flagged[host].nonzero().flatten().tolist()
        ending = self.ends.get(t, ())
        if hits or ending:
            kinds: dict[int, str] = {}  # slot -> why we look at it
            values = host.tolist() if hits else None
            for i in hits:
                if not self.done[i]:
                    kinds[i] = "eos" if values[i] == policy.eos_id else "delim"
            ended = {self.where[r] for r in ending if results[r] is None}  # live rows at their budget
            for i in ended:
                kinds.setdefault(i, "budget")
            look = list(kinds)
            rows = self.tokens[look, : t + 1].tolist()
            texts = policy._decode_texts(rows) if look else []
            for i, ids, text in zip(look, rows, texts):
                r, kind = slot_row[i], kinds[i]
                if kind == "eos":
                    results[r] = Generation(text, t + 1, True)
                elif kind == "delim":
                    scan = stop(text, self.steps_seen[r])
                    self.steps_seen[r] = scan.n_steps
                    if scan.end is not None:
                        results[r] = Generation(text[: scan.end], t + 1, scan.finished)
                    elif i in ended:
                        results[r] = Generation(text, t + 1, False)
                else:
                    results[r] = Generation(text, t + 1, False)
                if results[r] is not None:
                    results[r] = cut(results[r], ids)
                    if self.keep is not None:
                        self.kept.append((i, t))
                    self.done[i] = True
                    self.n_live -= 1
                    self.live_in[i // self.per] -= 1
                    u, k = self.owner[r]
                    out[u][k] = results[r]
        self.tok = tok

    def store_kept(self) -> None:
        """Store the KV of the rows that stopped since the last call (`prefix_store`): each row's
        context and the tokens it fed, under those ids, gathered in one copy per layer. A stopped
        row's columns are not written again until the grid is repacked, so this runs just before a
        repack and when the cohort ends."""
        if not self.kept:
            return
        slots = [i for i, _ in self.kept]
        fed = [t for _, t in self.kept]
        owners = [self.owner[self.slot_row[i]][0] for i in slots]
        tokens = self.tokens[slots, : max(fed)].tolist()
        grid = self.grid
        if grid.flat is not None:  # one buffer per row: copy what this call added, refer to what it reused
            starts = [self.cached if self.hits[u][0] else 0 for u in owners]
            for start in set(starts):
                group = [j for j, s in enumerate(starts) if s == start]
                index = torch.tensor([slots[j] for j in group], device=self.positions.device)
                end = grid.P + max(fed[j] for j in group)
                keys = [k[index, :, start:end] for k in grid.flat.keys]  # (n, H, end - start, d): copies
                values = [v[index, :, start:end] for v in grid.flat.values]
                valid = grid.flat.bias[index, 0, 0, start:end] == 0
                for a, j in enumerate(group):
                    n = grid.P + fed[j] - start
                    part = Part([k[a, :, :n] for k in keys], [v[a, :, :n] for v in values], valid[a, :n])
                    u = owners[j]
                    self.keep.put((*self.ids[u], *tokens[j][: fed[j]]), (*self.hits[u][1], part))
        else:
            per = self.per
            index_g = torch.tensor([i // per for i in slots], device=self.positions.device)
            index_r = torch.tensor([i % per for i in slots], device=self.positions.device)
            end = max(fed)
            layers = [grid.suffix(layer) for layer in range(len(grid.prefix_keys))]
            keys = [k[:, :, :, :end][index_g, :, index_r] for k, _ in layers]  # (n, H, end, d): copies
            values = [v[:, :, :, :end][index_g, :, index_r] for _, v in layers]
            prefixes: dict[int, Part] = {}  # per grid context, shared by its rows (views)
            for a, (i, t) in enumerate(self.kept):
                g = i // per
                if g not in prefixes:
                    prefixes[g] = Part([k[g] for k in grid.prefix_keys], [v[g] for v in grid.prefix_values],
                                       grid.prefix_valid[g])
                suffix = Part([k[a, :, :t] for k in keys], [v[a, :, :t] for v in values])
                self.keep.put((*self.ids[owners[a]], *tokens[a][:t]), (prefixes[g], suffix))
        self.kept = []

    def repack(self) -> None:
        """Drop stopped rows and empty contexts from the grid when that saves enough of it. The grid
        stays rectangular (every grid context has the same number of slots), so a context's live rows
        may be split over several grid contexts, each a copy of its prefix (`_grid_width`)."""
        live_in, per = self.live_in, self.per
        if self.n_live > (1 - FAST_PRUNE_FRACTION) * len(self.slot_row):  # no repacking can pay
            return
        kept = [g for g, k in enumerate(live_in) if k]
        width = _grid_width([live_in[g] for g in kept])
        n_pieces = sum(-(-live_in[g] // width) for g in kept)
        if n_pieces * width > (1 - FAST_PRUNE_FRACTION) * len(self.slot_row):
            return
        contexts, slots, new_rows, new_live = [], [], [], []
        for g in kept:
            mine = [i for i in range(g * per, (g + 1) * per) if not self.done[i]]
            for a in range(0, len(mine), width):
                piece = mine[a : a + width]
                contexts.append(g)
                slots += piece + [piece[0]] * (width - len(piece))
                new_rows += [self.slot_row[i] for i in piece] + [-1] * (width - len(piece))
                new_live.append(len(piece))
        self.store_kept()
        device = self.positions.device
        index = torch.tensor(slots, device=device)
        self.grid.compact(torch.tensor(contexts, device=device), index, width, self.t)
        self.tokens[: len(slots), : self.t + 1] = self.tokens[torch.tensor(slots), : self.t + 1]
        self.tok, self.positions = self.tok[index], self.positions[index]
        if self.keys is not None:
            self.keys = self.keys[index]
        self.slot_row, self.per = new_rows, width
        self.where = {r: i for i, r in enumerate(new_rows) if r >= 0}
        self.live_in = new_live
        self.done = [r < 0 for r in new_rows]


def _prefill(policy: CohortHost, fast: FastGPT2, seqs: list[list[int]], hits: list[tuple[int, tuple[Part, ...]]],
             room: int = 0) -> tuple[KVBuffer, torch.Tensor, torch.Tensor]:
    """Encode contexts once on FastGPT2: a buffer whose columns ``[:T]`` hold their keys and values
    (G, n_head, T, head_dim) per layer, with ``room`` more columns after them, the last logits (G, V)
    in float32, and the mask (G, T) of real columns. ``hits[g]`` = (n, parts): the first n ids of
    context g have stored KV (`prefix_store`), written right-aligned into columns ``[:C]`` (C the
    longest such n); the other ids are encoded, left-padded, after them."""
    cached = max(n for n, _ in hits)
    input_ids, new_mask, _ = left_padded([x[n:] for x, (n, _) in zip(seqs, hits)], policy.pad_id, policy.device)
    g, width = input_ids.shape
    buf = fast.buffer(g, cached + width + room)
    reused = torch.arange(cached, device=policy.device)[None, :] >= cached - torch.tensor(
        [n for n, _ in hits], device=policy.device)[:, None]  # (G, C) True where stored KV lies
    pad = cached - min(n for n, _ in hits)  # every row's stored KV covers the columns after this
    for x in (*buf.keys, *buf.values):  # masked columns are still read: they must be finite
        x[:, :, :pad].zero_()
    for row, (n, parts) in enumerate(hits):
        if n:
            write_parts(parts, buf.keys, buf.values, row, cached)
    mask = torch.cat([reused.long(), new_mask], dim=1)  # (G, C + T')
    buf.set_valid(mask.bool())
    positions = torch.tensor([n for n, _ in hits], device=policy.device)[:, None] + (new_mask.cumsum(-1) - 1).clamp(min=0)
    new = new_mask.sum(-1).tolist()  # (G,) ids each context encodes, right-aligned in the last columns
    if sum(new) >= PREFILL_FILL * g * width:  # the rows need similar widths: one pass
        return buf, fast.forward(input_ids, positions, buf, cached, last_only=True).float(), mask
    # passes over consecutive rows, each encoding only as many columns as its longest row needs, so one
    # context that reuses nothing does not make the others compute its width; columns no pass writes are masked
    for x in (*buf.keys, *buf.values):
        x[:, :, cached: cached + width].zero_()
    logits = []
    for a, b in _passes(new):
        w = max(new[a:b])
        logits.append(fast.forward(input_ids[a:b, width - w:], positions[a:b, width - w:], _Rows(buf, a, b),
                                   cached + width - w, last_only=True))
    return buf, torch.cat(logits).float(), mask


def _passes(new: list[int]) -> list[tuple[int, int]]:
    """Row ranges [a, b) covering rows with ``new`` ids to encode, in order, that minimise the ids
    computed (each pass is rows x its longest row) plus `PREFILL_PASS_COST` per pass: e.g. ids
    (1, 1, 1, 40, 1, 1) run as (0, 3), (3, 4), (4, 6). Exact, O(rows^2) in numpy."""
    n = np.asarray(new)
    best, cut = np.zeros(len(n) + 1), np.zeros(len(n) + 1, dtype=int)  # best cost of rows [:b], its last pass's start
    for b in range(1, len(n) + 1):
        widest = np.maximum.accumulate(n[:b][::-1])[::-1]  # widest[a] = max(new[a:b])
        cost = best[:b] + (b - np.arange(b)) * widest + PREFILL_PASS_COST
        cut[b] = int(cost.argmin())
        best[b] = cost[cut[b]]
    out, b = [], len(n)
    while b:
        out.append((int(cut[b]), b))
        b = int(cut[b])
    return out[::-1]


class _Rows:
    """Rows ``[a, b)`` of a `KVBuffer`, as a forward pass reads and writes them (views, no copy)."""

    def __init__(self, buf: KVBuffer, a: int, b: int) -> None:
        self.keys, self.values = [k[a:b] for k in buf.keys], [v[a:b] for v in buf.values]
        self.bias, self.max_len = buf.bias[a:b], buf.max_len


def shared_prefix(fast: FastGPT2, seqs: list[list[int]], hits: list[tuple[int, tuple[Part, ...]]],
                  device: torch.device) -> tuple[list[tuple[int, tuple[Part, ...]]], int]:
    """``hits`` with every context whose stored prefix is shorter than the cohort's longest common
    prefix reading that prefix instead, encoded once in a pass of its own, when it is at least
    `SHARED_PREFIX_MIN` ids (one id at least is left for each context to feed). A few-shot
    prompt's header is then encoded once per cohort, not once per problem, and a context that
    finds nothing stored does not make the others wait while it encodes its header. Only exact
    ids are shared, so what is computed is what encoding each context whole computes, up to
    floating-point rounding. Returns the new hits and the tokens the shared pass encoded (0: none)."""
    if len(seqs) < 2:
        return hits, 0
    first, n = seqs[0], min(len(x) for x in seqs) - 1
    for other in seqs[1:]:
        n = next((i for i in range(n) if other[i] != first[i]), n)
    todo = [g for g, (m, _) in enumerate(hits) if m < n]
    if n < SHARED_PREFIX_MIN or not todo:
        return hits, 0
    buf = fast.buffer(1, n)  # its key mask lets every column be read
    fast.forward(torch.tensor([first[:n]], device=device), torch.arange(n, device=device)[None, :], buf, 0,
                 last_only=True)
    part = (Part([k[0] for k in buf.keys], [v[0] for v in buf.values]),)
    out = list(hits)
    for g in todo:
        out[g] = (n, part)
    return out, n


def _grid_width(live: list[int]) -> int:
    """Rows per grid context for contexts with ``live`` rows each: the width whose grid costs least,
    counting its slots plus `GROUP_COST` slots per grid context (each reads its own prefix); ties
    go to the wider grid. E.g. live rows (16, 3, 2, 1): width 16 is 64 slots in 4 grid contexts,
    width 4 is 28 slots in 7 (context 0 split in 4)."""
    return min(range(max(live), 0, -1), key=lambda w: sum(-(-k // w) for k in live) * (w + GROUP_COST))


def decode_cohorts(
    policy: CohortHost,
    fast: FastGPT2,
    ids: Sequence[list[int]],
    order: Sequence[int],
    rows_of: Sequence[int],
    stop: Callable[[str, int], StepScan],
    cut: Callable[[Generation, list[int]], Generation],
    draw: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
    max_new_tokens: int,
    keys_of: Sequence[torch.Tensor] | None = None,
    reuse: PrefixStore | None = None,
    keep: PrefixStore | None = None,
) -> tuple[list[list[Generation]], int]:
    """Sample ``rows_of[u]`` rollouts of each context ``ids[u]``, contexts taken in ``order``;
    returns the generations of each context, rollout k at index k. ``keys_of[u]`` (rows_of[u], 2):
    keyed-noise keys of each context's rows (None: the call's generator). ``stop``: the stop rule
    (`pav.policies.base.scan_steps`); ``cut``: a stopped row's over-long-step cut. ``reuse``: stored
    KV of earlier rows that contexts may extend; ``keep``: where this call's rows store theirs. Also
    returns how many context tokens were read from stored or shared KV instead of being encoded."""
    batch, max_cohorts = policy.batch_size, policy.cohorts
    out: list[list[Generation | None]] = [[None] * k for k in rows_of]
    units = []  # (context, first rollout, rows): a context with more rows than a batch is split
    for u in order:
        units += [(u, k0, min(batch, rows_of[u] - k0)) for k0 in range(0, rows_of[u], batch)]
    units.reverse()  # pop() takes the next one
    last_position = (policy.max_positions or 2**62) - 1
    cohorts: list[_Cohort] = []
    reused = 0
    while units or cohorts:
        free = batch - sum(c.n_live for c in cohorts)
        if units and (not cohorts or (free >= REFILL_FRACTION * batch and len(cohorts) < max_cohorts)):
            group = []
            while units and (units[-1][2] <= free or not (group or cohorts)):
                free -= units[-1][2]
                group.append(units.pop())
            if group:
                cohorts.append(_Cohort(policy, fast, group, ids, max_new_tokens, keys_of, reuse, keep))
                reused += cohorts[-1].reused
        logits = cohorts[0].logits if len(cohorts) == 1 else torch.cat([c.logits for c in cohorts])
        salt = None if keys_of is None else torch.cat([step_salt(c.keys, c.t) for c in cohorts])  # (N,)
        tok = draw(logits, salt)  # (N,)
        a = 0
        for c in cohorts:
            b = a + c.grid.n_slots
            c.after_draw(policy, tok[a:b], stop, cut, out)
            a = b
        for c in cohorts:
            if not c.n_live:
                c.store_kept()
        cohorts = [c for c in cohorts if c.n_live]
        if not cohorts:
            continue
        for c in cohorts:
            c.repack()
        tokens = cohorts[0].tok if len(cohorts) == 1 else torch.cat([c.tok for c in cohorts])
        positions = cohorts[0].positions if len(cohorts) == 1 else torch.cat([c.positions for c in cohorts])
        logits = fast.grids_step(tokens, positions, [(c.grid, c.t) for c in cohorts]).float()  # (N, V)
        a = 0
        for c in cohorts:
            b = a + c.grid.n_slots
            c.logits = logits[a:b]
            c.positions = (c.positions + 1).clamp_(max=last_position)  # stopped rows may run past the window
            c.t += 1
            a = b
    return out, reused  # type: ignore[return-value]
