"""Labelling cost growth: wall time for P problems and for 10·P problems, same settings.

A labeller with no hidden quadratic work takes at most ~10× as long for 10× the problems
(the goal is <= 10.5×). Writes to temporary directories.

    .venv/bin/python bench/label_scaling.py --policy runs/sft-.../ [--problems 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from pav.rollouts.label import LabelSettings, Sampling, label_problems
from pav.policies.load import load_policy
from pav.tasks.modreach import ModReach

SAMPLING = Sampling(temperature=1.0, top_p=1.0, max_new_tokens=200)  # the label stage's defaults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", required=True, help="a `pav sft` run directory or a model directory")
    parser.add_argument("--problems", type=int, default=20)
    parser.add_argument("--n-cov", type=int, default=2)
    parser.add_argument("--n-mc", type=int, default=8)
    parser.add_argument("--shard-size", type=int, default=25)
    args = parser.parse_args()
    torch.set_num_threads(1)
    task, policy = ModReach(), load_policy(args.policy, 256)
    settings = LabelSettings(**vars(SAMPLING), n_cov=args.n_cov, n_mc=args.n_mc, strategy="all")
    results = []
    for n in (args.problems, 10 * args.problems):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            totals = label_problems(policy, policy, task, task.problems(n, 0), Path(tmp), settings, 0,
                                    args.shard_size, show_progress=False)
            results.append((n, time.perf_counter() - start, totals))
    for n, s, t in results:
        print(f"{n:>6} problems: {s:7.1f} s, {t['prefixes']} prefixes, {t['tokens_generated']} tokens, "
              f"{t['tokens_generated'] / s:.0f} tokens/s")
    (n1, s1, t1), (n2, s2, t2) = results
    print(f"time ratio {s2 / s1:.2f}x for {n2 / n1:.0f}x problems "
          f"(token ratio {t2['tokens_generated'] / t1['tokens_generated']:.2f}x)")


if __name__ == "__main__":
    main()
