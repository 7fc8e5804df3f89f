"""The RL loop on tiny random models: a resumed run equals an uninterrupted one; NaN rewards stop it."""

import copy
import json

import numpy as np
import pytest
import torch

from pav.policies.hf import HFPolicy, tiny_gpt2
from pav.policies.tokenizer import build_char_tokenizer
from pav.rl.rewards import NonFiniteReward
from pav.rl.stage import RLConfig
from pav.rl.train import Learner, RLSettings, train_rl
from pav.tasks.modreach import ModReach
from pav.verifier.model import ValueVerifier
from pav.verifier.scorer import StepScores, VerifierScorer

TOK = build_char_tokenizer()
TASK = ModReach()
SETTINGS = RLSettings.of(RLConfig(), reward="pav", alpha=1.0, baseline="value", iterations=4, problems_per_iter=2,
                         samples_per_problem=2, lr=1e-3, warmup=1, max_new_tokens=24, max_length=128,
                         checkpoint_every=2, eval_every=2)


def _learner():
    torch.set_num_threads(1)
    model = tiny_gpt2(len(TOK), seed=1, eos_token_id=TOK.eos_token_id)
    value = ValueVerifier(tiny_gpt2(len(TOK), seed=2, eos_token_id=TOK.eos_token_id), TOK, seed=3)
    return Learner(HFPolicy(model, TOK, "tiny"), copy.deepcopy(model).requires_grad_(False), value,
                   torch.optim.AdamW(model.parameters(), lr=1e-3), torch.optim.AdamW(value.parameters(), lr=1e-3))


def _scorer():
    return VerifierScorer(ValueVerifier(tiny_gpt2(len(TOK), seed=4, eos_token_id=TOK.eos_token_id), TOK, seed=4), k=4)


def test_every_trainable_parameter_moves_and_metrics_are_logged(tmp_path):
    learner = _learner()
    before = {k: v.clone() for k, v in learner.policy.model.named_parameters()}
    last = train_rl(learner, TASK, _scorer(), SETTINGS, tmp_path, lambda it: {"rl/heldout_accuracy": 0.0})
    moved = [k for k, v in learner.policy.model.named_parameters() if not torch.equal(v, before[k])]
    assert len(moved) == len(before)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and "rl/heldout_accuracy" in rows[1]
    assert {"rl/kl", "rl/entropy", "rl/value_loss", "rl/steps_per_solution", "rl/reward_bonus"} <= set(last)
    assert last["rl/samples"] == 16


def test_an_entropy_bonus_changes_the_update_and_every_stage_knob_reaches_the_loop(tmp_path):
    import dataclasses

    assert {f.name for f in dataclasses.fields(RLSettings)} <= {f.name for f in dataclasses.fields(RLConfig)}
    assert all(f.default is dataclasses.MISSING for f in dataclasses.fields(RLSettings))  # one default: the stage's
    one = dataclasses.replace(SETTINGS, iterations=1)
    plain, bonus = _learner(), _learner()
    train_rl(plain, TASK, _scorer(), one, tmp_path / "plain", lambda it: {})
    train_rl(bonus, TASK, _scorer(), dataclasses.replace(one, entropy_coef=0.5), tmp_path / "bonus", lambda it: {})
    rows = [json.loads((tmp_path / d / "metrics.jsonl").read_text()) for d in ("plain", "bonus")]
    assert rows[0]["rl/entropy"] == rows[1]["rl/entropy"]  # the same samples: the bonus acts on the update only
    assert rows[1]["rl/loss"] < rows[0]["rl/loss"]
    assert not torch.equal(plain.policy.model.transformer.wte.weight, bonus.policy.model.transformer.wte.weight)
    from pav.rl.rollout import encode_rollouts, token_logprobs

    enc = encode_rollouts(TOK, ["0 to 3 mod 10 ops +3 *2 +1 max 4\n"], ["0+3=3\nans 3\n"], "\n", 64)
    _, ent = token_logprobs(plain.policy.model, enc)
    _, ent_grad = token_logprobs(plain.policy.model, enc, entropy_grad=True)
    assert not ent.requires_grad and ent_grad.requires_grad and torch.equal(ent, ent_grad.detach())


