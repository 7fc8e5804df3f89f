"""`ValueVerifier`: an LM backbone plus a scalar value head read at the end of every step.

The verifier predicts the value of a solution prefix, e.g. ``Q^π(s_h, a_h)`` (the paper, §4.2 and App. D); its
output is the logit of a value in [0, 1]. One forward pass over ``prompt + step_1 + delim + ... +
step_H + delim`` gives all H + 1 prefix values of a solution.

Which token is read. The value of the prefix with ``h`` steps (``h = 0``: the question alone) is
read from the hidden state of the token that ends that prefix's last delimiter: the last character
of the prompt for ``h = 0`` (the prompt ends with the delimiter, ``Task.prompt``), the delimiter
after step ``h`` otherwise. There the model has seen the whole step and its delimiter and nothing
after it; attention is causal, so the hidden state, and hence the value, is exactly what scoring
that prefix alone would give (tested). Positions come from the tokenizer's character offsets
(``step_end_positions``): the token read is the last one whose span starts before the prefix's
end, i.e. the token that ends at or covers the delimiter's last character, so a delimiter that
tokenises to several tokens is read at its last token, never one token early or late.

Choices where the paper is silent or departs (the paper (App. D) reads a fixed scoring token appended
to the prefix; which token and how its logits become a probability are [NOT FOUND]):
- No scoring token is appended: the delimiter that ends each step plays its role, which is what
  lets one pass score every prefix. The head is ``Linear(hidden, 1)`` in float32 on the backbone's
  last hidden state; the value is ``sigmoid(logit)``. The backbone's LM head is dropped.
- A token that merges the delimiter's end with characters of the next step (possible with BPE)
  is still the one read; the model has then seen the start of the next step, so such a prefix
  is *not* scored exactly as alone. ``encode_solution`` counts these; callers log a warning. Choose a
  delimiter that is a token boundary (all built-in tokenizers) to avoid it.
- Sequences longer than ``max_length`` tokens are cut on the right. Prefixes whose end falls past
  the cut are dropped (fewer positions are returned), never shifted onto another token.
- Padding (left or right) is handled with ``position_ids = cumsum(mask) - 1``, as the sampler does.
- Files: ``model.safetensors`` (backbone and head), ``config.json`` (the backbone's), a small
  ``verifier.json`` and the tokenizer files. Loading is offline and never unpickles anything.

Policy log-prob features (``features="logprob"``, a departure from the paper). A frozen copy of the
causal LM the verifier starts from (its ``reference``, normally the base policy π) gives each token's
log-probability; for the prefix with ``h`` steps three numbers are computed from the tokens of step
``h`` (the span after the previous prefix's end up to this one's): their summed log-prob, their
smallest log-prob, and the smallest log-prob of any step so far (all 0 for ``h = 0``). A small MLP
of these is added to the head's logit. Why: on the built-in task the value head alone learns to
recognise an invalid step poorly (outcome-irrelevant detail in a 64-wide backbone), while π's own
probability of the step separates invalid from valid steps almost perfectly (AUROC 0.98), and one
invalid step makes every later prefix worthless — hence the running minimum. The reference is
saved with the verifier (``reference.*`` weights in model.safetensors, its config in ``reference/``)
and costs a second forward pass.
"""

from __future__ import annotations

import bisect
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pav.core.io import write_json
from pav.core.steps import complete_steps
from pav.policies.tokenizer import check_encodable, encode_plain
from pav.tasks.base import join_steps

log = logging.getLogger(__name__)

FORMAT = "pav.value_verifier"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
META_FILE = "verifier.json"
REFERENCE_DIR = "reference"  # config.json of the log-prob features' reference model


@dataclass(frozen=True)
class Encoded:
    """One tokenised solution: ids (T,) and the token index ending each kept prefix (≤ H + 1)."""

    input_ids: list[int]
    positions: list[int]  # positions[h] ends the prefix with h steps; truncated prefixes are absent
    n_prefixes: int  # H + 1, what it would hold untruncated
    straddling: int = 0  # prefixes read at a token that also covers characters after their end


def prefix_char_ends(prompt: str, steps: Sequence[str], delimiter: str) -> list[int]:
    """Character offset just past each prefix (h = 0..H) of ``prompt + join_steps(steps)``."""
    if not delimiter or not prompt.endswith(delimiter):
        raise ValueError(f"the prompt must end with the step delimiter {delimiter!r}: {prompt[-40:]!r}")
    ends = [len(prompt)]
    for step in steps:
        ends.append(ends[-1] + len(step) + len(delimiter))
    return ends


