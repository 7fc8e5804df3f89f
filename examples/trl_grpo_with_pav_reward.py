"""TRL GRPO with pav's process reward: a runnable example on tiny local models (CPU, no download).

    pip install -e ".[dev]"        # trl and datasets
    python examples/trl_grpo_with_pav_reward.py [--verifier runs/pqv] [--policy DIR] [--steps 2]

``--verifier`` is a `pav train-verifier` run on a model with a general tokenizer (your model's): the
texts here are English, and the built-in demo's verifier reads only the built-in task's alphabet
(it refuses other text with one line naming the characters).

With no arguments it builds a tiny random Qwen2 policy and a verifier on its backbone, so it runs
anywhere in seconds; with a trained verifier (`pav train-verifier`) and your policy it is the real
recipe. TRL takes one reward per completion: `PAVReward` reduces each completion's step rewards
Q̂^π + α·Â^μ with `--reduction` (min: the weakest step).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", default="", help="a policy directory (default: a tiny random Qwen2)")
    parser.add_argument("--verifier", default="",
                        help="a `pav train-verifier` run on a general-tokenizer model (default: an untrained head)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--reduction", default="min", choices=["min", "last", "mean", "sum", "outcome"])
    args = parser.parse_args()

    import datasets
    import trl
    from transformers import AutoTokenizer

    from pav.policies.tiny import tiny_qwen2
    from pav.serve.adapters import PAVReward
    from pav.verifier.model import ValueVerifier

    work = Path(tempfile.mkdtemp(prefix="pav-grpo-"))
    prompts = [f"Tom has {i} apples and buys {i + 2} more. How many apples does he have?\n" for i in range(8)]
    policy = args.policy or str(tiny_qwen2(work / "policy", [p + f"{2 * i + 2}\nThe answer is {2 * i + 2}."
                                                              for i, p in enumerate(prompts)]))
    verifier = args.verifier or ValueVerifier.from_policy(policy, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    # the policy's tokenizer: a verifier with its vocabulary reads TRL's completion_ids as sampled
    reward = PAVReward(verifier, alpha=args.alpha, reduction=args.reduction, policy_tokenizer=tokenizer)
    config = trl.GRPOConfig(output_dir=str(work / "grpo"), per_device_train_batch_size=4, num_generations=4,
                            max_completion_length=16, max_steps=args.steps, learning_rate=1e-4, logging_steps=1,
                            report_to=[], use_cpu=True, bf16=False, save_strategy="no", seed=0)
    trainer = trl.GRPOTrainer(model=policy, reward_funcs=[reward], args=config,
                              train_dataset=datasets.Dataset.from_list([{"prompt": p} for p in prompts]),
                              processing_class=tokenizer)
    trainer.train()
    for row in trainer.state.log_history:
        key = f"rewards/{reward.__name__}/mean"
        if key in row:
            print(f"step {row['step']}: mean pav reward ({args.reduction} over steps) {row[key]:.4f}")


if __name__ == "__main__":
    main()
