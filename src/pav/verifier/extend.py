"""Verifier values of solutions that extend solutions scored just before, reading only their new tokens.

Step-level beam search scores, at every depth, candidates that are a kept beam prefix plus one new
step; scoring each from scratch re-reads the whole prefix (the question and every earlier step) for
every candidate, and on the built-in task that was most of the search's time. Here a verifier keeps,
for every solution of its last call, the keys and values (KV) of its tokens and its prefix values;
a solution whose token ids start with a stored solution's ids, ending at one of its own prefix ends,
takes that solution's KV as its past and its values for those prefixes, and only the tokens after
them are fed to the backbone (through the public `transformers` Cache API: a `DynamicCache` filled
with `update`). The match is on exact token ids and prefix positions, so what is computed is what
a full pass computes, up to floating-point rounding.

Memory: a stored solution's KV is its parent's KV (one contiguous copy, shared by the parent's
children) plus a copy of its own new columns, and only the last call's solutions are kept, so a beam
search holds about one copy of its beams plus the new steps of one depth. A verifier with log-prob features (a reference model)
reads every token, so it is always scored in full (`VerifierScorer` checks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pav.policies.prefix_store import Part
from pav.verifier.model import Encoded, ValueVerifier, warn_encoding


@dataclass(frozen=True)
class Scored:
    """One scored solution as a later call may extend it: its prefix ends and values, and its KV."""

    positions: tuple[int, ...]
    values: np.ndarray  # (len(positions),)
    parts: tuple[Part, ...]  # KV of its tokens [0, positions[-1]], in order


Store = dict[tuple[int, ...], Scored]  # a solution's token ids -> what scoring it left


def _longest(store: Store, e: Encoded) -> tuple[int, Scored | None]:
    """(number of prefixes found, entry): the stored solution with the most of ``e``'s prefixes."""
    for h in range(len(e.positions) - 1, -1, -1):
        hit = store.get(tuple(e.input_ids[: e.positions[h] + 1]))
        if hit is not None and hit.positions == tuple(e.positions[: h + 1]):
            return h + 1, hit
    return 0, None


@torch.no_grad()
def extend_values(verifier: ValueVerifier, encoded: Sequence[Encoded], store: Store,
                  batch_size: int) -> tuple[list[np.ndarray], Store]:
    """`ValueVerifier.values_of` of ``encoded``, reusing ``store`` (the last call's solutions), and
    the store this call leaves (its own solutions)."""
    if verifier.reference is not None:
        raise ValueError("a verifier with log-prob features reads every token: score it with values_of")
    warn_encoding(encoded, verifier.max_length)
    out = [np.zeros(0, dtype=np.float32) for _ in encoded]
    new: Store = {}
    todo = []  # (index, prefixes found, their entry)
    for i, e in enumerate(encoded):
        if not e.positions:
            continue
        found, hit = _longest(store, e)
        if found == len(e.positions):  # scored before, whole: nothing new to read
            out[i], new[tuple(e.input_ids)] = hit.values, hit
        else:
            todo.append((i, found, hit))
    flat: dict[int, Scored] = {}  # a parent's parts joined into one, once for all its children
    todo = [(i, found, hit if hit is None else flat.setdefault(id(hit), _joined(hit))) for i, found, hit in todo]
    todo.sort(key=lambda t: len(encoded[t[0]].input_ids) - _reused(encoded[t[0]], t[1]))  # similar new lengths
    was_training = verifier.training
    verifier.eval()
    try:
        for start in range(0, len(todo), batch_size):
            rows = todo[start: start + batch_size]
            values, parts = _forward(verifier, [(encoded[i], found, hit) for i, found, hit in rows])
            for (i, found, hit), v, p in zip(rows, values, parts):
                e = encoded[i]
                old = hit.values if hit is not None else np.zeros(0, dtype=np.float32)
                out[i] = np.concatenate([old, v]).astype(np.float32)
                new[tuple(e.input_ids)] = Scored(tuple(e.positions), out[i], (hit.parts if hit else ()) + (p,))
    finally:
        verifier.train(was_training)
    return out, new


