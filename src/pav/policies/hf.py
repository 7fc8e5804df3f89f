"""The transformers backend: load/save causal LMs and a batched KV-cache sampler (`HFPolicy`).

`HFPolicy.sample` follows these rules:

1. The distinct contexts are sorted by length and packed into groups of at most ``batch_size``
   rows (a group's rows are its contexts times ``n``). Each group is encoded once, left-padded,
   with ``position_ids = cumsum(mask) - 1`` and a `DynamicCache` (the prefill).
2. The prefill cache and the last logits are expanded to one row per rollout
   (``batch_select_indices`` with repeated indices), so a context shared by R rollouts is encoded
   once, not R times. A single context with more than ``batch_size`` rollouts decodes in several
   chunks from copies of one prefill.
3. Decode token by token; rows that stop (the shared stop rule `scan_steps`, eos, or a budget)
   leave the batch and the cache at once, so one long row does not keep dead rows alive. A
   finished row's text is then cut at a step that reached ``max_step_chars`` characters
   (`pav.policies.base.cut_over_long`; the limit never stops a row sooner).

Sampling: ``temperature=0`` is argmax; otherwise temperature, then top-p, then an exponential-race
draw (argmax of p / E with E = -log U ~ Exp(1), the same distribution as multinomial). With an int
``seed``, U comes from one seeded `torch.Generator` and outputs depend on the seed and on
``batch_size`` (which rows share a draw), nothing else. With one seed per context, U comes from
`pav.policies.noise` keyed by (that seed, rollout index, token index), so a context's rollouts
are the same whichever contexts share the call (up to floating-point differences in the logits).
The pad token is never sampled (unless it doubles as eos), nor ids past the tokenizer's vocabulary.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import logging
import math
import numbers
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from pav.policies.base import (
    Generation,
    PolicyLoadError,
    SampleBatch,
    StepScan,
    Until,
    check_sample_args,
    cut_over_long,
    scan_steps,
)
from pav.policies.fast_decode import decode_cohorts, left_padded
from pav.policies.fast_gpt2 import FastGPT2
from pav.policies.fast_llama import FastLlama
from pav.policies.gguf import local_model_dir
from pav.policies.noise import keyed_uniform, row_keys, step_salt
from pav.policies.prefix_store import PrefixStore
from pav.policies.tokenizer import encode_plain, plain_decoder

logger = logging.getLogger(__name__)

def cache_argument(model: PreTrainedModel) -> str:
    """The name under which ``model.forward`` takes its KV cache: ``cache`` in the transformers
    releases that renamed it, ``past_key_values`` before (the old name warns there, and goes in
    a later release). Read from the signature, so both sides of the rename work without a version test."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


FAST_PATHS = (FastGPT2, FastLlama)  # own forward passes over a model's weights (`fast_decode`), first match
PRUNE_FRACTION = 0.1  # drop stopped rows once they are this share of the batch (a drop copies the cache)


# ----------------------------------------------------------------------------------------------
# Loading, saving, constructing


def _hub_offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or env.strip().lower() in {"1", "on", "yes", "true"}


def _in_hf_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an invalid repo id is simply not cached
        return False


def _check_on_hub(repo_id: str) -> None:
    """One look-up before a download, so a typo or an unreachable hub is one clear error, not a
    download's minute of retries."""
    from huggingface_hub import model_info
    from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

    try:
        model_info(repo_id, timeout=10)
    except RepositoryNotFoundError:
        raise PolicyLoadError(f"{repo_id!r} is neither a local directory nor a model on the Hugging Face hub; "
                              "check the name or pass a model directory or a `pav sft` run") from None
    except HfHubHTTPError:
        return  # the hub answered (gated, rate-limited, ...): let the download say why
    except Exception as err:  # no network, DNS, timeout
        raise PolicyLoadError(f"{repo_id!r} is not a local directory and the Hugging Face hub could not be reached "
                              f"({type(err).__name__}); check the path, or download the model first") from None


