"""The planted sub-sequence task (the paper, §3.3) as a deterministic finite automaton.

Responses are `length` tokens over a vocabulary of `vocab_size` tokens, token `eos` ends the
response and masks everything after it, and the reward is 1 iff the planted `target` appears as a
contiguous run before the first EOS. Each token is one step a_h, so H = `length`.

The reward depends on a prefix only through a small automaton state (Knuth–Morris–Pratt):
- `k` in 0..m-1: the longest suffix of the prefix that is a prefix of the target (m = len(target)),
- `MATCHED = m`: the target has appeared (absorbing; reward 1 whatever follows),
- `DEAD = m + 1`: EOS came first (absorbing; reward 0).
Both the prover's exact values and the reward are functions of (position, automaton state).

Choice where the paper is silent: completing the target does not end the episode by default
(`stop_at_match=False`), so later tokens are still actions; they cannot change the reward.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class PlantedTask:
    """The environment; `states`, `rewards` and `action_mask` are vectorised over any batch shape."""

    target: tuple[int, ...]  # the defaults live in `pav.didactic.experiments.TaskConfig`
    vocab_size: int
    length: int
    eos: int
    stop_at_match: bool
    transitions: NDArray[np.int64] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        m = len(self.target)
        if m < 1 or self.length < m:
            raise ValueError(f"need 1 <= len(target) <= length, got {m} and {self.length}")
        if not 0 <= self.eos < self.vocab_size:
            raise ValueError(f"eos {self.eos} outside the vocabulary of size {self.vocab_size}")
        if any(not 0 <= t < self.vocab_size or t == self.eos for t in self.target):
            raise ValueError(f"target {self.target} must use non-EOS tokens of the vocabulary")
        object.__setattr__(self, "transitions", _kmp_transitions(self))

    @property
    def matched(self) -> int:
        return len(self.target)

    @property
    def dead(self) -> int:
        return len(self.target) + 1

    @property
    def n_states(self) -> int:
        return len(self.target) + 2

    def states(self, tokens: NDArray[np.integer]) -> NDArray[np.int64]:
        """Automaton state before every token and after the last: (..., T) -> (..., T + 1)."""
        tokens = np.asarray(tokens)
        out = np.zeros(tokens.shape[:-1] + (tokens.shape[-1] + 1,), dtype=np.int64)
        for t in range(tokens.shape[-1]):
            out[..., t + 1] = self.transitions[out[..., t], tokens[..., t]]
        return out

    def rewards(self, tokens: NDArray[np.integer]) -> NDArray[np.float64]:
        """Outcome reward: 1.0 iff the target appears before the first EOS; (..., T) -> (...)."""
        return (self.states(tokens)[..., -1] == self.matched).astype(np.float64)

    def action_mask(self, states: NDArray[np.int64]) -> NDArray[np.bool_]:
        """Which tokens are real actions, from `states` (..., T + 1): (..., T).

        Tokens after EOS are masked (the EOS itself is an action); with `stop_at_match`, so are
        tokens after the target is complete.
        """
        before = states[..., :-1]
        live = before != self.dead
        if self.stop_at_match:
            live &= before != self.matched
        return live


def _kmp_transitions(task: PlantedTask) -> NDArray[np.int64]:
    """(n_states, vocab_size) next-state table of the match automaton."""
    target, m = task.target, len(task.target)
    table = np.zeros((m + 2, task.vocab_size), dtype=np.int64)
    for k in range(m):
        for v in range(task.vocab_size):
            table[k, v] = task.dead if v == task.eos else _longest_match(target, target[:k] + (v,))
    table[m, :] = m  # matched is absorbing: the reward is already 1
    table[m + 1, :] = m + 1  # dead is absorbing: EOS masked the rest
    return table


def _longest_match(target: tuple[int, ...], seq: tuple[int, ...]) -> int:
    """Length of the longest suffix of `seq` that is a prefix of `target` (m if it completes)."""
    for k in range(min(len(target), len(seq)), 0, -1):
        if seq[-k:] == target[:k]:
            return k
    return 0
