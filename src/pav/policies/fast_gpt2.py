"""A minimal batched GPT-2 forward over a transformers `GPT2LMHeadModel`'s own weights.

`HFPolicy` decodes GPT-2-family models with this instead of ``model(...)``: on the tiny policies of
the built-in task the transformers forward is mostly per-call overhead (module dispatch, mask
construction, cache bookkeeping), not arithmetic. Here one decode step is a fixed, short list of
plain PyTorch ops on preallocated buffers:

* embeddings ``wte[ids] + wpe[positions]`` with explicit positions;
* per block (pre-LN): ``ln_1``, fused qkv (HF ``Conv1D``: weight (in, out), so ``addmm(b, x, W)``),
  k and v written in place into a preallocated KV buffer of shape (B, n_head, max_len, head_dim)
  at one shared column, attention over the filled columns with an additive key mask (left padding),
  ``c_proj`` + residual, ``ln_2``, MLP with the model's activation (``ACT2FN``; the tanh GELUs as
  `_gelu_tanh`, three times as fast), + residual;
* ``ln_f`` and the (tied or untied) ``lm_head``.

Nothing is copied: the weights are read from the model at construction (build one per use, so a
model trained in between is seen as it is now). Rows are left-padded: every row writes column
``start .. start + T - 1`` at once, and a row's padding columns carry a large negative bias.
Dropout is ignored (eval only); cross-attention models, other architectures and models with forward
hooks (which this path would skip) are not supported (`FastGPT2.supports`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SUPPORTED_ACTIVATIONS = frozenset({"gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "relu", "silu", "swish"})
# PyTorch's CPU `bmm` multiplies matrices of fewer multiply-adds than this (a row's 1 x head_dim query
# against its first few suffix keys) in an unvectorised loop, 2-5x slower than its BLAS call on a
# few more columns. So on a CPU a grid's suffix attention reads at least ceil(BMM_BLAS_MIN_MACS /
# head_dim) columns, masking those not yet written: early steps are most of a short rollout's steps.
BMM_BLAS_MIN_MACS = 400


class KVBuffer:
    """Preallocated keys/values (B, n_head, max_len, head_dim) per layer and an additive key mask.

    ``bias`` is (B, n_head, 1, max_len): 0 where a row may attend, a large negative number on its
    left padding (kept per head so a batch of rows views it as (B * n_head, 1, L) without a copy).
    Rows ``[:size]`` are in use; `compact` keeps a subset of them in place.
    """

    def __init__(self, n_layer: int, batch: int, n_head: int, max_len: int, head_dim: int, *,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (batch, n_head, max_len, head_dim)
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(n_layer)]
        self.bias = torch.zeros(batch, n_head, 1, max_len, dtype=dtype, device=device)
        self.size = batch
        self.max_len = max_len

    def set_padding(self, pad: torch.Tensor) -> None:
        """Rows ``[:len(pad)]`` ignore their first ``pad[i]`` columns (left padding); (B,) long."""
        cols = torch.arange(self.max_len, device=pad.device)  # (L,)
        self.set_valid(cols[None, :] >= pad[:, None])

    def set_valid(self, valid: torch.Tensor) -> None:
        """Rows ``[:len(valid)]`` attend only to their columns where ``valid`` (b, L') is True
        (columns past L' stay as they are): left padding, or a gap between a reused prefix and
        newly encoded tokens (`pav.policies.prefix_store`)."""
        b, n = valid.shape
        self.bias[:b, :, :, :n] = torch.where(valid[:, None, None, :], 0.0, neg_inf(self.bias.dtype)).to(self.bias.dtype)

    def valid(self, row: int, end: int) -> torch.Tensor:
        """(end,) bool: the columns ``[:end]`` that row ``row`` attends to."""
        return self.bias[row, 0, 0, :end] == 0

    def compact(self, keep: torch.Tensor, filled: int) -> None:
        """Keep rows ``keep`` (sorted ascending, (b',) long) as rows ``[:b']``; columns ``[:filled]``."""
        n = keep.shape[0]
        moved = (keep != torch.arange(n, device=keep.device)).nonzero()
        first = int(moved[0]) if len(moved) else n  # rows before it stay where they are
        keep = keep[first:]
        for buf in (*self.keys, *self.values):
            buf[first:n, :, :filled] = buf[keep, :, :filled]
        self.bias[first:n] = self.bias[keep]
        self.size = n


_GELU_2C = 2 * 0.7978845608028654  # 2 sqrt(2 / pi)


def _gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GPT-2's tanh GELU, ``0.5 x (1 + tanh(u))`` with ``u = sqrt(2/pi) (x + 0.044715 x^3)``, computed
    as ``x sigmoid(2u)`` (the same function): on one CPU thread at these sizes `sigmoid` is ~6x
    faster than `tanh`, and this is ~3x faster than ``F.gelu(approximate="tanh")``."""
    u = torch.addcmul(torch.full_like(x, _GELU_2C), x, x, value=0.044715 * _GELU_2C).mul_(x).sigmoid_()
    return u.mul_(x)


def neg_inf(dtype: torch.dtype) -> float:
    """A mask value that zeroes a softmax weight yet keeps a fully masked row finite (no NaN)."""
    return torch.finfo(dtype).min / 4


def _has_forward_hooks(model: torch.nn.Module) -> bool:
    """Whether a forward hook would change what the model computes: FastGPT2 reads the weights and
    never calls the modules, so such a model is decoded by the generic path, hooks and all."""
    from torch.nn.modules import module as nn_module

    if getattr(nn_module, "_global_forward_hooks", None) or getattr(nn_module, "_global_forward_pre_hooks", None):
        return True
    return any(getattr(m, "_forward_hooks", None) or getattr(m, "_forward_pre_hooks", None) for m in model.modules())


class FastGPT2:
    """Forward passes of a `GPT2LMHeadModel` (eval mode) over a `KVBuffer`."""

    @staticmethod
    def supports(model) -> bool:
        cfg = getattr(model, "config", None)
        return (
            getattr(cfg, "model_type", None) == "gpt2"
            and hasattr(model, "transformer") and hasattr(model, "lm_head")
            and not getattr(cfg, "add_cross_attention", False)
            and cfg.activation_function in SUPPORTED_ACTIVATIONS
            and getattr(model.lm_head, "bias", None) is None
            and not _has_forward_hooks(model)
        )

    def __init__(self, model) -> None:
        if not self.supports(model):
            raise ValueError("FastGPT2 needs a GPT2LMHeadModel without cross-attention")
        from transformers.activations import ACT2FN

        cfg = model.config
        tr = model.transformer
        self.n_layer, self.n_head, self.n_embd = cfg.n_layer, cfg.n_head, cfg.n_embd
        self.head_dim = cfg.n_embd // cfg.n_head
        self.eps = cfg.layer_norm_epsilon
        self.wte, self.wpe = tr.wte.weight, tr.wpe.weight
        tanh_gelu = cfg.activation_function in ("gelu_new", "gelu_pytorch_tanh", "gelu_fast")
        self.act = _gelu_tanh if tanh_gelu else ACT2FN[cfg.activation_function]
        self.blocks = []
        for i, h in enumerate(tr.h):
            scale = self.head_dim ** -0.5 if cfg.scale_attn_weights else 1.0
            if cfg.scale_attn_by_inverse_layer_idx:
                scale /= float(i + 1)
            self.blocks.append((
                h.ln_1.weight, h.ln_1.bias, h.attn.c_attn.weight, h.attn.c_attn.bias,
                h.attn.c_proj.weight, h.attn.c_proj.bias, h.ln_2.weight, h.ln_2.bias,
                h.mlp.c_fc.weight, h.mlp.c_fc.bias, h.mlp.c_proj.weight, h.mlp.c_proj.bias, scale,
            ))
        self.ln_f = (tr.ln_f.weight, tr.ln_f.bias)
        self.lm_head = model.lm_head.weight  # (V, E); tied to wte unless the model unties it
        self.dtype, self.device = self.wte.dtype, self.wte.device
        # the fewest suffix columns a grid step reads (`BMM_BLAS_MIN_MACS`; a GPU has no such path)
        self.min_window = -(-BMM_BLAS_MIN_MACS // self.head_dim) if self.device.type == "cpu" else 1

    def buffer(self, batch: int, max_len: int) -> KVBuffer:
        return KVBuffer(self.n_layer, batch, self.n_head, max_len, self.head_dim, dtype=self.dtype,
                        device=self.device)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, cache: KVBuffer, start: int,
                last_only: bool = False) -> torch.Tensor:
        """Logits for ``input_ids`` (B, T) at ``position_ids`` (B, T), written to columns
        ``[start, start + T)`` of rows ``[:B]`` of ``cache``; (B, T, V), or (B, V) if ``last_only``.

        Query t attends to columns ``[0, start + t]`` minus the row's padding (``cache.bias``);
        a padding query also attends to itself, so its (unused) output stays finite.
        """
        b, t = input_ids.shape
        E, H, d = self.n_embd, self.n_head, self.head_dim
        end = start + t
        x = (F.embedding(input_ids, self.wte) + F.embedding(position_ids, self.wpe)).view(b * t, E)
        bias = cache.bias[:b].view(b * H, 1, cache.max_len)[:, :, :end]  # (bH, 1, L)
        if t > 1:
            q_col = torch.arange(start, end, device=x.device)[:, None]  # (T, 1)
            k_col = torch.arange(end, device=x.device)[None, :]  # (1, L)
            causal = torch.where(k_col > q_col, neg_inf(x.dtype), 0.0).to(x.dtype)  # (T, L)
            bias = torch.where(k_col == q_col, 0.0, bias + causal).to(x.dtype)  # (bH, T, L)
        for i, (w1, b1, wqkv, bqkv, wo, bo, w2, b2, wfc, bfc, wpr, bpr, scale) in enumerate(self.blocks):
            h = F.layer_norm(x, (E,), w1, b1, self.eps)
            qkv = torch.addmm(bqkv, h, wqkv).view(b, t, 3, H, d)  # (B, T, 3, H, d)
            keys, values = cache.keys[i][:b], cache.values[i][:b]  # (B, H, max_len, d)
            keys[:, :, start:end] = qkv[:, :, 1].transpose(1, 2)
            values[:, :, start:end] = qkv[:, :, 2].transpose(1, 2)
            q = qkv[:, :, 0].transpose(1, 2).reshape(b * H, t, d)  # (bH, T, d)
            k = keys[:, :, :end].reshape(b * H, end, d)  # (bH, L, d), a view
            v = values[:, :, :end].reshape(b * H, end, d)
            scores = torch.baddbmm(bias, q, k.transpose(1, 2), alpha=scale)  # (bH, T, L)
            o = torch.bmm(scores.softmax(-1), v)  # (bH, T, d)
            if t > 1:
                o = o.view(b, H, t, d).transpose(1, 2)
            o = o.reshape(b * t, E)
            x = x + torch.addmm(bo, o, wo)
            h = F.layer_norm(x, (E,), w2, b2, self.eps)
            x = x + torch.addmm(bpr, self.act(torch.addmm(bfc, h, wfc)), wpr)
        x = x.view(b, t, E)
        if last_only:
            x = x[:, -1]
        x = F.layer_norm(x, (E,), self.ln_f[0], self.ln_f[1], self.eps)
        return F.linear(x, self.lm_head)

    def step(self, tokens: torch.Tensor, positions: torch.Tensor, cache: KVBuffer, column: int) -> torch.Tensor:
        """One decode step: tokens (b,) at positions (b,) written to ``column``; logits (b, V)."""
        return self.forward(tokens[:, None], positions[:, None], cache, column, last_only=True)

    def grid_step(self, tokens: torch.Tensor, positions: torch.Tensor, grid: PrefixGrid, t: int) -> torch.Tensor:
        """One decode step of every grid slot: tokens (G*R,) at positions (G*R,), written to suffix
        column ``t``; logits (G*R, V)."""
        return self.grids_step(tokens, positions, [(grid, t)])

    def grids_step(self, tokens: torch.Tensor, positions: torch.Tensor,
                   grids: list[tuple[PrefixGrid, int]]) -> torch.Tensor:
        """One decode step of several grids at once (each at its own suffix column t): tokens and
        positions (N,) are the grids' slots one grid after another; logits (N, V). Everything but
        attention runs on all N rows together."""
        N, E = tokens.shape[0], self.n_embd
        x = F.embedding(tokens, self.wte) + F.embedding(positions, self.wpe)  # (N, E)
        bounds, a = [], 0
        for grid, _ in grids:
            bounds.append((a, a + grid.n_slots))
            a += grid.n_slots
        single = len(grids) == 1
        for i, (w1, b1, wqkv, bqkv, wo, bo, w2, b2, wfc, bfc, wpr, bpr, scale) in enumerate(self.blocks):
            h = F.layer_norm(x, (E,), w1, b1, self.eps)
            qkv = torch.addmm(bqkv, h, wqkv).view(N, 3, self.n_head, self.head_dim)
            if single:
                o = self._attend(i, qkv, grids[0][0], grids[0][1], scale)
            else:
                o = torch.cat([self._attend(i, qkv[a:b], g, t, scale) for (g, t), (a, b) in zip(grids, bounds)])
            x = x + torch.addmm(bo, o, wo)
            h = F.layer_norm(x, (E,), w2, b2, self.eps)
            x = x + torch.addmm(bpr, self.act(torch.addmm(bfc, h, wfc)), wpr)
        x = F.layer_norm(x, (E,), self.ln_f[0], self.ln_f[1], self.eps)
        return F.linear(x, self.lm_head)

    def _attend(self, i: int, qkv: torch.Tensor, grid: PrefixGrid, t: int, scale: float) -> torch.Tensor:
        """Layer i's attention output (n, E) for the grid's slots, qkv (n, 3, H, d); writes k and v."""
        return attend_grid(i, qkv[:, 0], qkv[:, 1], qkv[:, 2], grid, t, scale, self.min_window)


def attend_grid(i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, grid: PrefixGrid, t: int, scale: float,
                min_window: int) -> torch.Tensor:
    """Layer i's attention output (n, Hq * d) of a grid's slots at suffix column t: queries q (n, Hq, d),
    the step's keys and values k, v (n, H, d), written into the grid first. Hq = H * rep: query
    head h reads key head h // rep (grouped-query attention; GPT-2 has rep = 1), so a context's
    prefix is read once for its R rows times rep heads."""
    G, R, P = grid.G, grid.R, grid.P
    n, H, d = k.shape
    rep, s = q.shape[1] // H, t + 1
    if grid.flat is not None:  # one buffer per row: prefix then suffix
        buf, end = grid.flat, P + t + 1
        keys, values = buf.keys[i][:n], buf.values[i][:n]
        keys[:, :, end - 1] = k
        values[:, :, end - 1] = v
        bias = buf.bias[:n].view(n * H, 1, buf.max_len)[:, :, :end]
        qf = q.reshape(n * H, rep, d)
        scores = torch.baddbmm(bias, qf, keys[:, :, :end].reshape(n * H, end, d).transpose(1, 2), alpha=scale)
        return torch.bmm(scores.softmax(-1), values[:, :, :end].reshape(n * H, end, d)).view(n, H * rep * d)
    prefix_bias = grid.prefix_bias.view(G * H, 1, P)
    keys, values = grid.suffix(i)  # (G, H, R, max_new, d): a context's rows side by side
    keys[:, :, :, t] = k.view(G, R, H, d).transpose(1, 2)
    values[:, :, :, t] = v.view(G, R, H, d).transpose(1, 2)
    # (G, H, R, rep, d): the rows (and grouped heads) of each context's key head side by side
    q = q.view(G, R, H, rep, d).transpose(1, 2) * scale
    kp = grid.prefix_keys[i].view(G * H, P, d)
    scores_p = torch.baddbmm(prefix_bias, q.reshape(G * H, R * rep, d), kp.transpose(1, 2))  # (GH, R rep, P)
    w = min(max(s, min_window), grid.max_new)  # suffix columns read; those after t are masked
    ks = keys[:, :, :, :w].reshape(n * H, w, d)  # (GHR, w, d), a view
    scores_s = torch.bmm(q.reshape(n * H, rep, d), ks.transpose(1, 2))  # (GHR, rep, w)
    if w > s:
        scores_s[:, :, s:] = neg_inf(scores_s.dtype)
    probs = torch.cat([scores_p.view(G, H, R, rep, P), scores_s.view(G, H, R, rep, w)], dim=-1).softmax(-1)
    o_p = torch.bmm(probs.view(G * H, R * rep, P + w)[:, :, :P], grid.prefix_values[i].view(G * H, P, d))
    o_s = torch.bmm(probs.view(n * H, rep, P + w)[:, :, P:], values[:, :, :, :w].reshape(n * H, w, d))
    o = o_p.view(G, H, R, rep, d) + o_s.view(G, H, R, rep, d)
    return o.transpose(1, 2).reshape(n, H * rep * d)


class PrefixGrid:
    """Decode state for rollouts that share prefixes: G contexts x R rows (a grid, row-major).

    The prefix keys/values of the G contexts are stored once, (G, n_head, P, head_dim), with an
    additive mask of their padding (``prefix_valid`` (G, P) False); each row has its own preallocated suffix buffer, laid out
    (G, n_head, R, max_new, head_dim) (a context's rows side by side, so attention needs no
    transposes) for the tokens it generates, written in place at column t
    by every row at step t. Attention of a row = softmax over [its context's prefix | its suffix],
    so a prefix is read once per context per step instead of once per row. Grid slots that hold
    no row (contexts with fewer than R rows) or stopped rows are computed and ignored until
    `compact` repacks the grid. With one row per context (``rows_per_context == 1``, nothing
    shared) the grid is a plain `KVBuffer` instead: each row's prefix then suffix in one buffer.
    """

    def __init__(self, prefix_keys: list[torch.Tensor], prefix_values: list[torch.Tensor],
                 prefix_valid: torch.Tensor, rows_per_context: int, max_new: int, flat: KVBuffer | None = None) -> None:
        """``flat``: with one row per context, a buffer that already holds the prefixes in its columns
        ``[:P]`` (their mask set) and has ``max_new`` columns after them; it is used as the grid, uncopied."""
        g, h, p, d = prefix_keys[0].shape
        self.G, self.R, self.P = g, rows_per_context, p
        self.flat = flat
        if flat is not None:
            if rows_per_context != 1 or flat.max_len < p + max_new:
                raise ValueError("an adopted buffer needs one row per context and room for max_new columns")
            return
        if rows_per_context == 1:  # nothing shared: one buffer per row, prefix then suffix (fewer ops)
            self.flat = KVBuffer(len(prefix_keys), g, h, p + max_new, d, dtype=prefix_keys[0].dtype,
                                 device=prefix_keys[0].device)
            for buf, x in zip((*self.flat.keys, *self.flat.values), (*prefix_keys, *prefix_values)):
                buf[:, :, :p] = x
            self.flat.set_valid(prefix_valid.to(prefix_keys[0].device))
            return
        self.prefix_keys, self.prefix_values = prefix_keys, prefix_values
        dtype, device = prefix_keys[0].dtype, prefix_keys[0].device
        self.prefix_valid = prefix_valid.to(device)  # (G, P) bool: left padding (and a reuse gap) False
        masked = ~self.prefix_valid[:, None, None, :]  # (G, 1, 1, P)
        self.prefix_bias = torch.where(masked, neg_inf(dtype), 0.0).to(dtype).expand(g, h, 1, p).contiguous()
        self.H, self.d, self.max_new = h, d, max_new
        size = g * rows_per_context * h * max_new * d  # flat storage, viewed as (G, H, R, max_new, d)
        # zeros: the columns after a row's last token are read (and masked), so they must be finite
        self._suffix_keys = [torch.zeros(size, dtype=dtype, device=device) for _ in prefix_keys]
        self._suffix_values = [torch.zeros(size, dtype=dtype, device=device) for _ in prefix_keys]

    def suffix(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer ``layer``'s suffix keys and values, (G, H, R, max_new, d) each."""
        size = self.G * self.H * self.R * self.max_new * self.d
        shape = (self.G, self.H, self.R, self.max_new, self.d)
        return self._suffix_keys[layer][:size].view(shape), self._suffix_values[layer][:size].view(shape)

    @property
    def n_slots(self) -> int:
        return self.G * self.R

    def compact(self, contexts: torch.Tensor, slots: torch.Tensor, rows_per_context: int, filled: int) -> None:
        """Repack into ``len(contexts)`` x ``rows_per_context``: new slot k takes old slot
        ``slots[k]`` (long, (G' * R',)), new context g takes old context ``contexts[g]``;
        suffix columns ``[:filled]`` are kept."""
        n = slots.shape[0]
        if self.flat is not None:  # one row per context: contexts == slots
            self.flat.compact(slots, self.P + filled)
            self.G = n
            return
        G, R, H, M, d, g2 = self.G, self.R, self.H, self.max_new, self.d, contexts.shape[0]
        old_g, old_r = slots // R, slots % R  # (n,) old grid context and row of each new slot
        for buf in (*self._suffix_keys, *self._suffix_values):
            old = buf[: G * H * R * M * d].view(G, H, R, M, d)[:, :, :, :filled]
            rows = old.transpose(1, 2)[old_g, old_r]  # (n, H, filled, d), one gathered copy
            new = buf[: n * H * M * d].view(g2, H, rows_per_context, M, d)
            new[:, :, :, :filled] = rows.view(g2, rows_per_context, H, filled, d).transpose(1, 2)
        self.prefix_keys = [x[contexts] for x in self.prefix_keys]
        self.prefix_values = [x[contexts] for x in self.prefix_values]
        self.prefix_bias = self.prefix_bias[contexts]
        self.prefix_valid = self.prefix_valid[contexts]
        self.G, self.R = contexts.shape[0], rows_per_context
