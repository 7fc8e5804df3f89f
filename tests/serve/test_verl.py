"""pav's reward manager inside verl 0.9 (needs `pip install -e ".[verl]"`): loaded by name through verl's
own config loader, run on one-sample DataProtos of real tokenized prompts and responses as verl's reward
loop does, and assembled into rm_scores with every step's reward on the token that completes it."""

import asyncio
import pickle

import numpy as np
import pytest
import torch

pytest.importorskip("verl.experimental.reward_loop.reward_manager", reason="verl is not installed (pip install -e '.[verl]')")

from omegaconf import OmegaConf  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402
from verl import DataProto  # noqa: E402
from verl.trainer.ppo.reward import load_reward_manager, resolve_reward_manager_cls  # noqa: E402

from pav.policies.tiny import tiny_qwen2  # noqa: E402
from pav.serve.verl_manager import DenseReward, PAVRewardManager, compute_score  # noqa: E402

PROMPT = "2 to 4 mod 10 ops +3 *2 max 1\n"
RESPONSES = ["2*2=4\nans 4", "2+3=5\nans 5\n", "2*2=4\n4*2=8"]  # right, wrong, unfinished
GOLDS = ["4", "4", None]


@pytest.fixture(scope="module")
def policy_tokenizer(tmp_path_factory):
    """A byte-level BPE tokenizer (Qwen2-style) whose tokens span several characters."""
    corpus = [PROMPT + r for r in RESPONSES] * 4 + ["0 to 8 mod 10 ops +3 *2 max 5\n0+3=3\n3*2=6\nans 6"]
    return AutoTokenizer.from_pretrained(str(tiny_qwen2(tmp_path_factory.mktemp("policy") / "m", corpus, vocab_size=300)))


def batch(tok, golds=GOLDS):
    """verl's layout: left-padded prompts (B, P), right-padded responses ending with EOS (B, L), one mask."""
    p = tok(PROMPT, add_special_tokens=False)["input_ids"]
    rs = [tok(r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for r in RESPONSES]
    P, L = len(p) + 2, max(map(len, rs)) + 3
    prompts = torch.full((len(rs), P), tok.pad_token_id)
    responses = torch.full((len(rs), L), tok.pad_token_id)
    mask = torch.zeros((len(rs), P + L), dtype=torch.long)
    for b, r in enumerate(rs):
        prompts[b, P - len(p):], mask[b, P - len(p): P] = torch.tensor(p), 1
        responses[b, : len(r)], mask[b, P: P + len(r)] = torch.tensor(r), 1
    return DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": mask,
                 "input_ids": torch.cat([prompts, responses], 1)},
        non_tensors={"reward_model": np.array([{"ground_truth": g} for g in golds], dtype=object),
                     "data_source": np.array(["modreach"] * len(rs), dtype=object)})


def config(verifier_dir, **pav):
    return OmegaConf.create({"reward": {
        "reward_manager": {"source": "register", "name": "pav", "module": {"path": None, "name": None}},
        "custom_reward_function": {"path": None, "name": None}, "pav": {"verifier": str(verifier_dir), **pav}}})


def test_verls_loader_builds_pavs_manager_and_rewards_land_on_step_tokens(verifier_dir, scorer, policy_tokenizer):
    tok = policy_tokenizer
    manager = load_reward_manager(config(verifier_dir, alpha=0.5), tok)  # verl's own registry lookup by name
    assert isinstance(manager, PAVRewardManager)
    data = batch(tok)

    async def reward_loop():  # as verl's RewardLoopWorker.compute_score_batch: one sample per call
        return await asyncio.gather(*(manager.run_single(data[i: i + 1]) for i in range(len(data))))

    outputs = asyncio.run(reward_loop())
    scores = [pickle.loads(pickle.dumps(o["reward_score"])) for o in outputs]  # through Ray to the driver
    rm = type(manager).assemble_rm_scores(data, scores)
    assert rm.shape == data.batch["responses"].shape and rm.dtype == torch.float32

    for b, (response, gold, out) in enumerate(zip(RESPONSES, GOLDS, outputs)):
        steps = [s for s in response.split("\n") if s]
        d = scorer.score([PROMPT], [steps])[0]
        want = d.effective_reward(0.5).copy()
        if gold is not None:
            outcome = 1.0 if b == 0 else 0.0
            want[-1] = outcome + 0.5 * (outcome - (d.q_prover[-1] - d.adv_prover[-1]))
            assert out["reward_extra_info"]["pav/outcome"] == outcome
        ids = data.batch["responses"][b].tolist()
        placed = rm[b].nonzero().flatten().tolist()
        assert len(placed) == len(steps)
        for h, t in enumerate(placed):  # token t completes step h: the text through it has the step, before it not
            through, before = tok.decode(ids[: t + 1]), tok.decode(ids[:t])
            ends = "\n".join(steps[: h + 1]) + ("\n" if h < len(steps) - 1 or response.endswith("\n") else "")
            assert through.startswith(ends) and not before.startswith(ends), (b, h, through)
            assert rm[b, t].item() == pytest.approx(want[h], abs=1e-6)
        assert float(scores[b]) == pytest.approx(float(np.sum(want)), abs=1e-6)  # what GRPO sums per response


def test_a_plain_float_score_goes_on_the_last_token_and_compute_score_gives_the_sum(verifier_dir, scorer,
                                                                                    policy_tokenizer):
    data = batch(policy_tokenizer)
    rm = PAVRewardManager.assemble_rm_scores(data, [1.0, 2.0, 3.0])
    valid = data.batch["attention_mask"][:, data.batch["prompts"].shape[1]:].sum(1)
    assert [rm[b].nonzero().flatten().tolist() for b in range(3)] == [[int(v) - 1] for v in valid]
    out = compute_score("modreach", RESPONSES[1], "4", {"prompt": PROMPT}, verifier=str(verifier_dir), alpha=0.5)
    d = scorer.score([PROMPT], [["2+3=5", "ans 5"]])[0]
    want = d.effective_reward(0.5).copy()
    want[-1] = 0.0 + 0.5 * (0.0 - (d.q_prover[-1] - d.adv_prover[-1]))
    assert out["score"] == pytest.approx(float(np.sum(want))) and out["pav/outcome"] == 0.0
    # the route that needs no import beforehand in verl's Ray workers: verl imports the module by name
    cfg = config(verifier_dir)
    cfg.reward.reward_manager = {"source": "importlib", "name": "PAVRewardManager",
                                 "module": {"path": "pkg://pav.serve.verl_manager", "name": None}}
    assert resolve_reward_manager_cls(cfg) is PAVRewardManager
    with pytest.raises(ValueError, match="extra_info"):
        compute_score("modreach", RESPONSES[0], "4", {}, verifier=str(verifier_dir))
    assert isinstance(pickle.loads(pickle.dumps(DenseReward([1, 2], [0.5, 0.25]))), DenseReward)
