"""Labelling throughput: pav's labeller vs a naive per-prefix `generate` loop vs a pure decode loop.

The same prefixes (all prefixes of seed solutions of held-out problems) and the same model are
labelled three ways in one run, and generated tokens/s are compared:
  (a) pav: `rollout_counts`, i.e. HFPolicy.sample over all prefixes at once (each prefix encoded
      once, its KV cache copied per rollout, rows of many problems batched, finished rows dropped);
  (b) naive: one `model.generate` call per prefix with its R rollouts as the batch (the prompt is
      encoded R times, nothing is batched across prefixes), stopping when every row has written
      its answer line — how peers' labelling scripts do it. Run on a subset of prefixes
      (`--naive-prefixes`) because it is slow; the comparison is in tokens/s;
  (c) ceiling: a bare batched decode loop of the same model at the same batch size generating as
      many tokens as (a), with no stopping, bookkeeping or I/O.
Only useful tokens count for (a) and (b): each row's tokens up to its own stop.

    .venv/bin/python bench/label_bench.py --policy runs/sft-.../ [--prefixes 1000] [--rollouts 16]

`--threads` sets the torch threads of all three (default 1); on the 2-core development machine
`--threads 2 --batch-size 1024` is where (a) is >= 10x (b) (README, Benchmarks).
"""

from __future__ import annotations

import argparse
import time

import torch

from pav.core.seeding import derive_seed
from pav.policies.hf import HFPolicy, load_causal_lm
from pav.rollouts.label import Sampling, context_of, rollout_counts, sample_seed_solutions
from pav.policies.load import resolve_model_dir
from pav.tasks.modreach import ModReach

SAMPLING = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=200)  # the label stage's defaults