def encode_solution(tokenizer: Any, prompt: str, steps: Sequence[str], delimiter: str,
                    max_length: int | None = None) -> Encoded:
    """Token ids of prompt + steps and the token that ends each prefix (see the module docstring)."""
    return encode_solutions(tokenizer, [prompt], [steps], delimiter, max_length)[0]


def encode_solutions(tokenizer: Any, prompts: Sequence[str], steps_list: Sequence[Sequence[str]], delimiter: str,
                     max_length: int | None = None) -> list[Encoded]:
    """`encode_solution` of many solutions, tokenised in one call of the tokenizer (its Rust batch
    path: per-text calls cost most of the verifier's host time in a batched beam search)."""
    all_ends = [prefix_char_ends(p, s, delimiter) for p, s in zip(prompts, steps_list, strict=True)]
    if not all_ends:
        return []
    texts = [p + join_steps(s, delimiter) for p, s in zip(prompts, steps_list)]
    return [_encoded(ids, spans, ends, max_length) for (ids, spans), ends in zip(_ids_and_spans(tokenizer, texts), all_ends)]


def encode_completions(tokenizer: Any, prompts: Sequence[str], completion_ids: Sequence[Sequence[int]], delimiter: str,
                       max_length: int | None = None) -> list[tuple[list[str], Encoded]]:
    """The steps and `Encoded` form of sampled completions given as token ids of ``tokenizer``'s own
    vocabulary, without tokenising their text again: the prompt's ids, then the completion's ids (its
    steps by `pav.core.steps.split_steps` of their decoded text), with the delimiter's ids after a
    final step that lacks one, as `encode_solutions` appends it. Where the completion's ids are the
    tokenizer's encoding of its text, this equals ``encode_solutions(prompts, steps)`` (tested); ids
    after the last step (an EOS, a trailing blank line) are not read."""
    delim_ids = tokenizer.encode(delimiter, add_special_tokens=False)
    out = []
    for (p_ids, p_spans), prompt, ids in zip(_ids_and_spans(tokenizer, list(prompts)), prompts, completion_ids,
                                              strict=True):
        ids = list(ids)
        text, char_end = decode_with_offsets(tokenizer, ids)
        steps, rest = complete_steps(text, delimiter)
        if rest.strip():  # a final step without its delimiter: read at the delimiter's tokens, as the text path is
            steps.append(rest)
            n = next(t for t, e in enumerate(char_end) if e >= len(text)) + 1  # no EOS before the delimiter
            delim_end = [len(text) + e for e in decode_with_offsets(tokenizer, delim_ids)[1]]
            ids, char_end = ids[:n] + delim_ids, char_end[:n] + delim_end
        keep = max((t + 1 for t, (lo, hi) in enumerate(p_spans) if hi > lo), default=0)  # no trailing special token
        starts = [0, *char_end[:-1]]
        spans = p_spans[:keep] + [(len(prompt) + lo, len(prompt) + hi) for lo, hi in zip(starts, char_end)]
        out.append((steps, _encoded(p_ids[:keep] + ids, spans, prefix_char_ends(prompt, steps, delimiter), max_length)))
    return out


