"""pav's process rewards inside verl (0.9's reward loop): a reward manager and a ``compute_score``.

`PAVRewardManager` is registered with verl's ``register`` under the name ``pav``. verl calls
``run_single`` on one sample (a one-row ``DataProto``): the manager decodes the valid response
tokens, splits them into steps at the verifier's delimiter, finds the token that completes each
step (`pav.serve.adapters.steps_with_token_ends`) and scores the steps with the verifier; with a
``reward_model.ground_truth`` in the sample, the final step carries the checked outcome
(`pav.serve.graded`). Its ``reward_score`` is a `DenseReward`: a float, the sum of the step rewards,
that also carries each step's reward and token. ``assemble_rm_scores`` (verl's hook for the
``rm_scores`` tensor) puts each step's effective reward Q̂^π + α·Â^μ on the token that completes
that step, so token-level estimators (GAE, REINFORCE++) see dense rewards. verl 0.9 calls that hook
only on its batch reward path (`RewardLoopManager.compute_rm_score`); where it streams rewards during
rollout (its default without a colocated reward model) it places the float on the last token itself.
An outcome-level estimator (GRPO sums the token rewards) sees the same number on either path.

Settings live in the trainer config's ``reward.pav`` section (``+reward.pav.verifier=runs/pqv``;
also ``alpha`` 0.5, ``k`` 4, ``orm``, ``task.source``/``task.options`` for grading ground truths,
the built-in task by default). The verifier is loaded once per process.

`compute_score` is the scalar path (``reward.custom_reward_function``): the same sum for one
``solution_str``; the prompt the verifier reads comes from ``extra_info["prompt"]``.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Any

import numpy as np
import torch
from verl import DataProto
from verl.experimental.reward_loop.reward_manager import register
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from pav.serve.adapters import load_scorer, steps_with_token_ends
from pav.serve.graded import checked_outcome, extra_logs, load_task, with_outcome


class DenseReward(float):
    """A response's reward as one float (the sum of its step rewards) that also carries where each
    step's reward goes: ``tokens[i]`` (index into the response) receives ``rewards[i]``."""

    def __new__(cls, tokens: list[int], rewards: list[float]) -> DenseReward:
        obj = super().__new__(cls, float(sum(rewards)))
        obj.tokens, obj.rewards = list(tokens), list(rewards)
        return obj

    def __reduce__(self):  # through Ray to the driver, which calls assemble_rm_scores
        return DenseReward, (self.tokens, self.rewards)


@functools.cache
def _load(settings_json: str) -> tuple[Any, Any, dict[str, Any]]:
    """Scorer, task and settings of a ``reward.pav`` section (once per process)."""
    from pav.tasks.build import TaskConfig

    s = json.loads(settings_json)
    if not s.get("verifier"):
        raise ValueError("the pav reward manager needs +reward.pav.verifier=PQV_RUN (a `pav train-verifier` run)")
    scorer = load_scorer(s["verifier"], k=int(s.get("k", 4)), orm=s.get("orm", ""))
    task_section = s.get("task") or {}
    task = load_task(TaskConfig(**task_section) if task_section else None, scorer.pqv.tokenizer)
    return scorer, task, {"alpha": float(s.get("alpha", 0.5)), "delimiter": scorer.pqv.delimiter}


def _settings(config: Any) -> str:
    from omegaconf import OmegaConf

    section = config.reward.get("pav") if hasattr(config, "reward") else None
    plain = OmegaConf.to_container(section, resolve=True) if section is not None else {}
    return json.dumps(plain, sort_keys=True)


def score_response(scorer: Any, task: Any, prompt: str, steps: list[str], gold: Any, alpha: float
                   ) -> tuple[np.ndarray, float | None]:
    """(H,) step rewards of one finished response and its checked outcome (None without a gold answer)."""
    outcome = checked_outcome(task, prompt, steps, None if gold is None else str(gold))
    scores = with_outcome(scorer.score([prompt], [steps])[0], outcome)
    return scores.effective_reward(alpha), outcome


