"""The vLLM backend of the `Policy` protocol (optional extra ``pav[vllm]``; a CUDA GPU).

vLLM is imported when a `VLLMPolicy` is built, never by ``import pav``; without it the error says
how to install it. The engine runs with **prefix caching on**, so the context shared by a
prefix's R rollouts (and by the rounds below) is encoded once and reused from the KV cache.

How the protocol's stop rule is met. vLLM stops a request at a stop string, eos or a token budget,
but the protocol stops a *solution* at a step line that `is_final_step` accepts, or after
``max_steps`` steps, which no stop string expresses. So sampling runs in rounds of one step: every
unfinished row asks for text up to the next delimiter (``stop=[delimiter]``, kept in the output),
and the shared `pav.policies.base.scan_steps` decides after each round whether the row is done
(exactly as the transformers backend decides after each delimiter). A row also ends at eos
(``finish_reason == "stop"`` with no stop string), at ``max_new_tokens`` over all its rounds, or
when the model's context window is full. With prefix caching a round re-reads only the new step.

Seeds: rollout r of context c in round k is sampled with seed ``derive_seed(seed_c, r, k)``, where
``seed_c`` is the caller's per-context seed (or ``derive_seed(seed, c)`` for one int), so a row
depends on its own seeds only, not on the other rows of the call. vLLM's per-request seeds make the
draws reproducible on one GPU build; they are not the transformers backend's draws.

Token accounting: ``generated_tokens`` sums the token ids vLLM returns; ``prompt_tokens`` sums, per
request, the prompt tokens vLLM did not find in its prefix cache (``num_cached_tokens``), i.e. what
was really encoded.

Not verified on a GPU by the session that wrote it (none was available); the tests drive the
adapter with a stand-in engine that follows vLLM's documented ``LLM.generate`` contract.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pav.core.seeding import derive_seed
from pav.policies.base import Generation, PolicyLoadError, SampleBatch, Until, check_sample_args, scan_steps


@dataclass
class _Row:
    context: int
    rollout: int
    text: str = ""
    n_tokens: int = 0
    n_steps: int = 0
    done: bool = False
    finished: bool = False


class VLLMPolicy:
    """`Policy` over a vLLM engine; see the module docstring."""

    def __init__(self, model: str, policy_id: str, *, delimiter: str = "\n", dtype: str = "auto",
                 trust_remote_code: bool = False, max_model_len: int | None = None,
                 gpu_memory_utilization: float = 0.85, seed: int = 0, llm=None) -> None:
        try:
            import vllm
        except ImportError as e:
            raise PolicyLoadError("the vLLM backend needs vLLM on a machine with a CUDA GPU: "
                                  "pip install 'pav[vllm]' (or --set load.backend=transformers)") from e
        if not delimiter:
            raise ValueError("delimiter must be non-empty")
        self._vllm = vllm
        self.llm = llm if llm is not None else vllm.LLM(
            model=model, dtype=dtype, trust_remote_code=trust_remote_code, max_model_len=max_model_len,
            gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=True, seed=seed)
        self.tokenizer = self.llm.get_tokenizer()
        self.policy_id = policy_id
        self.delimiter = delimiter
        self.max_positions: int | None = max_model_len or getattr(
            getattr(getattr(self.llm, "llm_engine", None), "model_config", None), "max_model_len", None)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(self.tokenizer.encode(t, add_special_tokens=False)) for t in texts]

    def sample(self, contexts: Sequence[str], n: int, *, until: Until, max_steps: int, max_new_tokens: int,
               temperature: float = 1.0, top_p: float = 1.0, seed: int | Sequence[int] | None = None,
               is_final_step: Callable[[str], bool] | None = None) -> SampleBatch:
        check_sample_args(n, until, max_steps, max_new_tokens, temperature, top_p)
        start = time.perf_counter()
        seeds = _context_seeds(seed, len(contexts))
        rows = [_Row(c, r) for c in range(len(contexts)) for r in range(n)]
        context_len = self.count_tokens(contexts) if self.max_positions is not None else []
        prompt_tokens = 0
        for round_ in range(max_steps if until == "solution" else 1):
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
                    n=1, temperature=temperature, top_p=top_p, max_tokens=budget, stop=[self.delimiter],
                    include_stop_str_in_output=True,
                    seed=None if seeds is None else derive_seed(seeds[row.context], row.rollout, round_) % 2**31))
            live = [row for row in todo if not row.done]
            if not live:
                break
            for row, out in zip(live, self.llm.generate(prompts, params, use_tqdm=False), strict=True):
                prompt_tokens += len(out.prompt_token_ids or ()) - (getattr(out, "num_cached_tokens", None) or 0)
                self._advance(row, out.outputs[0], until, max_steps, max_new_tokens, is_final_step)
        generations = [[Generation("", 0, False) for _ in range(n)] for _ in contexts]
        for row in rows:
            generations[row.context][row.rollout] = Generation(row.text, row.n_tokens, row.finished)
        return SampleBatch(generations, prompt_tokens, sum(row.n_tokens for row in rows), time.perf_counter() - start)

    def _advance(self, row: _Row, out, until: Until, max_steps: int, max_new_tokens: int,
                 is_final_step: Callable[[str], bool] | None) -> None:
        """Append one round's output to ``row`` and apply the stop rule."""
        row.text += out.text
        row.n_tokens += len(out.token_ids)
        if out.finish_reason == "stop" and out.stop_reason is None:  # eos
            row.done = row.finished = True
            return
        scan = scan_steps(row.text, row.n_steps, until=until, delimiter=self.delimiter, max_steps=max_steps,
                          is_final_step=is_final_step)
        row.n_steps = scan.n_steps
        if scan.end is not None:
            row.text = row.text[: scan.end]
            row.done, row.finished = True, scan.finished
        elif out.finish_reason == "length" or row.n_tokens >= max_new_tokens:
            row.done = True  # a budget cut it mid-step


def _context_seeds(seed: int | Sequence[int] | None, n_contexts: int) -> list[int] | None:
    if seed is None:
        return None
    if isinstance(seed, int):
        return [derive_seed(seed, "context", c) for c in range(n_contexts)]
    if len(seed) != n_contexts:
        raise ValueError(f"got {len(seed)} seeds for {n_contexts} contexts")
    return [int(s) for s in seed]
