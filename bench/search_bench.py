"""Beam-search throughput: pav's batched beam search vs a per-problem loop, same settings and outputs.

(a) batched: `beam_search` over all problems at once — one sampler call and one scorer call per
    depth for every beam of every problem;
(b) per-problem: the same function called with one problem at a time, as search-and-learn's
    beam search runs (its batch holds one problem's beams).
Both use per-problem keyed seeds, so their solutions must be identical; the script checks that
(chosen solutions, complete-solution lists and compute counts) and prints the wall-clock ratio.
One torch thread each, run one after the other. ``--width`` takes a list: one comparison per width,
because what batching across problems buys depends on how full one problem's own batch already is
(width × C candidates per depth).

The beam's policy tok/s (tokens generated per second inside its sampler calls) is printed beside
the labeller's on the same policy (`--label-prefixes`); ``--no-reuse`` times the search whose
policy encodes every prefix again at each depth, ``--no-extend`` the one whose scorer reads every
candidate whole (`pav.verifier.extend`), for comparison.

    .venv/bin/python bench/search_bench.py --policy runs/sft --verifier runs/pqv [--problems 100] [--width 2,4,8,16]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

from pav.policies.options import LoadOptions
from pav.policies.load import load_policy
from pav.search.beam import BeamSettings, beam_search
from pav.search.stage import SearchConfig, split_problems
from pav.tasks.modreach import ModReach
from pav.verifier.scorer import VerifierScorer
from pav.verifier.load import load_verifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policy", required=True, help="a `pav sft` run or a model directory")
    ap.add_argument("--verifier", required=True, help="a `pav train-verifier` run (PQV)")
    ap.add_argument("--problems", type=int, default=100, help="held-out problems")
    ap.add_argument("--width", default="16", help="beam width N, or a comma-separated list of widths")
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (policy and verifier)")
    ap.add_argument("--batch-size", type=int, default=256, help="policy rows per sampler call (a GPU wants more)")
    ap.add_argument("--verifier-batch", type=int, default=64, help="solutions per verifier call")
    ap.add_argument("--no-reuse", action="store_true", help="the policy encodes every prefix again at each depth")
    ap.add_argument("--no-extend", action="store_true", help="the scorer reads every candidate whole at each depth")
    ap.add_argument("--label-prefixes", type=int, default=300,
                    help="also time the labeller on this many prefixes (R = 16), for its policy tok/s (0: skip)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    task = ModReach()
    _, problems = split_problems(SearchConfig(problems=args.problems, val_problems=0, alpha=args.alpha))
    load = LoadOptions(device=args.device)
    policy = load_policy(args.policy, args.batch_size, load=load)
    scorer = VerifierScorer(load_verifier(args.verifier, load), k=4, batch_size=args.verifier_batch)
    if args.no_reuse:
        policy.reuse_prefixes = contextlib.nullcontext
    if args.no_extend:
        scorer.extending_prefixes = contextlib.nullcontext
    policy.sample = _timed(policy.sample)
    rows = [compare(policy, scorer, task, problems, int(w), args) for w in args.width.split(",")]
    if args.label_prefixes:
        from label_bench import prefixes, run_pav

        items = prefixes(policy, task, args.label_prefixes, 0)
        SAMPLED.clear()
        run_pav(policy, task, items, 16)
        print(f"labeller: {len(items)} prefixes x 16 rollouts, policy {_rate():,.0f} tok/s")
    if len(rows) > 1:
        print("\nwidth  candidates/problem/depth  batched s  per-problem s  speed-up")
        for w, t_batched, t_alone in rows:
            print(f"{w:5d}  {3 * w:24d}  {t_batched:9.1f}  {t_alone:13.1f}  {t_alone / t_batched:7.1f}x")


SAMPLED: list[tuple[int, float]] = []  # (generated tokens, seconds) of each policy.sample call


def _timed(sample):
    def wrapped(*a, **k):
        batch = sample(*a, **k)
        SAMPLED.append((batch.generated_tokens, batch.seconds))
        return batch
    return wrapped


def _rate() -> float:
    """Generated tokens per second spent in the policy's sample calls since SAMPLED was cleared."""
    return sum(n for n, _ in SAMPLED) / max(1e-9, sum(s for _, s in SAMPLED))


def compare(policy, scorer, task, problems, width: int, args) -> tuple[int, float, float]:
    """Batched vs per-problem beam search at one width: prints the timings and the identity checks."""
    settings = BeamSettings(width=width, candidates=3, alpha=args.alpha, max_steps=task.max_steps, step_tokens=32,
                            temperature=1.0, top_p=1.0, dedup=True)

    SAMPLED.clear()
    start = time.perf_counter()
    batched = beam_search(policy, scorer, task, problems, settings, args.seed)
    t_batched = time.perf_counter() - start
    rate = _rate()
    start = time.perf_counter()
    alone = [beam_search(policy, scorer, task, [p], settings, args.seed)[0] for p in problems]
    t_alone = time.perf_counter() - start

    same_choice = sum(a.steps == b.steps for a, b in zip(batched, alone))
    same_complete = sum([s for s, _ in a.complete] == [s for s, _ in b.complete] for a, b in zip(batched, alone))
    same_compute = sum(a.compute == b.compute for a, b in zip(batched, alone))
    gen = sum(r.compute.generated for r in batched)
    acc = sum(task.outcome(p, r.steps) for p, r in zip(problems, batched)) / len(problems)
    print(f"{len(problems)} problems, width {width}, C = 3, alpha = {args.alpha}, {args.device}, batches {args.batch_size}/{args.verifier_batch}: accuracy {acc:.3f}, "
          f"{gen / len(problems):.0f} policy tokens generated per problem")
    print(f"(a) batched      {t_batched:8.1f} s  {len(problems) / t_batched:7.2f} problems/s, policy {rate:,.0f} tok/s "
          f"inside its sampler calls ({gen / t_batched:,.0f} per second of search)")
    print(f"(b) per-problem  {t_alone:8.1f} s  {len(problems) / t_alone:7.2f} problems/s")
    print(f"speed-up (b)/(a): {t_alone / t_batched:.1f}x ")
    print(f"identical outputs: chosen solution {same_choice}/{len(problems)}, complete solutions "
          f"{same_complete}/{len(problems)}, compute counts {same_compute}/{len(problems)}")
    for p, a, b in zip(problems, batched, alone):
        if a.compute != b.compute:
            print(f"  compute differs on {p.problem_id}: batched {a.compute}, alone {b.compute}")
    return width, t_batched, t_alone


if __name__ == "__main__":
    main()