def _ids_and_spans(tokenizer: Any, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """Token ids (special tokens added) and character spans of each text, in one tokenizer call."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("step positions need a fast tokenizer (character offsets)")
    try:
        plain = encode_plain(tokenizer, texts)
        if plain is not None:
            pairs = [(e.ids, e.offsets) for e in plain]
        else:
            enc = tokenizer(texts, add_special_tokens=True, return_offsets_mapping=True)
            pairs = list(zip(enc["input_ids"], enc["offset_mapping"]))
    except Exception:  # tokenizers raises a bare Exception for a character outside a WordLevel vocabulary
        check_encodable(tokenizer, texts)  # that case as one line naming the characters
        raise
    return [(list(ids), [tuple(x) for x in spans]) for ids, spans in pairs]


def decode_with_offsets(tokenizer: Any, ids: Sequence[int]) -> tuple[str, list[int]]:
    """The decoded text of ``ids`` (special tokens skipped) and, per token, the character where its text ends."""
    pieces = [tokenizer.decode([i], skip_special_tokens=True) for i in ids]
    text = "".join(pieces)
    if text == tokenizer.decode(ids, skip_special_tokens=True):
        return text, [int(e) for e in np.cumsum([len(p) for p in pieces])]
    # a character split across tokens (byte-level BPE), or a decoder that strips a leading space: decode prefixes
    return tokenizer.decode(ids, skip_special_tokens=True), [len(tokenizer.decode(ids[: t + 1], skip_special_tokens=True))
                                                             for t in range(len(ids))]


def _encoded(ids: list[int], spans: list[tuple[int, int]], ends: list[int], max_length: int | None) -> Encoded:
    real = [t for t, (lo, hi) in enumerate(spans) if hi > lo]  # special tokens have empty spans
    starts = [spans[t][0] for t in real]
    positions, straddling = [], 0
    for e in ends:
        k = bisect.bisect_left(starts, e) - 1  # last real token starting before e
        if k < 0 or spans[real[k]][1] < e:
            raise ValueError(f"no token covers character {e - 1} (the delimiter ending a prefix); "
                             "the tokenizer drops or normalises it away")
        straddling += spans[real[k]][1] > e
        positions.append(real[k])
    if max_length is not None:
        positions = [t for t in positions if t < max_length]
    ids = ids[: positions[-1] + 1] if positions else []
    return Encoded(ids, positions, len(ends), straddling)


def step_end_positions(tokenizer: Any, prompt: str, steps: Sequence[str], delimiter: str,
                       max_length: int | None = None) -> list[int]:
    """Token index whose hidden state scores each prefix h = 0..H; fewer when cut by max_length."""
    return encode_solution(tokenizer, prompt, steps, delimiter, max_length).positions


_WARNED: set[str] = set()  # kinds of encoding warning already given by this process


def warn_encoding(encoded: Sequence[Encoded], max_length: int | None) -> tuple[int, int]:
    """Log (and return) how many prefixes were cut by max_length or share a token with the next step.

    Each kind is a warning the first time in a process and a debug message after (a loop that
    scores every iteration would otherwise repeat it hundreds of times)."""
    cut = sum(e.n_prefixes - len(e.positions) for e in encoded)
    straddling = sum(e.straddling for e in encoded)
    if cut:
        _warn_once("cut", "%d of %d prefixes end past max_length=%s tokens and are dropped",
                   cut, sum(e.n_prefixes for e in encoded), max_length)
    if straddling:
        _warn_once("straddling", "%d prefix end(s) share a token with the next step's text; their values see "
                   "the start of that step", straddling)
    return cut, straddling


def _warn_once(kind: str, msg: str, *args: Any) -> None:
    if kind in _WARNED:
        log.debug(msg, *args)
        return
    _WARNED.add(kind)
    log.warning(msg + " (repeats are logged at debug level)", *args)


def collate(rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int,
            padding_side: str = "right") -> dict[str, torch.Tensor]:
    """Pad (ids, positions) rows: input_ids and attention_mask (B, T), positions (B, K), -1 = none.

    ``positions`` index the padded rows (shifted by the padding on the left).
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    T = max(len(ids) for ids, _ in rows)
    K = max(len(pos) for _, pos in rows)
    input_ids = np.full((len(rows), T), pad_id, dtype=np.int64)  # (B, T); filled on the host, one tensor each
    mask = np.zeros((len(rows), T), dtype=np.int64)  # (B, T)
    positions = np.full((len(rows), K), -1, dtype=np.int64)  # (B, K)
    for b, (ids, pos) in enumerate(rows):
        shift = T - len(ids) if padding_side == "left" else 0
        input_ids[b, shift: shift + len(ids)] = ids
        mask[b, shift: shift + len(ids)] = 1
        positions[b, : len(pos)] = np.asarray(pos, dtype=np.int64) + shift
    return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(mask),
            "positions": torch.from_numpy(positions)}


FEATURES = ("none", "logprob")
N_LOGPROB_FEATURES = 3  # step sum, step min, running min of the reference's token log-probs


