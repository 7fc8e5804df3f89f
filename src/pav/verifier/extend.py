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
    parts: tuple[Part, ...]  # the backbone's KV of its tokens [0, positions[-1]], in order
    reference: tuple[Part, ...] = ()  # the reference's KV of the same tokens (log-prob features)
    run_min: float = 0.0  # the log-prob features' running minimum at its last prefix


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
    for _, _, hit in todo:
        if hit is not None and id(hit) not in flat:
            flat[id(hit)] = _joined(hit)
    todo = [(i, found, hit if hit is None else flat[id(hit)]) for i, found, hit in todo]
    todo.sort(key=lambda t: len(encoded[t[0]].input_ids) - _reused(encoded[t[0]], t[1]))  # similar new lengths
    was_training = verifier.training
    verifier.eval()
    try:
        for start in range(0, len(todo), batch_size):
            rows = [(encoded[i], found, hit) for i, found, hit in todo[start: start + batch_size]]
            for (i, _, _), entry in zip(todo[start: start + batch_size], _score(verifier, rows)):
                out[i] = entry.values
                new[tuple(encoded[i].input_ids)] = entry
    finally:
        verifier.train(was_training)
    return out, new


def _joined(entry: Scored) -> Scored:
    """``entry`` with its KV parts concatenated into one (a chain of parts grows by one per depth)."""
    def join(parts: tuple[Part, ...]) -> tuple[Part, ...]:
        if len(parts) <= 1:
            return parts
        return (Part([torch.cat(layer, dim=1) for layer in zip(*(p.keys for p in parts))],
                     [torch.cat(layer, dim=1) for layer in zip(*(p.values for p in parts))]),)

    return Scored(entry.positions, entry.values, join(entry.parts), join(entry.reference), entry.run_min)


def _reused(e: Encoded, found: int) -> int:
    """Tokens of ``e`` covered by its first ``found`` prefixes."""
    return e.positions[found - 1] + 1 if found else 0


def _score(verifier: ValueVerifier, rows: list[tuple[Encoded, int, Scored | None]]) -> list[Scored]:
    """Each row's solution scored and stored: its parent's values, then the values of its new prefixes
    from one backbone pass over its new tokens (and one reference pass for log-prob features)."""
    reused = [_reused(e, found) for e, found, _ in rows]
    hidden, parts = _extend(verifier.backbone, verifier.pad_id, [
        (e.input_ids[n:], n, hit.parts if hit else ()) for (e, _, hit), n in zip(rows, reused)])
    device = verifier.head.weight.device
    read = [[p - n for p in e.positions[found:]] for (e, found, _), n in zip(rows, reused)]  # into the new tokens
    K = max(len(r) for r in read)
    index = torch.tensor([r + [r[-1]] * (K - len(r)) for r in read], device=device)  # (B, K), padded
    logits = verifier.head(hidden.gather(1, index[..., None].expand(-1, -1, hidden.shape[-1])).float()).squeeze(-1)
    run_mins = [hit.run_min if hit else 0.0 for _, _, hit in rows]
    references: list[tuple[Part, ...]] = [() for _ in rows]
    if verifier.reference is not None:
        feats, run_mins, references = _features(verifier, rows, reused)
        logits = logits + verifier.feature_head(feats.to(device)).squeeze(-1)
    values = torch.sigmoid(logits).cpu().numpy()  # (B, K)
    out = []
    for b, ((e, _, hit), r) in enumerate(zip(rows, read)):
        old = hit.values if hit is not None else np.zeros(0, dtype=np.float32)
        out.append(Scored(tuple(e.positions), np.concatenate([old, values[b, : len(r)]]).astype(np.float32),
                          (hit.parts if hit else ()) + (parts[b],), references[b], run_mins[b]))
    return out