def prefixes(policy, task, n_prefixes: int, seed: int):
    problems = task.problems(max(8, n_prefixes // 3), seed, "heldout")
    sols, _ = sample_seed_solutions(policy, task, problems, 1, SAMPLING, seed)
    by_id = {p.problem_id: p for p in problems}
    items = [(by_id[s.problem_id], s.steps[:h]) for s in sols for h in range(len(s.steps))]
    return items[:n_prefixes]


def run_pav(policy, task, items, r):
    start = time.perf_counter()
    _, gen, _, _ = rollout_counts(policy, task, items, r, SAMPLING, seed=1)
    return sum(gen), time.perf_counter() - start


def run_naive(model, tok, task, items, r, max_new_tokens):
    from transformers import StoppingCriteria, StoppingCriteriaList

    class SolutionDone(StoppingCriteria):
        def __init__(self, start: int):
            self.start, self.done = start, None

        def __call__(self, input_ids, scores, **kwargs):  # (R, T) -> (R,) done per row
            if self.done is None:
                self.done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
            fresh = (input_ids[:, -1] == newline) & ~self.done  # only rows that just ended a line
            for i in fresh.nonzero().flatten().tolist():
                self.done[i] = _done(tok.decode(input_ids[i, self.start:], skip_special_tokens=True))
            return self.done.clone()

    def _done(text: str) -> bool:
        lines = text.split("\n")[:-1]
        return any(task.is_final_step(line) for line in lines) or len(lines) >= task.max_steps

    newline = tok("\n", add_special_tokens=False)["input_ids"][0]
    tokens, start = 0, time.perf_counter()
    for p, steps in items:
        ids = tok(context_of(task, p, steps), return_tensors="pt")["input_ids"].repeat(r, 1).to(model.device)  # (R, T)
        room = model.config.n_positions - ids.shape[1]  # the sampler in (a) has the same window
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                             max_new_tokens=min(max_new_tokens, room),
                             stopping_criteria=StoppingCriteriaList([SolutionDone(ids.shape[1])]),
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        for row in tok.batch_decode(out[:, ids.shape[1]:], skip_special_tokens=True):
            tokens += len(tok(_useful(row, task))["input_ids"])
    return tokens, time.perf_counter() - start


def _useful(text: str, task) -> str:
    """A row's text up to its own stop (generate keeps padding finished rows)."""
    out, lines = [], text.split("\n")
    for line in lines[:-1]:
        out.append(line + "\n")
        if task.is_final_step(line) or len(out) >= task.max_steps:
            break
    return "".join(out)


@torch.inference_mode()
def run_ceiling(model, tok, task, items, batch_size: int, n_tokens: int, row_length: int, rollouts: int):
    """Rounds of: prefill batch_size / rollouts contexts, copy each one's cache `rollouts` times (the
    same prefix sharing as (a)), decode `row_length` tokens for every row (the mean rollout length
    of (a)), until as many tokens as (a) generated; no stopping or bookkeeping."""
    from transformers import DynamicCache

    from pav.policies.hf import cache_argument

    ctx = [context_of(task, p, s) for p, s in items]
    rounds = max(1, round(n_tokens / (batch_size * row_length)))
    start = time.perf_counter()
    for r in range(rounds):
        n_ctx = max(1, batch_size // rollouts)
        chunk = [ctx[(r * n_ctx + i) % len(ctx)] for i in range(n_ctx)]
        enc = tok(chunk, return_tensors="pt", padding=True, padding_side="left").to(model.device)
        mask = enc["attention_mask"]
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache, name = DynamicCache(config=model.config), cache_argument(model)
        out = model(input_ids=enc["input_ids"], attention_mask=mask, position_ids=pos, use_cache=True,
                    logits_to_keep=1, **{name: cache})
        rows = torch.arange(n_ctx, device=model.device).repeat_interleave(rollouts)  # (B,) context of each row
        cache.batch_select_indices(rows)
        logits, mask, pos = out.logits[rows, -1], mask[rows], pos[rows, -1:] + 1
        for _ in range(row_length):
            ids = torch.multinomial(logits.softmax(-1), 1)  # (B, 1)
            mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos.clamp(max=model.config.n_positions - 1),
                        use_cache=True, **{name: cache})
            logits, pos = out.logits[:, -1], pos + 1
    _sync(model.device)
    return rounds * len(rows) * row_length, time.perf_counter() - start


def _sync(device: torch.device) -> None:
    """Wait for queued GPU work, so that a timer read after it counts it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True, help="a `pav sft` run directory or a model directory")
    parser.add_argument("--prefixes", type=int, default=1000)
    parser.add_argument("--rollouts", type=int, default=16)
    parser.add_argument("--naive-prefixes", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (all three run there)")
    parser.add_argument("--cohorts", type=int, default=1, help="prefill groups decoding at once in (a)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_causal_lm(resolve_model_dir(args.policy), device=args.device)
    policy = HFPolicy(model, tok, "bench", batch_size=args.batch_size, device=args.device, cohorts=args.cohorts)
    task = ModReach()
    items = prefixes(policy, task, args.prefixes, derive_seed(0, "bench"))
    print(f"{len(items)} prefixes x {args.rollouts} rollouts, batch {args.batch_size}, {args.threads} thread(s), "
          f"{args.device}, cohorts {args.cohorts}")
    a_tok, a_s = run_pav(policy, task, items, args.rollouts)
    b_tok, b_s = run_naive(model, tok, task, items[: args.naive_prefixes], args.rollouts, 200)
    row_length = max(1, round(a_tok / (len(items) * args.rollouts)))
    c_tok, c_s = run_ceiling(model, tok, task, items, args.batch_size, a_tok, row_length, args.rollouts)
    rows = [("(a) pav labeller", a_tok, a_s), (f"(b) naive generate ({min(len(items), args.naive_prefixes)} prefixes)",
                                                b_tok, b_s), (f"(c) bare decode loop ({row_length} tokens/row)", c_tok, c_s)]
    for name, n, s in rows:
        print(f"{name:<40} {n:>9} tokens {s:8.1f} s {n / s:10.0f} tokens/s")
    ra, rb, rc = a_tok / a_s, b_tok / b_s, c_tok / c_s
    print(f"(a)/(b) = {ra / rb:.1f}x   (a)/(c) = {ra / rc:.0%}")


if __name__ == "__main__":
    main()