class ValueVerifier(torch.nn.Module):
    """Backbone (an HF decoder, its LM head dropped) + ``Linear(hidden, 1)`` read at step ends,
    plus, with ``reference`` (a frozen causal LM), an MLP of its step log-prob features."""

    def __init__(self, backbone: torch.nn.Module, tokenizer: Any, delimiter: str = "\n",
                 max_length: int | None = None, seed: int = 0, reference: torch.nn.Module | None = None) -> None:
        super().__init__()
        base = getattr(backbone, "base_model", backbone)  # a *ForCausalLM -> its decoder
        self.backbone = base
        self.tokenizer = tokenizer
        self.delimiter = delimiter
        text_config = base.config.get_text_config()
        self.max_length = max_length or getattr(text_config, "max_position_embeddings", None)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.head = torch.nn.Linear(text_config.hidden_size, 1)  # float32 whatever the backbone
            self.feature_head = None if reference is None else torch.nn.Sequential(
                torch.nn.Linear(N_LOGPROB_FEATURES, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        self.reference = None if reference is None else reference.eval().requires_grad_(False)
        self.to(next(base.parameters()).device)

    @property
    def features(self) -> str:
        return "none" if self.reference is None else "logprob"

    def train(self, mode: bool = True) -> ValueVerifier:
        super().train(mode)
        if self.reference is not None:
            self.reference.eval()  # frozen: no dropout, whatever the verifier's mode
        return self

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return next((i for i in (tok.pad_token_id, tok.eos_token_id) if i is not None), 0)

    def encode(self, prompt: str, steps: Sequence[str]) -> Encoded:
        return encode_solution(self.tokenizer, prompt, steps, self.delimiter, self.max_length)

    def encode_many(self, prompts: Sequence[str], steps_list: Sequence[Sequence[str]]) -> list[Encoded]:
        """`encode` of each solution, in one tokenizer call."""
        return encode_solutions(self.tokenizer, prompts, steps_list, self.delimiter, self.max_length)

    def encode_ids(self, prompts: Sequence[str], completion_ids: Sequence[Sequence[int]]) -> list[tuple[list[str], Encoded]]:
        """`encode_completions` of completions given as this verifier's token ids: (steps, encoded) each."""
        return encode_completions(self.tokenizer, prompts, completion_ids, self.delimiter, self.max_length)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                positions: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) at ``positions`` (B, K); entries where positions < 0 are 0. Inputs may be on
        the CPU: they are moved to the verifier's device."""
        device = self.head.weight.device
        input_ids, attention_mask, positions = (t.to(device) for t in (input_ids, attention_mask, positions))
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (B, T)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                            position_ids=position_ids, use_cache=False)
        hidden = out.last_hidden_state  # (B, T, D)
        index = positions.clamp(min=0)[..., None].expand(-1, -1, hidden.shape[-1])  # (B, K, D)
        logits = self.head(hidden.gather(1, index).float()).squeeze(-1)  # (B, K)
        if self.reference is not None:
            feats = self.logprob_features(input_ids, attention_mask, position_ids, positions)  # (B, K, 3)
            logits = logits + self.feature_head(feats).squeeze(-1)
        return logits.masked_fill(positions < 0, 0.0)

    @torch.no_grad()
    def logprob_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                         positions: torch.Tensor) -> torch.Tensor:
        """(B, K, 3): per prefix, the reference's summed and smallest token log-prob over the tokens of
        its last step, and the smallest over all its steps (0 for the question-only prefix)."""
        out = self.reference(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=False)
        logp = torch.log_softmax(out.logits[:, :-1].float(), -1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
        logp = torch.cat([logp.new_zeros(len(logp), 1), logp], 1)  # (B, T): log p(token t | tokens < t)
        ends = positions  # (B, K); -1 = no prefix
        starts = torch.cat([ends[:, :1], ends[:, :-1]], 1)  # (B, K): the span of step h is (ends[h-1], ends[h]]
        t = torch.arange(logp.shape[1], device=logp.device)  # (T,)
        span = (t > starts[..., None]) & (t <= ends[..., None]) & (ends[..., None] >= 0)  # (B, K, T)
        step_sum = (logp[:, None, :] * span).sum(-1)  # (B, K)
        step_min = logp[:, None, :].masked_fill(~span, 0.0).amin(-1)  # (B, K), 0 where the span is empty
        run_min = torch.cummin(step_min, dim=1).values  # (B, K)
        return torch.stack([step_sum, step_min, run_min], -1)

    def prefix_values(self, prompts: Sequence[str], steps_list: Sequence[Sequence[str]],
                      batch_size: int = 32, padding_side: str = "right") -> list[np.ndarray]:
        """sigmoid values of every prefix h = 0..H of each solution (shorter when truncated)."""
        return self.values_of(self.encode_many(prompts, steps_list), batch_size, padding_side)

    @torch.no_grad()
    def values_of(self, encoded: Sequence[Encoded], batch_size: int = 32,
                  padding_side: str = "right") -> list[np.ndarray]:
        """`prefix_values` of already encoded solutions (``len(e.input_ids)`` tokens are read each);
        batches are formed from solutions of similar length, so little padding is computed."""
        warn_encoding(encoded, self.max_length)
        out = [np.zeros(0, dtype=np.float32) for _ in encoded]
        todo = sorted((i for i, e in enumerate(encoded) if e.positions), key=lambda i: len(encoded[i].input_ids))
        was_training = self.training
        self.eval()
        try:
            for start in range(0, len(todo), batch_size):
                idx = todo[start: start + batch_size]
                batch = collate([(encoded[i].input_ids, encoded[i].positions) for i in idx],
                                self.pad_id, padding_side)
                values = torch.sigmoid(self(**batch)).float().cpu().numpy()  # (B, K), one copy to the host
                for b, i in enumerate(idx):
                    out[i] = values[b, : len(encoded[i].positions)]
        finally:
            self.train(was_training)
        return out

    # ------------------------------------------------------------------ files

    def save(self, directory: str | os.PathLike) -> Path:
        """Write model.safetensors, the backbone's config.json, verifier.json and the tokenizer."""
        from safetensors.torch import save_model

        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        save_model(self, str(path / WEIGHTS_FILE), metadata={"format": "pt"})
        self.backbone.config.save_pretrained(path)
        if self.reference is not None:
            self.reference.config.save_pretrained(path / REFERENCE_DIR)  # its weights are in model.safetensors
        self.tokenizer.save_pretrained(path)
        write_json(path / META_FILE, {"format": FORMAT, "version": FORMAT_VERSION, "delimiter": self.delimiter,
                                      "max_length": self.max_length, "features": self.features})
        return path

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu",
             dtype: str | torch.dtype | None = None) -> ValueVerifier:
        """Rebuild a saved verifier offline (local files only, safetensors only); ``dtype`` casts the
        backbone and reference (the heads stay float32)."""
        from safetensors.torch import load_model
        from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

        path = Path(directory)
        meta = read_meta(path)
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        backbone = AutoModel.from_config(config)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        reference = None
        if meta.get("features") == "logprob":
            reference = AutoModelForCausalLM.from_config(
                AutoConfig.from_pretrained(path / REFERENCE_DIR, local_files_only=True))
        verifier = cls(backbone, tokenizer, meta["delimiter"], meta["max_length"], reference=reference)
        load_model(verifier, str(path / WEIGHTS_FILE), strict=True)
        verifier.cast_backbone(dtype)
        return verifier.to(device).eval()

    def cast_backbone(self, dtype: str | torch.dtype | None) -> None:
        """Backbone and reference in ``dtype`` (None: unchanged); the heads stay float32."""
        if dtype is None:
            return
        dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
        self.backbone.to(dtype)
        if self.reference is not None:
            self.reference.to(dtype)

    @classmethod
    def from_policy(cls, name_or_path: str | os.PathLike, delimiter: str = "\n", seed: int = 0,
                    max_length: int | None = None, features: str = "none", **load_kwargs: Any) -> ValueVerifier:
        """A fresh head on a causal LM loaded with `pav.policies.hf.load_causal_lm` (``load_kwargs``:
        its device, dtype, trust_remote_code); with ``features="logprob"`` a frozen copy of that LM
        is the reference of the log-prob features."""
        import copy

        from pav.policies.hf import load_causal_lm

        if features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {features!r}")
        model, tokenizer = load_causal_lm(name_or_path, **load_kwargs)
        reference = copy.deepcopy(model) if features == "logprob" else None
        return cls(model, tokenizer, delimiter, max_length, seed, reference=reference)


def read_meta(path: Path) -> dict[str, Any]:
    """verifier.json of a saved verifier, checked."""
    try:
        meta = json.loads((path / META_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a saved verifier: cannot read {META_FILE}: {exc}") from exc
    if meta.get("format") != FORMAT or not isinstance(meta.get("version"), int):
        raise ValueError(f"{path / META_FILE}: not a {FORMAT} file")
    if meta["version"] > FORMAT_VERSION:
        raise ValueError(f"{path / META_FILE}: version {meta['version']} is newer than supported")
    if meta.get("features", "none") not in FEATURES:
        raise ValueError(f"{path / META_FILE}: unknown features {meta.get('features')!r}")
    return meta
