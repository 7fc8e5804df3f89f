"""Sampled solutions as training tensors: token ids, which step each token belongs to, log-probs.

A rollout is ``prompt + completion`` where the completion is the sampled text (steps with their
delimiters). It is re-tokenised as the sampler encodes text (special tokens added, right padding
here); each completion token is assigned to the step whose characters it covers through the fast
tokenizer's offsets, so the built-in character tokenizer and BPE models are handled alike. (With
BPE, re-tokenising sampled text can merge tokens differently from how they were sampled; the
log-probs are then those of the re-tokenised text, a standard simplification of text-level RL.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pav.core.steps import complete_steps, split_steps


@dataclass
class RolloutBatch:
    input_ids: torch.Tensor  # (B, T) right-padded
    attention_mask: torch.Tensor  # (B, T)
    step_index: torch.Tensor  # (B, T) step h − 1 of each completion token, −1 for prompt and padding
    n_steps: list[int]  # H of each rollout

    def to(self, device: torch.device | str) -> RolloutBatch:
        return RolloutBatch(self.input_ids.to(device), self.attention_mask.to(device), self.step_index.to(device),
                            self.n_steps)

    @property
    def completion(self) -> torch.Tensor:
        """(B, T) float mask of the sampled tokens (those the loss trains)."""
        return (self.step_index >= 0).float()


def step_char_index(completion: str, delimiter: str) -> list[int]:
    """Step index (0-based) of every character of ``completion``; a delimiter belongs to its step, and
    a blank line to the step after it (`pav.core.steps`)."""
    steps, rest = complete_steps(completion, delimiter)
    out = [h for h, step in enumerate(steps) for _ in range(len(step) + len(delimiter))]
    last = len(steps) if rest.strip() else len(steps) - 1  # a blank end: the last step's (-1: no step)
    return out + [last] * len(rest)


def encode_rollouts(tokenizer, prompts: Sequence[str], completions: Sequence[str], delimiter: str,
                    max_length: int) -> RolloutBatch:
    """Tokenise rollouts and map every completion token to its step (module docstring)."""
    texts = [p + c for p, c in zip(prompts, completions, strict=True)]
    enc = tokenizer(texts, return_offsets_mapping=True, add_special_tokens=True, truncation=True,
                    max_length=max_length, padding="longest", padding_side="right", return_tensors="pt")
    step_index = torch.full(enc["input_ids"].shape, -1, dtype=torch.long)
    n_steps = []
    for b, (p, c) in enumerate(zip(prompts, completions)):
        chars = step_char_index(c, delimiter)
        n_steps.append(len(split_steps(c, delimiter)))
        for t, (lo, hi) in enumerate(enc["offset_mapping"][b].tolist()):
            if hi > lo and lo >= len(p) and enc["attention_mask"][b, t]:
                step_index[b, t] = chars[lo - len(p)]
    return RolloutBatch(enc["input_ids"], enc["attention_mask"], step_index, n_steps)


def token_logprobs(model: torch.nn.Module, batch: RolloutBatch, entropy: bool = True,
                   entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(B, T) log π(token_t | tokens_<t) (0 at t = 0) and, if asked, (B, T) entropy of the
    distribution each token came from (None otherwise). The entropy is differentiable only with
    ``entropy_grad`` (an entropy bonus): its graph holds a (B, T, vocabulary) tensor until backward."""
    mask = batch.attention_mask
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, T) as the sampler numbers them
    logits = model(input_ids=batch.input_ids, attention_mask=mask, position_ids=positions).logits.float()
    logp_all = torch.log_softmax(logits[:, :-1], dim=-1)  # (B, T-1, V): predicts tokens 1..T-1
    logp = logp_all.gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)  # (B, T-1)
    pad = logp.new_zeros(logp.shape[0], 1)
    if not entropy:
        return torch.cat([pad, logp], 1), None
    ent = -(logp_all.exp() * logp_all).sum(-1)  # (B, T-1)
    return torch.cat([pad, logp], 1), torch.cat([pad, ent if entropy_grad else ent.detach()], 1)
