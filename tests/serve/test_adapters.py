"""pav's rewards inside other trainers: TRL's GRPOTrainer with `PAVReward`, and verl-shaped
token-level rewards placed on the tokens that complete each step."""

import numpy as np
import pytest
import torch

from pav.policies.tokenizer import build_char_tokenizer
from pav.serve.adapters import PAVReward, split_steps, token_level_rewards
from pav.serve.reduce import reduce_steps

PROMPT = "0 to 8 mod 10 ops +3 *2 max 5\n"


def test_the_trl_reward_is_the_reduced_effective_reward(scorer):
    reward = PAVReward(scorer, alpha=0.5, reduction="min")
    completions = ["0+3=3\n3*2=6\n", "0*2=0\n\n", ""]
    got = reward(prompts=[PROMPT] * 3, completions=completions)
    direct = scorer.score([PROMPT] * 3, [split_steps(c, "\n") for c in completions])
    assert got == pytest.approx([reduce_steps(d.effective_reward(0.5), d.outcome, "min") for d in direct])
    assert got[2] == 0.0 and reward.__name__ == "pav_min"  # no step: the empty value; TRL logs by __name__
    conv = reward(prompts=[PROMPT], completions=[[{"role": "assistant", "content": "0+3=3\n3*2=6\n"}]])
    assert conv == pytest.approx(got[:1])
    with pytest.raises(ValueError, match="reduction"):
        PAVReward(scorer, reduction="max")


def test_a_gold_answer_column_puts_the_checked_outcome_on_the_final_step(scorer):
    short = "2 to 4 mod 10 ops +3 *2 max 1\n"
    completions = ["2*2=4\nans 4\n", "2+3=5\nans 5\n", "2*2=4\n"]  # right, wrong, no answer
    reward = PAVReward(scorer, alpha=0.5, reduction="last")
    got = reward(prompts=[short] * 3, completions=completions, answer=["4", "4", "4"])
    for g, d, outcome in zip(got, scorer.score([short] * 3, [split_steps(c, "\n") for c in completions]), (1, 0, 0)):
        assert g == pytest.approx(outcome + 0.5 * (outcome - (d.q_prover[-1] - d.adv_prover[-1])))
    plain = reward(prompts=[short] * 3, completions=completions)  # no gold column: the verifier's values
    assert plain == pytest.approx([float(d.effective_reward(0.5)[-1]) for d in
                                   scorer.score([short] * 3, [split_steps(c, "\n") for c in completions])])
    with pytest.raises(ValueError, match="not the answer"):
        reward(prompts=[short], completions=completions[:1], answer=["5"])


def test_token_level_rewards_sit_on_the_tokens_that_end_each_step(scorer):
    tok = build_char_tokenizer()
    responses = ["0+3=3\n3*2=6\n", "0*2=0"]  # the second ends without a delimiter
    width = max(len(r) for r in responses) + 3
    ids = torch.full((2, width), tok.pad_token_id)
    mask = torch.zeros((2, width), dtype=torch.long)
    for b, r in enumerate(responses):
        enc = tok(r, add_special_tokens=False)["input_ids"]
        ids[b, : len(enc)], mask[b, : len(enc)] = torch.tensor(enc), 1
    out = token_level_rewards(scorer, tok, [PROMPT, PROMPT], ids, mask, alpha=0.5)
    assert out.shape == ids.shape and out.dtype == torch.float32
    direct = scorer.score([PROMPT, PROMPT], [["0+3=3", "3*2=6"], ["0*2=0"]])
    want = torch.zeros_like(out)
    want[0, 5], want[0, 11] = (float(x) for x in direct[0].effective_reward(0.5))  # the two "\n" tokens
    want[1, 4] = float(direct[1].effective_reward(0.5)[0])  # the last token of an unterminated step
    assert torch.allclose(out, want, atol=1e-6)
    assert (out[mask == 0] == 0).all()