@register("pav")
class PAVRewardManager(RewardManagerBase):
    """verl reward manager ``pav`` (module docstring)."""

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None, reward_model_tokenizer=None):
        super().__init__(config, tokenizer, compute_score)
        self.scorer, self.task, settings = _load(_settings(config))
        self.alpha, self.delimiter = settings["alpha"], settings["delimiter"]

    async def run_single(self, data: DataProto) -> dict[str, Any]:
        return await asyncio.get_running_loop().run_in_executor(None, self._score_one, data[-1:])

    def _score_one(self, data: DataProto) -> dict[str, Any]:
        item = data[0]
        prompt_ids, response_ids = item.batch["prompts"], item.batch["responses"]
        mask = item.batch["attention_mask"]  # (P + L,): left-padded prompt, right-padded response
        prompt = self._prompt_text(prompt_ids[mask[: prompt_ids.shape[-1]].bool()].tolist())
        ids = response_ids[: int(mask[prompt_ids.shape[-1]:].sum())].tolist()
        steps, ends = steps_with_token_ends(self.tokenizer, ids, self.delimiter)
        gold = (item.non_tensor_batch.get("reward_model") or {}).get("ground_truth")
        if not steps:  # nothing to score: the checked outcome (0 without a gold answer) on the last token
            outcome = checked_outcome(self.task, prompt, [], None if gold is None else str(gold))
            value = outcome or 0.0
            return {"reward_score": DenseReward([max(len(ids) - 1, 0)], [value]),
                    "reward_extra_info": extra_logs(np.zeros(0), outcome)}
        step_rewards, outcome = score_response(self.scorer, self.task, prompt, steps, gold, self.alpha)
        placed = [(t, float(r)) for t, r in zip(ends, step_rewards) if t is not None and np.isfinite(r)]
        return {"reward_score": DenseReward([t for t, _ in placed], [r for _, r in placed]),
                "reward_extra_info": extra_logs(step_rewards, outcome)}

    def _prompt_text(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=False)  # chat-template markers are part of it
        bos = getattr(self.tokenizer, "bos_token", None)
        return text[len(bos):] if bos and text.startswith(bos) else text

    @classmethod
    def assemble_rm_scores(cls, data: DataProto, scores: list[float]) -> torch.Tensor:
        """(B, L) rewards: each step's on the token completing it; a plain float on the last valid token."""
        rm_scores = torch.zeros_like(data.batch["responses"], dtype=torch.float32)  # (B, L)
        prompt_length = data.batch["prompts"].size(1)
        valid = data.batch["attention_mask"][:, prompt_length:].sum(dim=1)  # (B,)
        for b, score in enumerate(scores):
            if isinstance(score, DenseReward):
                for t, r in zip(score.tokens, score.rewards):
                    rm_scores[b, t] += r
            else:
                rm_scores[b, max(int(valid[b]) - 1, 0)] = float(score)
        return rm_scores


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None, *,
                  verifier: str = "", alpha: float = 0.5, k: int = 4, orm: str = "", task: dict | None = None,
                  **_: Any) -> dict[str, float]:
    """verl's scalar reward path (``reward.custom_reward_function.path=pkg://pav.serve.verl_manager``,
    ``name=compute_score``, settings under ``reward_kwargs``): ``score`` is the sum of the step rewards."""
    prompt = (extra_info or {}).get("prompt")
    if not isinstance(prompt, str):
        raise ValueError("pav's compute_score needs the prompt text in the dataset's extra_info['prompt']")
    settings = json.dumps({"verifier": verifier, "alpha": alpha, "k": k, "orm": orm, "task": task or {}}, sort_keys=True)
    scorer, task_obj, s = _load(settings)
    steps = [p for p in solution_str.split(s["delimiter"]) if p.strip()]
    if not steps:
        outcome = checked_outcome(task_obj, prompt, [], None if ground_truth is None else str(ground_truth))
        return {"score": outcome or 0.0, **extra_logs(np.zeros(0), outcome)}
    step_rewards, outcome = score_response(scorer, task_obj, prompt, steps, ground_truth, s["alpha"])
    return {"score": float(np.nansum(step_rewards)), **extra_logs(step_rewards, outcome)}
