"""Label 10 problems through the API: the job `pav label` runs, as records in memory.

    python docs/examples/label_ten_problems.py [POLICY]     # default: runs/demo/sft

Each record counts, for one prefix of one sampled solution, how many of its Monte-Carlo rollouts
reached a correct answer; Q̂ = n_correct / n_rollouts and the step advantages follow from them.
"""

import sys
from collections import defaultdict

import pav

policy = sys.argv[1] if len(sys.argv) > 1 else "runs/demo/sft"
labels = pav.label(policy, problems=10, n_cov=2, n_mc=4)     # any `pav label` setting as a keyword

prefixes = defaultdict(dict)                                  # solution -> {prefix_len: Q̂}
for rec in labels:
    prefixes[rec.solution_id][rec.prefix_len] = float(pav.q_hat(rec.n_correct, rec.n_rollouts))
print(f"{len(labels)} labelled prefixes of {len(prefixes)} solutions to {len({r.problem_id for r in labels})} problems")
for solution_id, q in list(prefixes.items())[:3]:
    values = [q[h] for h in sorted(q)]
    print(solution_id, "Q̂:", [round(v, 2) for v in values],
          "Â:", [round(float(a), 2) for a in pav.advantages_from_prefix_values(values)])
