"""`pav eval-policy`: sample ``samples`` solutions of a policy for each of ``problems`` problems of a
task and measure them (`pav.eval.policy`): summary.json, samples.jsonl (one row per solution: steps,
answer, grade), report.md and the table printed at the end.

The policy is anything ``policy=`` takes elsewhere: a `pav sft` or `pav rl` run, a model directory,
a GGUF file or a hub name; the task is the ``task`` section (`pav.tasks.build`), whose prompts are
rendered with the policy's tokenizer (chat templates).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pav.core.config import knob
from pav.core.io import atomic_open
from pav.core.records import SCHEMA_VERSION
from pav.core.rundir import mark_complete, start_run, summary_fields
from pav.core.seeding import derive_seed
from pav.eval.policy import EvalPolicySummary
from pav.policies.options import LoadOptions
from pav.tasks.build import TASK_HELP, TaskConfig, build_task, check_source, check_task, with_tokenizer

log = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"


@dataclass(frozen=True)
class EvalPolicyConfig:
    task: TaskConfig = knob(TaskConfig(), TASK_HELP)
    policy: str = knob("", "the policy: a `pav sft`/`pav rl` run, a model directory, a GGUF file or a hub name")
    load: LoadOptions = knob(LoadOptions(), "how the policy is loaded: device, dtype, backend")
    problems: int = knob(200, "problems to evaluate")
    split: Literal["heldout", "train"] = knob("heldout", "which split of the task's problems")
    samples: int = knob(8, "solutions per problem (n): pass@k and maj@k for k = 1..n")
    temperature: float = knob(1.0, "sampling temperature (0: greedy, then samples=1 says all)")
    top_p: float = knob(1.0, "nucleus sampling threshold")
    max_new_tokens: int = knob(400, "token budget of one solution (a solution cut by it counts as cut_by_budget)")
    batch_size: int = knob(64, "rows per sampler batch")
    seed: int = knob(0, "seed of the problems and the samples")
    threads: int = knob(1, "torch threads")

    def __post_init__(self) -> None:
        if self.problems < 1 or self.samples < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("problems, samples, max_new_tokens and batch_size must be >= 1")


def run_eval_policy(cfg: EvalPolicyConfig, out: str | Path | None, overwrite: bool = False,
                    show_progress: bool = True) -> EvalPolicySummary:
    """Sample, grade, measure; see the module docstring."""
    import torch

    from pav.eval.policy import metrics_table, policy_metrics, sample_rows
    from pav.policies.load import load_policy
    from pav.rollouts.label import Sampling, sample_solutions

    if not cfg.policy:
        raise ValueError("eval-policy needs a policy: --set policy=RUN_OR_MODEL_DIR_OR_GGUF_FILE")
    torch.set_num_threads(cfg.threads)
    check_source(cfg.task)  # a task plug-in that cannot be imported stops the run before any work
    task = build_task(cfg.task, check=False)
    policy = load_policy(cfg.policy, cfg.batch_size, task.step_delimiter, cfg.load)
    task = with_tokenizer(task, getattr(policy, "tokenizer", None))
    check_task(task, cfg.task.source)
    run_dir = start_run(out, "eval-policy", cfg, overwrite)
    problems = task.problems(cfg.problems, derive_seed(cfg.seed, "eval-problems"), cfg.split)
    settings = Sampling(temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens)
    start = time.perf_counter()
    solutions, generations, stats = sample_solutions(policy, task, problems, cfg.samples, settings,
                                                     derive_seed(cfg.seed, "eval-samples"))
    seconds = time.perf_counter() - start
    rows = sample_rows(task, problems, solutions, generations)
    with atomic_open(run_dir / SAMPLES_FILE) as f:
        f.writelines(json.dumps({"schema_version": SCHEMA_VERSION, "kind": "eval_sample", **r}, ensure_ascii=False)
                     + "\n" for r in rows)
    shape = policy_metrics(rows, cfg.samples)
    scores = {k: shape.pop(k) for k in list(shape) if k.startswith(("pass@", "maj@"))}
    summary = EvalPolicySummary(policy=cfg.policy, task=task.name, split=cfg.split, metrics=scores, **shape,
                                tokens_generated=stats.tokens_generated, seconds=seconds)
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32, 64, 128) if k <= cfg.samples} | {cfg.samples})
    table = metrics_table(summary_fields(summary), ks)
    (run_dir / "report.md").write_text(f"# {cfg.policy} on {task.name} ({cfg.split})\n\n{table}\n", encoding="utf-8")
    mark_complete(run_dir, summary)
    print(table)
    log.info("eval-policy: pass@1 %.3f ± %.3f over %d problems × %d samples; no answer %.3f, blank step %.3f "
             "(%.0f s) -> %s", scores["pass@1"], scores["pass@1_se"], summary.problems, cfg.samples,
             summary.no_answer, summary.blank_step, seconds, run_dir)
    return summary
