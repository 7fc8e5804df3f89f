"""Score a solution step by step with the built-in demo's verifier (run `pav demo` first).

    python docs/examples/score_a_solution.py [DEMO_RUN]     # default: runs/demo

Per step: Q^π (the PQV's chance that the base policy π still succeeds after the step), A^μ (the
progress the step makes under the Best-of-4 prover μ) and the effective reward Q^π + α·A^μ that
PAV beam search ranks steps by.
"""

import sys
from pathlib import Path

import pav

demo = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo")
scorer = pav.load_scorer(demo / "pqv", k=4)          # a `pav train-verifier` run; μ = Best-of-4(π)
task = pav.load_task()                                # the built-in ModReach task
problem = task.problems(1, seed=0, split="heldout")[0]
prompt = task.prompt(problem)

# a solution sampled from the demo's base policy, split into steps by the task
policy = pav.load_policy(demo / "sft")
text = policy.sample([prompt], 1, until="solution", max_steps=task.max_steps, max_new_tokens=120,
                     temperature=1.0, top_p=1.0, seed=0, is_final_step=task.is_final_step,
                     max_step_chars=task.max_step_chars).generations[0][0].text
steps = task.split_steps(text)

scores = pav.score_steps(scorer, prompt, steps, alpha=0.5)
print(prompt)
print(f"{'step':<28} {'Q^pi':>6} {'A^mu':>7} {'Q+0.5A':>7}")
for step, q, a, r in zip(steps, scores["q_base"], scores["adv_prover"], scores["effective_reward"]):
    print(f"{step.strip()[:28]:<28} {q:6.3f} {a:+7.3f} {r:7.3f}")
print(f"V^pi of the question {scores['v_base']:.3f}; outcome: {task.outcome(problem, steps):.0f} (checked)")
