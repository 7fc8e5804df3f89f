"""The fast decode path for Llama-family models (Llama, SmolLM2, Qwen2) over their own weights.

The same contract as `pav.policies.fast_gpt2.FastGPT2` (which see), so `pav.policies.fast_decode`
samples these models the same way: a context's prefix is kept once and read once per step for all
its rollouts (`PrefixGrid`), every row's suffix is written in place into a preallocated buffer
(no cache copies as rows grow or leave), and the step-mode rows of one call can be extended by the
next (`pav.policies.prefix_store`). What differs from GPT-2 is per block only:

* RMSNorm (``F.rms_norm``) instead of LayerNorm; rotary positions on queries and keys, cos/sin
  from the model's own ``rotary_emb`` module (so its RoPE variant and scaling are the model's);
* grouped-query attention: ``num_attention_heads = rep * num_key_value_heads``, query head h reads
  key head h // rep (`attend_grid`), and only the key heads are cached;
* q, k, v projections (with Qwen2's biases) and the SwiGLU MLP's gate and up projections each run
  as one fused matrix, concatenated once per use (~170 MB copied for SmolLM2-135M, tens of ms).

Supported: ``model_type`` llama or qwen2 with full attention on every layer, ``silu``, no MLP bias,
no tensor-parallel split, no forward hooks. Anything else decodes through transformers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pav.policies.fast_gpt2 import BMM_BLAS_MIN_MACS, KVBuffer, PrefixGrid, _has_forward_hooks, attend_grid, neg_inf

SUPPORTED_TYPES = frozenset({"llama", "qwen2"})


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of x (..., heads, d) with cos/sin (..., 1, d): ``x cos + rotate_half(x) sin``."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin


class FastLlama:
    """Forward passes of a Llama-family causal LM (eval mode) over a `KVBuffer` or `PrefixGrid`s."""

    @staticmethod
    def supports(model) -> bool:
        cfg = getattr(model, "config", None)
        inner = getattr(model, "model", None)
        if getattr(cfg, "model_type", None) not in SUPPORTED_TYPES or inner is None or not hasattr(model, "lm_head"):
            return False
        layer_types = getattr(cfg, "layer_types", None) or ["full_attention"]
        return (
            getattr(cfg, "hidden_act", None) == "silu"
            and not getattr(cfg, "mlp_bias", False)
            and getattr(cfg, "pretraining_tp", 1) == 1
            and not getattr(cfg, "use_sliding_window", False)
            and set(layer_types) == {"full_attention"}
            and hasattr(inner, "rotary_emb")
            and getattr(model.lm_head, "bias", None) is None
            and not _has_forward_hooks(model)
        )

    def __init__(self, model) -> None:
        if not self.supports(model):
            raise ValueError("FastLlama needs a Llama or Qwen2 causal LM with full attention and a SiLU MLP")
        cfg, inner = model.config, model.model
        self.n_layer = cfg.num_hidden_layers
        self.n_head = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.n_embd = cfg.hidden_size
        self.eps = cfg.rms_norm_eps
        self.scale = self.head_dim ** -0.5
        self.rotary = inner.rotary_emb
        self.wte = inner.embed_tokens.weight
        self.blocks = []
        for layer in inner.layers:
            at, mlp = layer.self_attn, layer.mlp
            projections = (at.q_proj, at.k_proj, at.v_proj)
            qkv_bias = None if at.q_proj.bias is None else torch.cat([p.bias for p in projections])
            self.blocks.append((
                layer.input_layernorm.weight, torch.cat([p.weight for p in projections]), qkv_bias,
                at.o_proj.weight, at.o_proj.bias, layer.post_attention_layernorm.weight,
                torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]), mlp.down_proj.weight,
            ))
        self.norm = inner.norm.weight
        self.lm_head = model.lm_head.weight  # (V, E); tied to the embedding where the model ties them
        self.dtype, self.device = self.wte.dtype, self.wte.device
        self.min_window = -(-BMM_BLAS_MIN_MACS // self.head_dim) if self.device.type == "cpu" else 1
        self._split = (self.n_head * self.head_dim, self.n_kv * self.head_dim, self.n_kv * self.head_dim)

    def buffer(self, batch: int, max_len: int) -> KVBuffer:
        return KVBuffer(self.n_layer, batch, self.n_kv, max_len, self.head_dim, dtype=self.dtype, device=self.device)

    def _qkv(self, h: torch.Tensor, block: tuple, cos: torch.Tensor, sin: torch.Tensor):
        """Rotated queries (N, Hq, d) and keys (N, H, d), and values (N, H, d) of hidden states (N, E)."""
        _, w_qkv, b_qkv, *_ = block
        q, k, v = F.linear(h, w_qkv, b_qkv).split(self._split, dim=-1)
        d = self.head_dim
        return (_rotate(q.view(-1, self.n_head, d), cos, sin), _rotate(k.view(-1, self.n_kv, d), cos, sin),
                v.view(-1, self.n_kv, d))

    def _mlp(self, x: torch.Tensor, block: tuple) -> torch.Tensor:
        *_, w_post, w_gate_up, w_down = block
        gate, up = F.linear(F.rms_norm(x, (self.n_embd,), w_post, self.eps), w_gate_up).chunk(2, dim=-1)
        return x + F.linear(F.silu(gate).mul_(up), w_down)

    def _rope(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin (N, 1, d) for flat positions (N,)."""
        cos, sin = self.rotary(x, positions.view(1, -1))  # (1, N, d)
        return cos[0, :, None], sin[0, :, None]

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, cache: KVBuffer, start: int,
                last_only: bool = False) -> torch.Tensor:
        """Logits for ``input_ids`` (B, T) at ``position_ids`` (B, T), keys and values written to
        columns ``[start, start + T)`` of rows ``[:B]`` of ``cache``; (B, T, V), or (B, V) if
        ``last_only``. Query t attends to columns ``[0, start + t]`` where the row's mask allows
        (``cache.bias``); a padding query also attends to itself."""
        b, t = input_ids.shape
        end, d = start + t, self.head_dim
        x = F.embedding(input_ids, self.wte).view(b * t, self.n_embd)
        cos, sin = self._rope(x, position_ids.reshape(-1))
        q_col = torch.arange(start, end, device=x.device)[:, None]  # (T, 1)
        k_col = torch.arange(end, device=x.device)[None, :]  # (1, L)
        causal = torch.where(k_col > q_col, neg_inf(x.dtype), 0.0).to(x.dtype)  # (T, L)
        bias = torch.where(k_col == q_col, 0.0, cache.bias[:b, :1, :, :end] + causal).to(x.dtype)  # (B, 1, T, L)
        for i, block in enumerate(self.blocks):
            w_in, _, _, w_o, b_o, *_ = block
            q, k, v = self._qkv(F.rms_norm(x, (self.n_embd,), w_in, self.eps), block, cos, sin)
            keys, values = cache.keys[i][:b], cache.values[i][:b]  # (B, H, max_len, d)
            keys[:, :, start:end] = k.view(b, t, self.n_kv, d).transpose(1, 2)
            values[:, :, start:end] = v.view(b, t, self.n_kv, d).transpose(1, 2)
            o = F.scaled_dot_product_attention(  # grouped heads read in place, not repeated
                q.view(b, t, self.n_head, d).transpose(1, 2), keys[:, :, :end], values[:, :, :end], attn_mask=bias,
                scale=self.scale, enable_gqa=self.n_head != self.n_kv)  # (B, Hq, T, d)
            x = x + F.linear(o.transpose(1, 2).reshape(b * t, self.n_head * d), w_o, b_o)
            x = self._mlp(x, block)
        x = x.view(b, t, self.n_embd)
        if last_only:
            x = x[:, -1]
        return F.linear(F.rms_norm(x, (self.n_embd,), self.norm, self.eps), self.lm_head)

    def grids_step(self, tokens: torch.Tensor, positions: torch.Tensor,
                   grids: list[tuple[PrefixGrid, int]]) -> torch.Tensor:
        """One decode step of several grids at once (each at its own suffix column t): tokens and
        positions (N,) are the grids' slots one grid after another; logits (N, V)."""
        x = F.embedding(tokens, self.wte)  # (N, E)
        cos, sin = self._rope(x, positions)
        bounds, a = [], 0
        for grid, _ in grids:
            bounds.append((a, a + grid.n_slots))
            a += grid.n_slots
        for i, block in enumerate(self.blocks):
            w_in, _, _, w_o, b_o, *_ = block
            q, k, v = self._qkv(F.rms_norm(x, (self.n_embd,), w_in, self.eps), block, cos, sin)
            o = torch.cat([attend_grid(i, q[a:b], k[a:b], v[a:b], g, t, self.scale, self.min_window)
                           for (g, t), (a, b) in zip(grids, bounds)]) if len(grids) > 1 else \
                attend_grid(i, q, k, v, grids[0][0], grids[0][1], self.scale, self.min_window)
            x = self._mlp(x + F.linear(o, w_o, b_o), block)
        return F.linear(F.rms_norm(x, (self.n_embd,), self.norm, self.eps), self.lm_head)