def load_causal_lm(
    name_or_path: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load (model, tokenizer) from a local directory or a hub name; safetensors weights only.

    With ``HF_HUB_OFFLINE=1`` a name that is neither a local directory nor cached fails at once
    with `PolicyLoadError`. ``dtype=None`` keeps transformers' default ("auto": the checkpoint's).
    """
    name = local_model_dir(name_or_path)  # a .gguf file: its converted folder (pav.policies.gguf)
    local = Path(name).expanduser().is_dir()
    if not local and (Path(name).is_absolute() or name.startswith((".", "~"))):
        raise PolicyLoadError(f"no such model directory: {name}")
    offline = _hub_offline()
    if not local and offline and not _in_hf_cache(name):
        raise PolicyLoadError(
            f"{name!r} is not a local directory and not in the Hugging Face cache, and HF_HUB_OFFLINE is set"
        )
    if not local and not offline and not _in_hf_cache(name):
        _check_on_hub(name)
    kwargs = {"local_files_only": offline or local, "trust_remote_code": trust_remote_code}
    if dtype is not None:
        kwargs["dtype"] = dtype
    path = str(Path(name).expanduser()) if local else name
    try:
        with _no_local_bars(local):  # a bar per local load of a small model is noise in every stage's output
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=kwargs["local_files_only"],
                                                      trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(path, use_safetensors=True, **kwargs)
    except (OSError, ValueError) as err:  # missing files, no safetensors, bad repo id
        raise PolicyLoadError(f"could not load {name!r}: {err}") from err
    return model.to(device).eval(), tokenizer


def save_policy(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, directory: str | os.PathLike) -> Path:
    """Write ``model.safetensors``, ``config.json`` and the tokenizer files to ``directory``."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    with _no_local_bars(True):
        model.save_pretrained(path)  # transformers 5 writes safetensors only
    tokenizer.save_pretrained(path)
    return path


