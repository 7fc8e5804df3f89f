"""verl-shaped token-level process rewards from pav: a runnable example on tiny local models.

    python examples/verl_token_rewards.py [--verifier runs/pqv]

``--verifier`` is a `pav train-verifier` run on a model with a general tokenizer (your model's): the
texts here are English, and the built-in demo's verifier reads only the built-in task's alphabet
(it refuses other text with one line naming the characters).

verl keeps sampled responses as right-padded token ids (B, L) with a mask; a custom reward manager
returns a (B, L) reward tensor. `pav.serve.adapters.token_level_rewards` fills it with each step's
effective reward Q̂^π + α·Â^μ on the token that completes that step. Inside a verl reward manager:

    rewards = token_level_rewards(scorer, tokenizer, prompts, data.batch["responses"],
                                  data.batch["attention_mask"][:, -L:], alpha=0.5)

verl 0.9 users need not write that manager: `pav.serve.verl_manager` registers one named ``pav``
(docs/integrations.md has the config lines).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verifier", default="",
                        help="a `pav train-verifier` run on a general-tokenizer model (default: a tiny untrained one)")
    parser.add_argument("--alpha", type=float, default=0.5)
    args = parser.parse_args()

    import torch

    from pav.policies.tiny import tiny_qwen2
    from pav.serve.adapters import load_scorer, token_level_rewards
    from pav.verifier.model import ValueVerifier

    prompt = "Tom has 3 apples and buys 4 more. How many apples does he have?\n"
    responses = ["3 + 4 = 7\nThe answer is 7.", "Tom has apples.\n3 + 4 = 8\nThe answer is 8."]
    if args.verifier:
        scorer = load_scorer(args.verifier)
    else:
        model_dir = tiny_qwen2(Path(tempfile.mkdtemp(prefix="pav-verl-")) / "model", [prompt + r for r in responses])
        scorer = load_scorer(ValueVerifier.from_policy(str(model_dir), seed=0))
    tokenizer = scorer.pqv.tokenizer
    encoded = [tokenizer(r, add_special_tokens=False)["input_ids"] for r in responses]
    width = max(map(len, encoded)) + 2
    ids = torch.full((len(responses), width), tokenizer.pad_token_id)  # (B, L) right-padded, as verl keeps them
    mask = torch.zeros_like(ids)
    for b, e in enumerate(encoded):
        ids[b, : len(e)], mask[b, : len(e)] = torch.tensor(e), 1
    rewards = token_level_rewards(scorer, tokenizer, [prompt] * len(responses), ids, mask, alpha=args.alpha)
    print(f"reward tensor {tuple(rewards.shape)} (B, L); non-zero entries, one per step:")
    for b in range(len(responses)):
        for t in rewards[b].nonzero().flatten().tolist():
            print(f"  response {b}, token {t:2d} {tokenizer.decode([int(ids[b, t])])!r:>10}: {rewards[b, t]:+.4f}")


if __name__ == "__main__":
    main()
