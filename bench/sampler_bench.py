"""Throughput of `HFPolicy.sample` on one CPU thread.

Cases, one line each: (a) whole solutions at batch 256; (b) R = 16 rollouts from each of 1,000
prefixes; (c) one step from each of 1,024 prefixes. The default model is a random 2-layer
n_embd-64 GPT-2 over the built-in alphabet; a random model stops at eos (about 1 token in 70) or
the token cap, so solutions average about 40 tokens, close to a trained policy's 32-45. Pass
``--policy DIR`` to time a saved policy instead.

    .venv/bin/python bench/sampler_bench.py [--policy DIR] [--scale 0.25]
"""

from __future__ import annotations

import argparse
import random

import torch

from pav.policies import BUILTIN_ALPHABET, build_char_tokenizer
from pav.policies.hf import HFPolicy, load_causal_lm, tiny_gpt2


def _prompt(rng: random.Random) -> str:
    ops = rng.sample(["+1", "+2", "+3", "+4", "+5", "*2", "*3", "*5"], 3)
    return f"{rng.randrange(10)} to {rng.randrange(10)} mod 10 ops {' '.join(ops)} max {rng.randint(4, 8)}\n"


def _prefix(rng: random.Random) -> str:
    steps = "".join(f"{rng.randrange(10)}+{rng.randrange(1, 6)}={rng.randrange(10)}\n" for _ in range(rng.randrange(4)))
    return _prompt(rng) + steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", help="a saved policy directory (default: a random tiny GPT-2)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every case's size by this")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.policy:
        model, tok = load_causal_lm(args.policy, device=args.device)
    else:
        tok = build_char_tokenizer(BUILTIN_ALPHABET)
        model = tiny_gpt2(len(tok), eos_token_id=tok.eos_token_id)
    policy = HFPolicy(model, tok, "bench", device=args.device, batch_size=256)
    rng = random.Random(0)
    final = lambda line: line.startswith("ans")  # noqa: E731
    n_sol, n_pre, n_step = (max(1, int(x * args.scale)) for x in (12_800, 1_000, 1_024))
    cases = {
        f"(a) solutions, {n_sol} prompts x 1, batch 256": ([_prompt(rng) for _ in range(n_sol)], 1, "solution"),
        f"(b) rollouts, {n_pre} prefixes x 16, batch 256": ([_prefix(rng) for _ in range(n_pre)], 16, "solution"),
        f"(c) one step, {n_step} prefixes x 1, batch 256": ([_prefix(rng) for _ in range(n_step)], 1, "step"),
    }
    policy.sample(list(cases.values())[0][0][:256], 1, until="solution", max_steps=12, max_new_tokens=56, seed=0)
    for name, (contexts, n, until) in cases.items():
        batch = policy.sample(contexts, n, until=until, max_steps=12, max_new_tokens=56, seed=1,
                              is_final_step=final)
        rows = len(contexts) * n
        print(f"{name}: {batch.generated_tokens} tokens ({batch.generated_tokens / rows:.1f}/row), "
              f"{batch.prompt_tokens} prompt tokens, {batch.seconds:.2f} s, "
              f"{batch.generated_tokens / batch.seconds / 1e3:.1f}k tok/s", flush=True)


if __name__ == "__main__":
    main()