def _joined(entry: Scored) -> Scored:
    """``entry`` with its KV parts concatenated into one (a chain of parts grows by one per depth)."""
    if len(entry.parts) == 1:
        return entry
    keys = [torch.cat(layer, dim=1) for layer in zip(*(p.keys for p in entry.parts))]
    values = [torch.cat(layer, dim=1) for layer in zip(*(p.values for p in entry.parts))]
    return Scored(entry.positions, entry.values, (Part(keys, values),))


def _reused(e: Encoded, found: int) -> int:
    """Tokens of ``e`` covered by its first ``found`` prefixes."""
    return e.positions[found - 1] + 1 if found else 0


def _forward(verifier: ValueVerifier, rows: list[tuple[Encoded, int, Scored | None]]
             ) -> tuple[list[np.ndarray], list[Part]]:
    """Values of each row's new prefixes and the KV of its new tokens: one backbone pass over the
    new tokens (right-padded) after the reused ones (left-padded into a shared past)."""
    from transformers import DynamicCache

    from pav.policies.hf import cache_argument

    device = verifier.head.weight.device
    reused = [_reused(e, found) for e, found, _ in rows]
    fresh = [e.input_ids[n:] for (e, _, _), n in zip(rows, reused)]
    P, T, B = max(reused), max(len(f) for f in fresh), len(rows)
    input_ids = torch.full((B, T), verifier.pad_id, dtype=torch.long)
    mask = torch.zeros(B, P + T, dtype=torch.long)
    position_ids = torch.zeros(B, T, dtype=torch.long)
    for b, (n, ids) in enumerate(zip(reused, fresh)):
        input_ids[b, : len(ids)] = torch.tensor(ids)
        mask[b, P - n: P + len(ids)] = 1
        position_ids[b] = n + torch.arange(T).clamp(max=len(ids) - 1)  # padding repeats the last position
    cache = DynamicCache(config=verifier.backbone.config)
    if P:
        stored = next(hit.parts[0] for _, _, hit in rows if hit is not None)
        like = [*stored.keys, *stored.values]
        buffers = [torch.zeros((B, *x.shape[:-2], P, x.shape[-1]), dtype=x.dtype, device=device) for x in like]
        children: dict[int, list[int]] = {}  # rows by parent: a parent's KV is written to its rows at once
        for b, (_, _, hit) in enumerate(rows):
            if hit is not None:
                children.setdefault(id(hit), []).append(b)
        parents = {id(hit): hit for _, _, hit in rows if hit is not None}
        for key, where in children.items():
            (part,) = parents[key].parts
            idx = torch.tensor(where, device=device)
            for buf, src in zip(buffers, (*part.keys, *part.values)):
                buf[idx, :, P - src.shape[1]:] = src
        n_layer = len(stored.keys)
        for layer in range(n_layer):
            cache.update(buffers[layer], buffers[n_layer + layer], layer)
    out = verifier.backbone(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                            position_ids=position_ids.to(device), use_cache=True,
                            **{cache_argument(verifier.backbone): cache})
    read = [[p - n for p in e.positions[found:]] for (e, found, _), n in zip(rows, reused)]
    index = torch.tensor([r + [r[-1]] * (T - len(r)) for r in read], device=device)  # (B, K), padded
    hidden = out.last_hidden_state.gather(1, index[..., None].expand(-1, -1, out.last_hidden_state.shape[-1]))
    values = torch.sigmoid(verifier.head(hidden.float()).squeeze(-1)).cpu().numpy()  # (B, K)
    layers = cache.layers
    parts = [Part([x.keys[b, :, P: P + len(ids)].clone() for x in layers],
                  [x.values[b, :, P: P + len(ids)].clone() for x in layers]) for b, ids in enumerate(fresh)]
    return [values[b, : len(r)] for b, r in enumerate(read)], parts