@contextlib.contextmanager
def _no_local_bars(silence: bool) -> Iterator[None]:
    """transformers' progress bars off while loading or writing local files (restored after)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if silence:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def sinusoidal_positions(n_positions: int, n_embd: int, scale: float = 0.1) -> torch.Tensor:
    """``scale * [sin, cos](pos / 10000^(2i/n_embd))``, shape (n_positions, n_embd)."""
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (P, 1)
    freq = 10000.0 ** (torch.arange(n_embd // 2, dtype=torch.float64) * 2 / n_embd)  # (n_embd/2,)
    table = torch.cat([torch.sin(pos / freq), torch.cos(pos / freq)], dim=1)  # (P, 2 * (n_embd/2))
    out = torch.zeros(n_positions, n_embd, dtype=torch.float64)
    out[:, : table.shape[1]] = table
    return (scale * out).float()


def tiny_gpt2(
    vocab_size: int,
    n_layer: int = 2,
    n_embd: int = 64,
    n_head: int = 4,
    n_positions: int = 128,
    seed: int = 0,
    *,
    pad_token_id: int | None = 0,
    eos_token_id: int | None = None,
) -> GPT2LMHeadModel:
    """A small GPT-2: all dropout 0, a 0.1-scaled sinusoidal init of ``wpe``.

    The activation is ``gelu_pytorch_tanh``: GPT-2's tanh-approximated GELU as one fused kernel
    (``gelu_new`` computes the same in Python ops; it cost ~10% of sampling time). Initialisation
    is seeded and leaves the global torch RNG untouched.
    """
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer, n_head=n_head,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0,
        activation_function="gelu_pytorch_tanh",  # gelu_new's maths in one fused kernel
        bos_token_id=eos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GPT2LMHeadModel(config)
    with torch.no_grad():
        model.transformer.wpe.weight.copy_(sinusoidal_positions(n_positions, n_embd))
    return model


# ----------------------------------------------------------------------------------------------
# Sampling


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of most likely tokens whose mass reaches ``top_p``; (B, V) -> (B, V)."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
    probs = sorted_logits.softmax(dim=-1)
    drop = probs.cumsum(dim=-1) - probs >= top_p  # the tokens before already reach top_p
    return logits.scatter(-1, order, sorted_logits.masked_fill(drop, -math.inf))


def _chunk_keys(keys_of: list[torch.Tensor], group: list[int], rows: list[int],
                per_unique: list[list[Generation]]) -> torch.Tensor:
    """(B, 2) keys of a chunk's rows: each row is its context's next rollout not yet decoded."""
    taken = [len(per_unique[u]) for u in group]
    out = []
    for s in rows:
        out.append(keys_of[group[s]][taken[s]])
        taken[s] += 1
    return torch.stack(out)  # on the host, like keys_of


def _pack(order: list[int], rows_of: list[int], batch_size: int) -> Iterator[list[int]]:
    """Consecutive groups of contexts with at most ``batch_size`` rows (or one oversized context)."""
    group, size = [], 0
    for u in order:
        if group and size + rows_of[u] > batch_size:
            yield group
            group, size = [], 0
        group.append(u)
        size += rows_of[u]
    if group:
        yield group


class HFPolicy:
    """`Policy` over a transformers causal LM; see the module docstring for the algorithm."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        policy_id: str,
        device: str | torch.device = "cpu",
        batch_size: int = 256,
        delimiter: str = "\n",
        fast: bool = True,
        cohorts: int = 1,
    ) -> None:
        if batch_size < 1 or not delimiter or cohorts < 1:
            raise ValueError("batch_size and cohorts must be >= 1 and delimiter non-empty")
        self.model = model.to(device)
        self.tokenizer = tokenizer
        self.policy_id = policy_id
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.delimiter = delimiter
        self.fast = fast  # decode GPT-2 and Llama-family models on `FAST_PATHS` (module docstring)
        self.cohorts = cohorts  # the fast path's prefill groups decoding at once (`fast_decode`: 1 pays best)
        self.eos_id: int | None = tokenizer.eos_token_id
        self.pad_id: int = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.eos_id or 0)
        self.max_positions: int | None = getattr(model.config.get_text_config(), "max_position_embeddings", None)
        n_vocab = model.get_output_embeddings().weight.shape[0]
        pieces = tokenizer.batch_decode([[i] for i in range(min(len(tokenizer), n_vocab))])
        # (V,) tokens that can complete a delimiter (they hold its last character): run the stop rule
        self._has_delim = torch.zeros(n_vocab, dtype=torch.bool)
        self._has_delim[: len(pieces)] = torch.tensor([delimiter[-1] in p for p in pieces], dtype=torch.bool)
        self._banned = torch.zeros(n_vocab, dtype=torch.bool)  # (V,) never sampled
        self._banned[len(pieces):] = True
        if tokenizer.pad_token_id is not None and tokenizer.pad_token_id != self.eos_id:
            self._banned[tokenizer.pad_token_id] = True
        self._has_delim, self._banned = self._has_delim.to(self.device), self._banned.to(self.device)
        self._cache_arg = cache_argument(self.model)
        self._prefix_store: PrefixStore | None = None  # set inside reuse_prefixes()
        self._fast_cache: tuple[tuple, FastGPT2 | FastLlama] | None = None  # (weights stamp, fast path)
        self._backend_decode = plain_decoder(tokenizer)  # None: decode through the tokenizer
        # (V,) on the host: tokens after which the fast path looks at a row (it keeps its tokens there)
        self._flagged = self._has_delim.cpu().clone()
        if self.eos_id is not None and self.eos_id < n_vocab:
            self._flagged[self.eos_id] = True

    def sample(
        self,
        contexts: Sequence[str],
        n: int,
        *,
        until: Until,
        max_steps: int,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        seed: int | Sequence[int] | None = None,
        is_final_step: Callable[[str], bool] | None = None,
        max_step_chars: int | None = None,
    ) -> SampleBatch:
        """See `pav.policies.base.Policy.sample`."""
        check_sample_args(n, until, max_steps, max_new_tokens, temperature, top_p, max_step_chars)
        start = time.perf_counter()
        keyed = seed is not None and not isinstance(seed, numbers.Integral)  # one seed per context
        if keyed and len(seed) != len(contexts):
            raise ValueError(f"give one seed per context: {len(seed)} seeds for {len(contexts)} contexts")
        generator = torch.Generator(device=self.device)
        if seed is None:
            generator.seed()  # nondeterministic
        elif not keyed:
            generator.manual_seed(int(seed))
        stop = functools.partial(scan_steps, until=until, delimiter=self.delimiter, max_steps=max_steps,
                                 is_final_step=is_final_step)
        cut = functools.partial(cut_over_long, delimiter=self.delimiter, max_step_chars=max_step_chars,
                                decode=self._decode_one)  # (Generation, its token ids) -> Generation
        draw = functools.partial(self._next_token, temperature=temperature, top_p=top_p, generator=generator)
        unique = list(dict.fromkeys(contexts))  # distinct contexts, each encoded once
        ids = self._encode(unique)
        copies = Counter(contexts)
        rows_of = [copies[u] * n for u in unique]
        keys_of = self._row_keys(contexts, seed, n, unique) if keyed else None  # (rows_of[u], 2) each, on the host
        order = sorted(range(len(unique)), key=lambda u: len(ids[u]))  # similar lengths share a prefill
        per_unique: list[list[Generation]] = [[] for _ in unique]
        fast = self._fast_path()
        reuse = self._prefix_store if fast is not None else None  # inside reuse_prefixes(): the last call's rows
        keep = PrefixStore() if reuse is not None and until == "step" else None
        was_training = self.model.training
        self.model.eval()
        reused = 0  # context tokens read from stored or shared KV instead of encoded (the fast path)
        try:
            with torch.inference_mode():
                if fast is not None:  # the fast GPT-2 path (`pav.policies.fast_decode`)
                    per_unique, reused = decode_cohorts(self, fast, ids, order, rows_of, stop, cut, draw,
                                                        max_new_tokens, keys_of, reuse, keep)
                groups = _pack(order, rows_of, self.batch_size) if fast is None else ()
                for group in groups:
                    cache, logits, mask = self._prefill([ids[u] for u in group])
                    counts = torch.tensor([rows_of[u] for u in group])
                    src = torch.repeat_interleave(torch.arange(len(group)), counts).to(self.device)  # (rows,)
                    chunks = src.split(self.batch_size)  # the prefill row of each rollout row, per chunk
                    for k, rows in enumerate(chunks):
                        chunk_cache = cache if k == len(chunks) - 1 else copy.deepcopy(cache)
                        chunk_cache.batch_select_indices(rows)
                        keys = None if keys_of is None else \
                            _chunk_keys(keys_of, group, rows.tolist(), per_unique).to(self.device)
                        gens = self._decode(chunk_cache, logits[rows], mask[rows], stop, cut, draw, max_new_tokens,
                                            keys)
                        for s, gen in zip(rows.tolist(), gens):
                            per_unique[group[s]].append(gen)
        finally:
            self.model.train(was_training)
        if self._prefix_store is not None:
            self._prefix_store = keep if keep is not None else PrefixStore()
        index = {u: i for i, u in enumerate(unique)}
        used: Counter[str] = Counter()
        generations = []
        for c in contexts:  # duplicates of a context take consecutive slices of its rows
            generations.append(per_unique[index[c]][used[c] * n : (used[c] + 1) * n])
            used[c] += 1
        batch = SampleBatch(
            generations=generations,
            prompt_tokens=sum(len(x) for x in ids) - reused,
            generated_tokens=sum(g.n_tokens for row in generations for g in row),
            seconds=time.perf_counter() - start,
        )
        logger.debug("%s: %d contexts x %d, %d prompt + %d generated tokens in %.2f s", self.policy_id,
                     len(contexts), n, batch.prompt_tokens, batch.generated_tokens, batch.seconds)
        return batch

    def _fast_path(self) -> FastGPT2 | FastLlama | None:
        """The model's fast forward (`FAST_PATHS`), or None. Built again only when a weight changed
        (a new tensor, or an in-place update, which moves its version counter; a write through
        ``.data`` does not, so build a new HFPolicy after one), since building one copies
        fused weights (tens of ms on SmolLM2-135M, per call of a step-at-a-time loop)."""
        cls = next((c for c in FAST_PATHS if c.supports(self.model)), None) if self.fast else None
        if cls is None:
            return None
        stamp = (cls, *((p.data_ptr(), p._version) for p in self.model.parameters()))
        if self._fast_cache is None or self._fast_cache[0] != stamp:
            self._fast_cache = (stamp, cls(self.model))
        return self._fast_cache[1]

    @contextlib.contextmanager
    def reuse_prefixes(self) -> Iterator[None]:
        """Within this block, every ``until="step"`` call keeps its rows' KV states and the next
        call encodes only what a context adds to one of them (`pav.policies.prefix_store`): a
        beam's kept prefixes, or one sample's steps taken one call at a time, are extended instead
        of encoded again. Outputs are those of the same calls without it, up to floating-point
        rounding. GPT-2-family models on the fast path; other models ignore it. The store is freed
        when the block ends."""
        outer = self._prefix_store
        self._prefix_store = PrefixStore() if outer is None else outer
        try:
            yield
        finally:
            self._prefix_store = outer

    def _row_keys(self, contexts: Sequence[str], seeds: Sequence[int], n: int, unique: list[str]) -> list[torch.Tensor]:
        """Noise keys of every row, per distinct context, on the host (the decoders move the rows they
        take in one copy): row k of a context that occurs several times is rollout k % n of its
        (k // n)-th occurrence, with that occurrence's seed."""
        occurrences: dict[str, list[int]] = {u: [] for u in unique}
        for c, s in zip(contexts, seeds):
            occurrences[c].append(int(s))
        counts = [n * len(occurrences[u]) for u in unique]
        keys = row_keys([occurrences[u][k // n] for u, m in zip(unique, counts) for k in range(m)],
                        [k % n for m in counts for k in range(m)])  # (rows, 2), all contexts at once
        return list(keys.split(counts))

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text as `sample` encodes a context (special tokens included; no window
        check), in one tokenizer call."""
        if not texts:
            return []
        plain = encode_plain(self.tokenizer, list(texts))
        if plain is not None:
            return [len(e) for e in plain]
        return [len(x) for x in self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]]

    def _encode(self, texts: list[str]) -> list[list[int]]:
        try:
            ids = self.tokenizer(texts, add_special_tokens=True)["input_ids"] if texts else []
        except Exception as err:  # e.g. a character outside a char tokenizer's alphabet
            raise ValueError(f"cannot tokenize the contexts: {err}") from err
        for text, x in zip(texts, ids):
            if not x or (self.max_positions is not None and len(x) >= self.max_positions):
                raise ValueError(f"a context of {len(x)} tokens leaves no room in a window of "
                                 f"{self.max_positions}: {text[:80]!r}")
        return ids

    def _left_padded(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Contexts as left-padded rows on the policy's device: input_ids, mask, positions (G, T)."""
        return left_padded(seqs, self.pad_id, self.device)

    def _prefill(self, seqs: list[list[int]]) -> tuple[DynamicCache, torch.Tensor, torch.Tensor]:
        """Encode left-padded contexts once: (cache, last logits (G, V), mask (G, T))."""
        input_ids, mask, position_ids = self._left_padded(seqs)
        cache = DynamicCache(config=self.model.config)  # public Cache API; the forward fills it in place
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                         use_cache=True, logits_to_keep=1, **{self._cache_arg: cache})
        return cache, out.logits[:, -1].float(), mask

    def _next_token(self, logits: torch.Tensor, salt: torch.Tensor | None = None, *, temperature: float,
                    top_p: float, generator: torch.Generator) -> torch.Tensor:
        """Draw one token per row: logits (B, V) -> (B,); ``salt`` (B,): keyed noise (`pav.policies.noise`)."""
        logits = logits.masked_fill(self._banned, -math.inf)
        if temperature == 0:
            return logits.argmax(-1)
        if temperature != 1:
            logits = logits / temperature
        if top_p < 1:
            logits = _top_p_filter(logits, top_p)
        probs = logits.softmax(-1)  # (B, V)
        # race = -log(U) ~ Exp(1); argmax p / race = argmin p / log(U). `exponential_` costs ~5x as
        # much as `rand` + `log` on CPU at these sizes; U = 0 gives log U = -inf: that token loses.
        if salt is None:
            log_u = torch.rand(probs.shape, generator=generator, device=probs.device, dtype=probs.dtype).log_()
        else:
            log_u = keyed_uniform(salt, probs.shape[-1], probs.dtype).log_()
        return (probs / log_u).argmin(-1)

    def _decode(
        self,
        cache: DynamicCache,
        logits: torch.Tensor,
        mask: torch.Tensor,
        stop: Callable[[str, int], StepScan],
        cut: Callable[[Generation, list[int]], Generation],
        draw: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor],
        max_new_tokens: int,
        keys: torch.Tensor | None = None,
    ) -> list[Generation]:
        """Sample every row of one chunk to its stop; stopped rows leave the batch and the cache, their
        text cut at an over-long step (``cut``). ``keys`` (B, 2): the rows' keyed-noise keys (None: the
        call's generator)."""
        n_rows = logits.shape[0]
        ctx_len = mask.sum(-1)  # (B,) real context tokens = position of the first new token
        budget = torch.full_like(ctx_len, max_new_tokens)  # (B,)
        if self.max_positions is not None:
            budget = torch.minimum(budget, self.max_positions - ctx_len)
        last_position = (self.max_positions or 2**62) - 1
        tokens = torch.zeros(n_rows, max_new_tokens, dtype=torch.long, device=self.device)  # (B, T)
        alive = torch.arange(n_rows, device=self.device)  # (b,) chunk row of each batch row
        live = torch.ones(n_rows, dtype=torch.bool, device=self.device)  # (b,) not yet stopped
        steps_seen = [0] * n_rows
        results: list[Generation | None] = [None] * n_rows
        for t in range(max_new_tokens):
            tok = draw(logits, None if keys is None else step_salt(keys[alive], t))  # (b,)
            tokens[alive, t] = tok
            is_eos = tok == self.eos_id if self.eos_id is not None else torch.zeros_like(live)
            done = live & (is_eos | (budget[alive] <= t + 1))  # (b,)
            rows = alive.tolist()
            for i in (live & self._has_delim[tok] & ~is_eos).nonzero().flatten().tolist():
                ids = tokens[rows[i], : t + 1].tolist()
                text = self._decode_one(ids)
                scan = stop(text, steps_seen[rows[i]])
                steps_seen[rows[i]] = scan.n_steps
                if scan.end is not None:
                    results[rows[i]] = cut(Generation(text[: scan.end], t + 1, scan.finished), ids)
                    done[i] = True
            for i in done.nonzero().flatten().tolist():
                if results[rows[i]] is None:  # eos or a budget
                    ids = tokens[rows[i], : t + 1].tolist()
                    results[rows[i]] = cut(Generation(self._decode_one(ids), t + 1, bool(is_eos[i])), ids)
            live &= ~done
            n_live = int(live.sum())
            if n_live == 0:
                break
            if n_live <= (1 - PRUNE_FRACTION) * live.numel():  # drop stopped rows from batch and cache
                keep = live.nonzero().flatten()  # (b',)
                cache.batch_select_indices(keep)
                alive, tok, mask, live = alive[keep], tok[keep], mask[keep], live[keep]
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)  # (b, T + 1)
            position_ids = (ctx_len[alive] + t).clamp(max=last_position)[:, None]  # (b, 1); clamp: stopped rows
            out = self.model(input_ids=tok[:, None], attention_mask=mask, position_ids=position_ids,
                             use_cache=True, **{self._cache_arg: cache})
            logits = out.logits[:, -1].float()  # (b, V)
        return results  # type: ignore[return-value]

    def _decode_one(self, ids: list[int]) -> str:
        """One row's sampled tokens as text (special tokens, i.e. eos, skipped)."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _decode_texts(self, rows: list[list[int]]) -> list[str]:
        """``tokenizer.decode(row, skip_special_tokens=True)`` for each row, in one backend call
        when the tokenizer is a plain tokenizers-backed one (the same call its ``decode`` makes)."""
        if self._backend_decode is not None:
            return self._backend_decode(rows, skip_special_tokens=True)
        return [self.tokenizer.decode(r, skip_special_tokens=True) for r in rows]
