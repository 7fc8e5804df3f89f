"""pav's process reward on OpenRLHF's local reward-function path (no server).

OpenRLHF 0.11 loads a file given as ``--reward.remote_url /path/to/openrlhf_reward_func.py`` and
calls ``reward_func(queries, prompts, labels)`` once per sample, from a thread. This file answers
exactly as `pav serve`'s /openrlhf route does (`pav.serve.openrlhf`): ``rewards``, ``scores`` and
``extra_logs``, each response's step rewards Q̂^π + α·Â^μ reduced to one number, with the checked
outcome on the final step when its label is a gold answer. It reads its settings from the
environment, since OpenRLHF passes none:

    PAV_VERIFIER=runs/pqv             # a `pav train-verifier` run (required)
    PAV_ALPHA=0.5 PAV_REDUCTION=min PAV_K=4
    PAV_TASK=pav.tasks.math_task:make_task PAV_TASK_OPTIONS='{"train": "gsm8k.jsonl"}'  # default: the built-in task

    python -m openrlhf.cli.train_ppo_ray ... --reward.remote_url examples/openrlhf_reward_func.py \\
        --data.label_key answer

The verifier is loaded once per process, on first use; a bad request raises ValueError with the
reason (OpenRLHF logs it and leaves that sample without a reward).
"""

from __future__ import annotations

import functools
import json
import os
import threading
from typing import Any

_LOCK = threading.Lock()  # OpenRLHF calls from several threads; torch runs one batch at a time


@functools.cache
def _service() -> tuple[Any, Any, dict[str, Any]]:
    from pav.serve.adapters import load_scorer
    from pav.serve.graded import load_task
    from pav.tasks.build import TaskConfig

    verifier = os.environ.get("PAV_VERIFIER", "")
    if not verifier:
        raise ValueError("set PAV_VERIFIER to a `pav train-verifier` run")
    scorer = load_scorer(verifier, k=int(os.environ.get("PAV_K", "4")))
    source = os.environ.get("PAV_TASK", "")
    task = load_task(TaskConfig(source, json.loads(os.environ.get("PAV_TASK_OPTIONS", "{}"))) if source else None,
                     scorer.pqv.tokenizer)
    settings = {"alpha": float(os.environ.get("PAV_ALPHA", "0.5")), "reduction": os.environ.get("PAV_REDUCTION", "min"),
                "delimiter": scorer.pqv.delimiter}
    return scorer, task, settings


def reward_func(queries: list[str], prompts: list[str], labels: list[str | None]) -> dict[str, Any]:
    from pav.serve.openrlhf import rewards

    scorer, task, settings = _service()
    with _LOCK:
        return rewards(scorer, task, queries, prompts, labels, **settings)