def test_resume_continues_from_the_checkpoint_exactly(tmp_path):
    whole = _learner()
    train_rl(whole, TASK, _scorer(), SETTINGS, tmp_path / "whole", lambda it: {})

    class Killed(Exception):
        pass

    def kill(it):
        if it == 3:  # after iteration 3, whose checkpoint (every 2) was never written
            raise Killed

    with pytest.raises(Killed):
        train_rl(_learner(), TASK, _scorer(), SETTINGS, tmp_path / "killed", lambda it: {}, on_iter=kill)
    resumed = _learner()
    train_rl(resumed, TASK, _scorer(), SETTINGS, tmp_path / "killed", lambda it: {})
    for (k, a), (_, b) in zip(whole.policy.model.state_dict().items(), resumed.policy.model.state_dict().items()):
        assert torch.equal(a, b), k
    steps = [json.loads(line)["step"] for line in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]  # iteration 3 of the killed run was dropped and redone


def test_a_non_finite_reward_stops_the_run_with_a_clear_message(tmp_path):
    class Broken:
        def score(self, prompts, steps_list):
            return [StepScores(float("nan"), np.full(len(s), np.nan), np.full(len(s), np.nan), np.full(len(s), np.nan),
                               float("nan")) for s in steps_list]

    with pytest.raises(NonFiniteReward, match="non-finite values inside its window"):
        train_rl(_learner(), TASK, Broken(), SETTINGS, tmp_path, lambda it: {})
    assert not (tmp_path / "checkpoints").exists()


def test_rft_fine_tunes_on_the_correct_seed_solutions_only(tmp_path):
    import random

    from pav.core.io import write_jsonl
    from pav.core.records import Solution
    from pav.core.rundir import mark_complete, write_run_tag
    from pav.policies.hf import load_causal_lm, save_policy
    from pav.rl.stage import RLConfig, rft
    from pav.tasks.build import builtin_task
    from pav.tasks.modreach import ModReachConfig

    task = ModReach(ModReachConfig(p_err=0, p_restate=0, p_rand=0))  # a perfect demonstrator
    problems = task.problems(6, seed=0)
    write_jsonl(tmp_path / "labels" / "problems.jsonl", problems)
    rng = random.Random(0)
    good = [Solution(p.problem_id, f"{p.problem_id}/s0", tuple(task.demonstrate(p, rng)), "x", 1.0) for p in problems]
    bad = [Solution(p.problem_id, f"{p.problem_id}/s1", ("0+0=9", "ans 1"), "x", 0.0) for p in problems]
    write_jsonl(tmp_path / "labels" / "solutions" / "shard-00000.jsonl", good + bad)
    write_run_tag(tmp_path / "labels", "label")  # a finished label run, as rft reads only those
    mark_complete(tmp_path / "labels")
    save_policy(tiny_gpt2(len(TOK), seed=1, eos_token_id=TOK.eos_token_id), TOK, tmp_path / "start")
    cfg = RLConfig(task=builtin_task(task.cfg), policy=str(tmp_path / "start"), rft_labels=str(tmp_path / "labels"), rft_steps=30,
                   rft_lr=3e-3)
    out = rft(cfg, tmp_path / "rft")
    before, _ = load_causal_lm(tmp_path / "start")
    after, _ = load_causal_lm(out)

    def nll(model, sols):
        from pav.rl.rollout import encode_rollouts, token_logprobs

        enc = encode_rollouts(TOK, [task.prompt(problems[0])] * len(sols),
                              ["".join(s + "\n" for s in sol.steps) for sol in sols], "\n", 128)
        with torch.no_grad():
            logp, _ = token_logprobs(model, enc)
        return float(-(logp * enc.completion).sum() / enc.completion.sum())

    assert nll(after, good) < nll(before, good) - 0.5  # learned the correct solutions


def test_the_exact_expert_scorer_gives_the_loop_its_advantages(tmp_path):
    import dataclasses

    from pav.verifier.exact import ExpertScorer

    last = train_rl(_learner(), TASK, ExpertScorer(TASK), dataclasses.replace(SETTINGS, iterations=1), tmp_path,
                    lambda it: {})
    # an untrained model writes invalid lines: their A^μ = −V^expert(before) < 0 is the only bonus
    assert last["rl/reward_bonus"] < 0 and np.isfinite(last["rl/reward"])


def test_the_expert_verifier_is_refused_on_a_math_problem_set():
    from pav.rl.stage import RLConfig, run_rl
    from pav.tasks.build import MATH, task_config

    with pytest.raises(ValueError, match="built-in task's exact expert"):
        run_rl(RLConfig(policy="p", verifier="expert", task=task_config(MATH, train="problems.jsonl")), None)
