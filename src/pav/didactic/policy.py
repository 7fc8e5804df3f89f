"""The didactic base policy π: a MADE-like autoregressive MLP (the paper, §3.3 and App. B), as an ensemble.

One member = one independent policy: input the one-hot response (T positions × V tokens), three
masked hidden layers of 128 ReLU units, output logits for every position. MADE masks (Germain et
al. 2015) make position t's logits depend only on tokens < t, so one forward pass gives every
conditional π(a_t | s_t) of a response (teacher forcing) and sampling needs T passes.

Many runs (seeds, rewards, prover strengths) are trained at once by stacking E members'
parameters into (E, in, out) tensors and using batched matmuls. Members never mix: each member's
loss depends only on its own parameters, and Adam/SGD are elementwise, so summing member losses
trains E independent runs. Each member also has its own initialisation and sampling generator,
so a member's run is the same whichever ensemble it is part of.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import torch


class MadeEnsemble(torch.nn.Module):
    """E independent MADE policies over responses of `length` tokens from `vocab_size` tokens."""

    def __init__(
        self, seeds: Sequence[int], length: int = 10, vocab_size: int = 15, hidden: int = 128,
        n_hidden_layers: int = 3,
    ) -> None:
        super().__init__()
        self.length, self.vocab_size = length, vocab_size
        self.seeds = [int(s) for s in seeds]
        sizes = [length * vocab_size] + [hidden] * n_hidden_layers + [length * vocab_size]
        masks = _made_masks(length, vocab_size, hidden, n_hidden_layers)
        self.weights = torch.nn.ParameterList()
        self.biases = torch.nn.ParameterList()
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            self.register_buffer(f"mask{i}", masks[i])
            w, b = zip(*(_linear_init(fan_in, fan_out, s, i) for s in self.seeds))
            self.weights.append(torch.nn.Parameter(torch.stack(w)))  # (E, in, out)
            self.biases.append(torch.nn.Parameter(torch.stack(b)))  # (E, out)

    @property
    def n_members(self) -> int:
        return len(self.seeds)

    def _masked(self, i: int) -> torch.Tensor:
        return self.weights[i] * getattr(self, f"mask{i}")

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher-forced logits: tokens (E, B, T) -> (E, B, T, V)."""
        e, b, t = tokens.shape
        x = torch.nn.functional.one_hot(tokens, self.vocab_size).reshape(e, b, t * self.vocab_size)
        h = x.to(self.weights[0].dtype)
        for i in range(len(self.weights)):
            h = torch.baddbmm(self.biases[i].unsqueeze(1), h, self._masked(i))
            if i < len(self.weights) - 1:
                h = torch.relu(h)
        return h.reshape(e, b, t, self.vocab_size)

    def log_probs(self, tokens: torch.Tensor) -> torch.Tensor:
        """log π(a_t | s_t) of every token: (E, B, T) -> (E, B, T)."""
        logp = torch.log_softmax(self.logits(tokens), dim=-1)
        return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

    @torch.no_grad()
    def sample(
        self, n: int, generators: Sequence[torch.Generator], temperature: float = 1.0,
        prefix: torch.Tensor | None = None, prefix_len: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Sample n responses per member: (E, n, T), by Gumbel-max with per-member noise.

        With `prefix` (E, n, T) and `prefix_len` (E, n), each row keeps its first prefix_len
        tokens and samples the rest (Monte-Carlo rollouts of π from given prefixes). The first
        layer is updated incrementally (a one-hot input adds one weight row per position), so
        each position costs two hidden layers and one V-wide output slice.
        """
        if len(generators) != self.n_members:
            raise ValueError(f"need {self.n_members} generators, got {len(generators)}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        e, v, big_t = self.n_members, self.vocab_size, self.length
        noise = torch.stack([torch.rand(n, big_t, v, generator=g) for g in generators])
        gumbel = -torch.log(-torch.log(noise.clamp_min(1e-20)))  # (E, n, T, V)
        w = [self._masked(i) for i in range(len(self.weights))]
        h1 = self.biases[0].unsqueeze(1).expand(e, n, -1).clone()  # (E, n, hidden) pre-activation
        out = torch.empty(e, n, big_t, dtype=torch.long)
        rows = torch.arange(e).unsqueeze(1)
        for t in range(big_t):
            h = torch.relu(h1)
            for i in range(1, len(w) - 1):
                h = torch.relu(torch.baddbmm(self.biases[i].unsqueeze(1), h, w[i]))
            cols = slice(t * v, (t + 1) * v)
            logit = torch.baddbmm(self.biases[-1][:, None, cols], h, w[-1][:, :, cols])
            tok = (logit / temperature + gumbel[:, :, t]).argmax(-1)  # (E, n)
            if prefix is not None:
                tok = torch.where(t < prefix_len, prefix[:, :, t], tok)
            out[:, :, t] = tok
            h1 += w[0][rows, t * v + tok]  # add the weight row of the chosen input token
        return out

    def subset(self, members: Sequence[int]) -> MadeEnsemble:
        """A new ensemble holding copies of the chosen members (same seeds, same parameters)."""
        sizes = self._sizes()
        sub = MadeEnsemble([self.seeds[i] for i in members], self.length, self.vocab_size, sizes[0], sizes[1])
        idx = torch.as_tensor(list(members))
        sub.load_state_dict({k: (v[idx] if not k.startswith("mask") else v) for k, v in self.state_dict().items()})
        return sub

    def fingerprint(self, member: int) -> str:
        """SHA-256 of one member's seed and parameters: equal fingerprints sample identically."""
        h = hashlib.sha256(str(self.seeds[member]).encode())
        for p in self.parameters():
            h.update(p[member].detach().contiguous().numpy().tobytes())
        return h.hexdigest()

    def _sizes(self) -> tuple[int, int]:
        return self.weights[0].shape[-1], len(self.weights) - 1

    def member_state(self) -> dict[str, torch.Tensor]:
        """A detached copy of all parameters (for checkpoints inside an experiment)."""
        return {k: p.detach().clone() for k, p in self.state_dict().items()}


def _made_masks(length: int, vocab: int, hidden: int, n_hidden: int) -> list[torch.Tensor]:
    """MADE connectivity: input/output degree = position (1..T), hidden degrees cycle 1..T-1."""
    d_in = torch.arange(1, length + 1).repeat_interleave(vocab)  # (T*V,)
    d_hidden = torch.arange(hidden) % max(length - 1, 1) + 1  # (hidden,)
    masks = [(d_hidden[None, :] >= d_in[:, None]).float()]
    masks += [(d_hidden[None, :] >= d_hidden[:, None]).float() for _ in range(n_hidden - 1)]
    masks.append((d_in[None, :] > d_hidden[:, None]).float())  # output t sees inputs < t
    return masks


def _linear_init(fan_in: int, fan_out: int, seed: int, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.nn.Linear's default initialisation, from a generator keyed by (seed, layer)."""
    g = torch.Generator().manual_seed(seed * 1000 + layer)
    bound = 1.0 / math.sqrt(fan_in)
    w = (torch.rand(fan_in, fan_out, generator=g) * 2 - 1) * bound
    b = (torch.rand(fan_out, generator=g) * 2 - 1) * bound
    return w, b