def test_grpo_with_pavs_reward_beside_an_outcome_reward_and_a_gold_answer_column(tiny_qwen, tmp_path):
    """TRL passes the dataset's `answer` column to both reward functions: the outcome reward grades it, and
    PAVReward puts that checked outcome on the final step (built-in task problems, a tiny random policy). The
    verifier shares the policy's vocabulary, so PAVReward reads TRL's completion_ids as sampled."""
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from transformers import AutoTokenizer

    from pav.tasks.modreach import ModReach
    from pav.verifier.model import ValueVerifier

    task = ModReach()
    problems = task.problems(8, seed=0)
    verifier = ValueVerifier.from_policy(str(tiny_qwen), seed=0)
    policy_tok = AutoTokenizer.from_pretrained(str(tiny_qwen))
    reward = PAVReward(verifier, alpha=0.5, reduction="last", policy_tokenizer=policy_tok)
    scorer, read, calls = reward.scorer, [], []
    score_ids = scorer.score_ids
    scorer.score_ids = lambda *a: read.append(1) or score_ids(*a)

    def outcome(prompts, completions, answer, **kw):
        return [task.outcome(task.parse_question(p), split_steps(c, "\n")) if a else None
                for p, c, a in zip(prompts, completions, answer)]

    def pav(prompts, completions, answer, **kw):
        out = reward(prompts, completions, answer=answer, **kw)
        calls.append((list(prompts), list(completions), list(answer), out, outcome(prompts, completions, answer),
                      kw["completion_ids"]))
        return out

    pav.__name__ = reward.__name__
    # half the rows carry a gold answer (graded onto the final step), half none (the verifier's values alone)
    data = datasets.Dataset.from_list([{"prompt": task.prompt(p), "answer": p.answer if i % 2 else None}
                                       for i, p in enumerate(problems)])
    args = trl.GRPOConfig(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=8, num_generations=4,
                          max_completion_length=12, max_steps=2, learning_rate=1e-3, logging_steps=1, report_to=[],
                          use_cpu=True, bf16=False, save_strategy="no", seed=0, temperature=1.0)
    trainer = trl.GRPOTrainer(model=str(tiny_qwen), reward_funcs=[outcome, pav], args=args, train_dataset=data,
                              processing_class=policy_tok)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
    assert len(calls) >= 2 and len(read) == len(calls)  # every call read the sampled ids
    for prompts, completions, answers, got, outcomes, ids in calls:
        steps = [split_steps(c, "\n") for c in completions]
        read_steps, direct = score_ids(prompts, ids)
        assert read_steps == steps
        for g, d, st, o in zip(got, direct, steps, outcomes):
            if not st:
                assert g == 0.0  # nothing to score: the empty value
                continue
            last = d.effective_reward(0.5)[-1] if o is None else o + 0.5 * (o - (d.q_prover[-1] - d.adv_prover[-1]))
            assert g == pytest.approx(float(last))
    assert {o is None for c in calls for o in c[4]} == {True, False}  # both kinds of row were scored
    logged = trainer.state.log_history
    assert sum("rewards/outcome/mean" in h for h in logged) == 2 and sum(f"rewards/{pav.__name__}/mean" in h
                                                                            for h in logged) == 2


def test_trl_completion_ids_are_read_as_sampled_only_under_the_verifiers_vocabulary(scorer, monkeypatch):
    """With the policy's tokenizer given and the verifier's vocabulary, PAVReward scores TRL's
    completion_ids (same rewards as the text when they encode it); another vocabulary, or ids that do
    not decode to the completion, fall back to the text."""
    from pav.policies.tokenizer import BUILTIN_ALPHABET
    from pav.verifier.scorer import VerifierScorer

    completions = ["0+3=3\n3*2=6\n", "0*2=0\n\n0+3=3", ""]
    prompts = [PROMPT] * 3
    text = PAVReward(scorer, reduction="mean")(prompts=prompts, completions=completions)
    read = []
    monkeypatch.setattr(scorer, "score_ids", lambda *a: read.append(a) or VerifierScorer.score_ids(scorer, *a))
    for policy_tok, uses_ids in ((build_char_tokenizer(), True), (build_char_tokenizer(BUILTIN_ALPHABET[::-1]), False)):
        ids = [policy_tok(c, add_special_tokens=False)["input_ids"] + [policy_tok.eos_token_id] for c in completions]
        reward = PAVReward(scorer, reduction="mean", policy_tokenizer=policy_tok)
        assert reward.reads_ids is uses_ids
        assert reward(prompts=prompts, completions=completions, completion_ids=ids) == text
        assert len(read) == 1  # read only under the shared vocabulary
    shared = PAVReward(scorer, reduction="mean", policy_tokenizer=build_char_tokenizer())
    ids = [shared.tokenizer(c)["input_ids"] for c in completions[::-1]]  # another completion's ids
    assert shared(prompts=prompts, completions=completions, completion_ids=ids) == text and len(read) == 1
