"""pav's Python API: the CLI stages' building blocks as functions, for notebooks and scripts.

Everything here is importable as ``pav.<name>`` (``import pav`` itself loads none of it, nor torch:
the names resolve on first use). Defaults come from the stages' config classes, so a function and
the command it mirrors never disagree; keyword ``settings`` are the command's ``--set`` keys.

    import pav
    labels = pav.label("runs/sft", problems=10)               # the records `pav label` writes
    scorer = pav.load_scorer("runs/pqv")                      # a trained verifier
    pav.score_steps(scorer, prompt, steps, alpha=0.5)         # per-step Q^π, A^μ, effective reward
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pav.rollouts.estimates import (advantages_from_prefix_values, best_of_k, effective_reward, pass_at_n, q_hat,
                                    wilson_interval)

__all__ = [
    "advantages_from_prefix_values", "beam_search", "best_of_k", "best_of_n", "effective_reward", "label",
    "load_policy", "load_scorer", "load_task", "pass_at_n", "q_hat", "score_steps", "wilson_interval",
]


def load_task(source: str = "", **options: Any):
    """A task by its factory ``'module:function'`` (default: the built-in ModReach task) and options."""
    from pav.tasks.build import TaskConfig, build_task

    return build_task(TaskConfig(source=source, options=options) if source else TaskConfig(options=options))


def load_policy(name: str, *, batch_size: int = 64, device: str = "cpu", **load: Any):
    """A sampler (`pav.policies.Policy`) of a `pav sft`/`pav rl` run, a model directory, a .gguf file or
    a hub name; ``load`` takes the ``load.*`` settings (dtype, backend, trust_remote_code)."""
    from pav.policies.load import load_policy as _load
    from pav.policies.options import LoadOptions

    return _load(name, batch_size, load=LoadOptions(device=device, **load))


def label(policy: str, *, problems: int = 10, out: str | Path | None = None,
          **settings: Any) -> list:
    """Monte-Carlo step labels of ``problems`` problems: the job `pav label` runs, returned as its
    `pav.core.StepLabel` records (raw counts per prefix; `q_hat` and `advantages_from_prefix_values`
    turn them into Q̂ and Â). Other keyword arguments are `pav label` settings (``n_cov=2``,
    ``n_mc=8``, ``seed=1``, ``task={"source": ...}``). Written to ``out`` (default: a temporary folder)."""
    from pav.core.config import resolve
    from pav.rollouts.stage import LabelConfig, run_label
    from pav.rollouts.views import read_labels

    cfg = resolve(LabelConfig, overrides=_flat({"policy": str(policy), "problems": problems, **settings}))
    run_dir = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="pav-label-"))
    run_label(cfg, run_dir, show_progress=False)
    return read_labels(run_dir)


def load_scorer(verifier: str, *, k: int = 4, prover: str = "", orm: str = "", device: str = "cpu",
                batch_size: int = 32):
    """A `Scorer` of a `pav train-verifier` run (a PQV): Q^π from it, A^μ from its Best-of-``k``
    (or from a ``prover`` verifier run when ``k`` is 0), the outcome from it or an ``orm`` run."""
    from pav.policies.options import LoadOptions
    from pav.verifier.load import load_scorer as _load

    return _load(verifier, k=k, prover=prover, orm=orm, load=LoadOptions(device=device), batch_size=batch_size)


def score_steps(scorer, prompt: str, steps: Sequence[str], alpha: float) -> dict[str, Any]:
    """One solution's per-step scores: ``q_base`` (Q^π after each step), ``q_prover`` (Q^μ),
    ``adv_prover`` (A^μ, the progress of each step), ``effective_reward`` (Q^π + α·A^μ), ``v_base``
    (V^π of the question) and ``outcome`` (the verifier's estimate of the final answer)."""
    (s,) = scorer.score([prompt], [list(steps)])
    return {"v_base": s.v_base, "q_base": s.q_base.tolist(), "q_prover": s.q_prover.tolist(),
            "adv_prover": s.adv_prover.tolist(), "effective_reward": s.effective_reward(alpha).tolist(),
            "outcome": s.outcome}


def beam_search(policy, scorer, task, problems: Sequence, *, width: int, alpha: float, seed: int = 0,
                **settings: Any) -> list:
    """Step-level beam search of every problem scored by Q^π + α·A^μ (α = 0: PQV beam); returns one
    `pav.search.beam.BeamResult` per problem. Other settings (candidates, step_tokens, temperature,
    top_p, dedup) default to `pav search`'s."""
    from pav.core.config import resolve
    from pav.search.beam import BeamSettings
    from pav.search.beam import beam_search as _beam
    from pav.search.stage import SearchConfig

    cfg = resolve(SearchConfig, overrides=dict(settings))
    beam = BeamSettings(width=width, candidates=cfg.candidates, alpha=alpha,
                        max_steps=task.max_steps, step_tokens=cfg.step_tokens, temperature=cfg.temperature,
                        top_p=cfg.top_p, dedup=cfg.dedup)
    return _beam(policy, scorer, task, list(problems), beam, seed)


def best_of_n(policy, scorer, task, problems: Sequence, *, n: int, method: str = "orm", seed: int = 0,
              **settings: Any) -> dict[str, Any]:
    """Best-of-``n`` by ``method`` (orm, pav_as_orm, majority, weighted_majority): samples ``n``
    solutions of every problem and returns accuracy, its standard error and compute per problem.
    Other settings (max_new_tokens, temperature, top_p) default to `pav search`'s."""
    from pav.core.config import resolve
    from pav.search.best_of_n import best_of_n as _best_of_n
    from pav.search.best_of_n import sample_and_score
    from pav.search.stage import SearchConfig

    cfg = resolve(SearchConfig, overrides=dict(settings))
    sets = sample_and_score(policy, scorer, task, list(problems), n, seed, max_new_tokens=cfg.max_new_tokens,
                            temperature=cfg.temperature, top_p=cfg.top_p)
    return _best_of_n(sets, n, method)


def _flat(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys ({"task": {"source": s}} -> {"task.source": s}); ``task.options``
    stays a table."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping) and f"{prefix}{key}" != "task.options":
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out

