"""The SFT loss, its token weights, the schedule, and that training fits a tiny stream."""

import itertools
import math

import pytest
import torch

from pav.policies.hf import tiny_gpt2
from pav.policies.tokenizer import build_char_tokenizer
from pav.sft.stage import emphasis_weights
from pav.core.schedule import warmup_cosine as lr_at
from pav.sft.train import Example, SFTSchedule, encode_batch, train_lm, weighted_lm_loss

TOK = build_char_tokenizer()


def test_weights_cover_completion_tokens_only_and_follow_characters():
    batch = encode_batch(TOK, [Example("ab\n", "1=2\n", (1.0, 1.0, 3.0, 1.0)), Example("abcd\n", "75\n")], 64)
    ids, mask, w = batch["input_ids"], batch["attention_mask"], batch["weights"]
    assert ids.shape == (2, 8) and mask[0].tolist() == [1] * 7 + [0]  # right padding
    assert w[0].tolist() == [0, 0, 0, 1, 1, 3, 1, 0]
    assert w[1].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert TOK.decode(ids[0, 5:6]) == "2"


def test_weighted_loss_matches_a_hand_computation():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = math.log(3.0)  # p(id 2 | position 0) = 3 / 6
    ids = torch.tensor([[1, 2, 3]])
    w = torch.tensor([[0.0, 2.0, 1.0]])
    expected = (2 * -math.log(0.5) + 1 * -math.log(0.25)) / 2  # divided by 2 completion tokens
    assert weighted_lm_loss(logits, ids, w).item() == pytest.approx(expected)


def test_emphasis_weights_mark_the_character_after_the_marker():
    assert emphasis_weights("3+4=7\nans 7\n", "=", 3.0) == (1, 1, 1, 1, 3, 1, 1, 1, 1, 1, 1, 1)
    assert emphasis_weights("a=\n", "", 3.0) == (1.0, 1.0, 1.0)


def test_schedule_warms_up_then_decays_to_the_floor():
    s = SFTSchedule(steps=100, lr=1.0, warmup=10, min_lr_ratio=0.1, weight_decay=0.01, betas=(0.9, 0.98), grad_clip=1.0)
    assert lr_at(0, s) == pytest.approx(0.1) and lr_at(9, s) == pytest.approx(1.0)
    assert lr_at(10, s) == pytest.approx(1.0) and lr_at(100, s) == pytest.approx(0.1)
    assert all(lr_at(i, s) >= lr_at(i + 1, s) for i in range(10, 99))


def test_training_fits_a_fixed_batch_and_changes_every_parameter():
    torch.set_num_threads(1)
    model = tiny_gpt2(len(TOK), seed=0, eos_token_id=TOK.eos_token_id)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    batch = [Example("3 to 7\n", "3+4=7\nans 7\n"), Example("1 to 2\n", "1*2=2\nans 2\n")]
    losses = train_lm(model, TOK, itertools.repeat(batch), SFTSchedule(steps=60, lr=3e-3, warmup=5, min_lr_ratio=0.1, weight_decay=0.01, betas=(0.9, 0.98),
                                                                        grad_clip=1.0), 128)
    assert losses[-1] < 0.3 * losses[0]
    for n, p in model.named_parameters():
        assert not torch.equal(before[n], p), n