def _features(verifier: ValueVerifier, rows: list[tuple[Encoded, int, Scored | None]], reused: list[int]
              ) -> tuple[torch.Tensor, list[float], list[tuple[Part, ...]]]:
    """The log-prob features (B, K, 3) of each row's new prefixes (`ValueVerifier.logprob_features`),
    each row's running minimum at its last prefix, and its reference KV. The reference reads from
    the last reused token on: its logits there give the first new token's log-prob."""
    fed = []
    for (e, _, hit), n in zip(rows, reused):
        if n:  # the parent's reference KV without its last column, which is read again
            (part,) = hit.reference
            past = (Part([k[:, : n - 1] for k in part.keys], [v[:, : n - 1] for v in part.values]),)
            fed.append((e.input_ids[n - 1:], n - 1, past))
        else:
            fed.append((e.input_ids, 0, ()))
    logits, parts = _extend(verifier.reference, verifier.pad_id, fed)
    T = logits.shape[1]
    target = torch.tensor([list(ids[1:]) + [0] * (T - len(ids)) for ids, _, _ in fed], device=logits.device)  # (B, T-1)
    # logp[b][t - start] = log p(token t | tokens < t) for t > start; token 0 has none (0, as a full pass)
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, target[..., None]).squeeze(-1).tolist()
    feats = torch.zeros(len(rows), max(len(e.positions) - found for e, found, _ in rows), 3)
    run_mins, references = [], []
    for b, ((e, found, hit), (_, start, past)) in enumerate(zip(rows, fed)):
        row = [0.0, *logp[b]]
        run_min = hit.run_min if hit else 0.0
        for k, h in enumerate(range(found, len(e.positions))):
            lo = e.positions[h - 1] + 1 if h else e.positions[0] + 1  # step h's tokens: (ends[h-1], ends[h]]
            span = row[lo - start: e.positions[h] + 1 - start]
            step_min = min([0.0, *span])
            run_min = min(run_min, step_min)
            feats[b, k] = torch.tensor([sum(span), step_min, run_min])
        run_mins.append(run_min)
        references.append(past + (parts[b],))
    return feats, run_mins, references


def _extend(model: torch.nn.Module, pad_id: int, rows: list[tuple[Sequence[int], int, tuple[Part, ...]]]
            ) -> tuple[torch.Tensor, list[Part]]:
    """One pass of ``model`` over each row's new ids (right-padded) after its ``n`` reused tokens,
    whose KV ``parts`` (one part or none) are left-padded into a shared past: the last hidden states
    (a base model) or logits (a causal LM), (B, T, ·), and the KV of each row's new tokens."""
    from transformers import DynamicCache

    from pav.policies.hf import cache_argument

    device = next(model.parameters()).device
    P, T, B = max(n for _, n, _ in rows), max(len(ids) for ids, _, _ in rows), len(rows)
    input_ids = torch.tensor([[*ids, *[pad_id] * (T - len(ids))] for ids, _, _ in rows])  # (B, T)
    n, length = torch.tensor([n for _, n, _ in rows])[:, None], torch.tensor([len(ids) for ids, _, _ in rows])[:, None]
    cols = torch.arange(P + T)[None, :]
    mask = ((cols >= P - n) & (cols < P + length)).long()  # (B, P + T): reused tokens, then new ones
    position_ids = n + torch.minimum(torch.arange(T)[None, :], length - 1)  # padding repeats the last position
    cache = DynamicCache(config=model.config)
    if P:
        stored = next(parts[0] for _, n, parts in rows if n)
        like = [*stored.keys, *stored.values]
        buffers = [torch.zeros((B, *x.shape[:-2], P, x.shape[-1]), dtype=x.dtype, device=device) for x in like]
        children: dict[int, list[int]] = {}  # rows by parent: a parent's KV is written to its rows at once
        for b, (_, n, parts) in enumerate(rows):
            if n:
                children.setdefault(id(parts[0]), []).append(b)
        first = {id(parts[0]): parts[0] for _, n, parts in rows if n}
        for key, where in children.items():
            idx = torch.tensor(where, device=device)
            for buf, src in zip(buffers, (*first[key].keys, *first[key].values)):
                buf[idx, :, P - src.shape[1]:] = src
        n_layer = len(stored.keys)
        for layer in range(n_layer):
            cache.update(buffers[layer], buffers[n_layer + layer], layer)
    out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), position_ids=position_ids.to(device),
                use_cache=True, **{cache_argument(model): cache})
    keys = [x.keys[:, :, P:].clone() for x in cache.layers]  # the new columns, one copy per layer
    values = [x.values[:, :, P:].clone() for x in cache.layers]
    parts = [Part([k[b, :, : len(ids)] for k in keys], [v[b, :, : len(ids)] for v in values])
             for b, (ids, _, _) in enumerate(rows)]
    return (out.logits if hasattr(out, "logits") else out.last_hidden_state), parts
