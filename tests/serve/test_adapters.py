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


def test_a_few_grpo_steps_with_pavs_reward(tiny_qwen, tmp_path):
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from transformers import AutoTokenizer

    from pav.verifier.model import ValueVerifier

    verifier = ValueVerifier.from_policy(str(tiny_qwen), seed=0)
    reward = PAVReward(verifier, alpha=0.5, reduction="mean")
    seen = []

    def logged(prompts, completions, **kw):
        out = reward(prompts, completions, **kw)
        seen.append(out)
        return out

    logged.__name__ = reward.__name__
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_qwen))
    data = datasets.Dataset.from_list([{"prompt": f"Tom has {i} apples. How many?\n"} for i in range(8)])
    args = trl.GRPOConfig(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=4,
                          max_completion_length=12, max_steps=2, learning_rate=1e-3, logging_steps=1, report_to=[],
                          use_cpu=True, bf16=False, save_strategy="no", seed=0, temperature=1.0)
    trainer = trl.GRPOTrainer(model=str(tiny_qwen), reward_funcs=[logged], args=args, train_dataset=data,
                              processing_class=tokenizer)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    assert len(seen) >= 2 and all(len(r) == 4 and all(np.isfinite(r)) for r in seen)
    history = [h for h in trainer.state.log_history if f"rewards/{reward.__name__}/mean" in h]
    assert len(history) == 2
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters())
