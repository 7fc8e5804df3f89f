"""Sampling and labelling throughput on a real model, side by side in one run (same process, model,
prompts and threads), so ratios hold on a busy machine even where absolute tok/s do not.

Throughput at each batch size (``--batches``), sampling at temperature 1, ``--new-tokens`` per row
(a row stops earlier only at eos), 3-shot arithmetic prompts:
  whole      `HFPolicy.sample` of whole continuations (no step stop);
  stepwise   the same rows one step per call (``until="step"``), each call continuing the last
             one's text, inside ``reuse_prefixes()`` (the KV cache kept across the steps of a row);
  generate   Hugging Face ``model.generate`` on the same prompts and batch (left-padded).
With ``--repeats N`` the three run N times, alternating, and each row is the median run.
Decode step cost (``--step-costs``): at each batch, whole continuations of 24 and of 4 new tokens;
the difference (the median of 3 such pairs) is 20 decode steps with every row in the batch (a row
stops earlier only at eos), so it gives what one step costs at that many rows: a step call whose
rows wait for its longest step pays the 1-row cost for every step only that row still takes.
Decode-step bound (with ``--step-costs`` that include 1 and the largest of ``--batches``): the
whole and stepwise runs' calls re-timed as nothing but their decode steps, each at the measured
cost of a step with that many live rows: what a sampler without prefill or per-call cost would
reach on those very calls, so how far the stepwise ratio can rise at all under this loop.
Labelling (Monte-Carlo rollouts of pi, the data a Best-of-K prover's labels are computed from):
one seed solution per problem, ``--rollouts`` rollouts from every prefix of it,
  pav        every prefix in one `HFPolicy.sample` call (prefixes encoded once, rows batched),
  naive      one ``model.generate`` call per prefix, its R rollouts as the batch (the prompt
             encoded R times), on the first ``--naive-prefixes`` prefixes.
Both draw each token with pav's keyed noise (`pav.policies.noise`: the generate loop through a
logits processor that turns the logits into the same exponential race), so their rollouts and
labels must be identical up to floating-point rounding in the logits; the script counts them.
Scoring beam candidates (a value head on the model as the verifier's backbone, ``--beam-problems``
problems, 4 kept prefixes of one step each and 3 candidate second steps per prefix, as a beam
search's second depth):
  whole      `ValueVerifier.values_of`: every candidate read from its first token;
  extend     `pav.verifier.extend.extend_values`: the first depth's candidates scored (their KV
             kept), then each second-depth candidate reads only its new step after its parent.
Their values must agree to rounding; tok/s counts every candidate token for both (what is scored).

    .venv/bin/python bench/real_model_bench.py --model /work/cache/smollm2-hf [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import statistics
import time

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHOTS = [(3, 4, 2), (6, 1, 8), (12, 9, 5)]
MAX_STEPS = 6
ANSWER = re.compile(r"The answer is (-?\d+)")
STEP_COST_REPEATS = 3  # a step's cost is the median of this many measurements (one is noisy on a shared VM)


def _worked(a: int, b: int, c: int) -> str:
    return f"Q: What is {a} + {b} - {c}?\n{a} + {b} = {a + b}\n{a + b} - {c} = {a + b - c}\nThe answer is {a + b - c}.\n\n"


def problems(n: int, seed: int) -> list[tuple[str, int]]:
    """(3-shot prompt, answer) pairs: a + b - c with operands below 20."""
    rng = random.Random(seed)
    header = "".join(_worked(*s) for s in SHOTS)
    out = []
    for _ in range(n):
        a, b, c = rng.randrange(20), rng.randrange(20), rng.randrange(20)
        out.append((header + f"Q: What is {a} + {b} - {c}?\n", a + b - c))
    return out


def is_final(line: str) -> bool:
    return line.startswith("The answer is")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _row(case: str, batch: int, tokens: int, seconds: float, **extra) -> dict:
    return {"case": case, "batch": batch, "tokens": tokens, "seconds": round(seconds, 2),
            "tok_s": round(tokens / seconds, 1), "peak_rss_mib": round(peak_rss_mib()), **extra}


def whole(policy, prompts: list[str], new_tokens: int) -> tuple[int, float, list[list[int]]]:
    """Tokens, seconds, and the tokens of each row of each sampler call (one call)."""
    start = time.perf_counter()
    batch = policy.sample(prompts, 1, until="solution", max_steps=10**6, max_new_tokens=new_tokens,
                          seed=list(range(len(prompts))))
    return batch.generated_tokens, time.perf_counter() - start, [[g.n_tokens for (g,) in batch.generations]]


def stepwise(policy, prompts: list[str], new_tokens: int) -> tuple[int, float, list[list[int]]]:
    """Each row continued one step per call until it has ``new_tokens`` tokens or ends at eos; tokens,
    seconds, and the tokens of each row of each call."""
    texts, used, live = [""] * len(prompts), [0] * len(prompts), list(range(len(prompts)))
    calls = []
    start = time.perf_counter()
    with policy.reuse_prefixes():
        for call in range(10**6):
            if not live:
                break
            budget = min(new_tokens - used[i] for i in live)
            batch = policy.sample([prompts[i] + texts[i] for i in live], 1, until="step", max_steps=1,
                                  max_new_tokens=budget, seed=[1000 * call + i for i in live])
            calls.append([g.n_tokens for (g,) in batch.generations])
            still = []
            for i, (g,) in zip(live, batch.generations):
                texts[i] += g.text
                used[i] += g.n_tokens
                eos = g.finished and not g.text.endswith(policy.delimiter)
                if not eos and used[i] < new_tokens:
                    still.append(i)
            live = still
    return sum(used), time.perf_counter() - start, calls


def decode_bound(calls: list[list[int]], ms_per_step: dict[int, float]) -> float:
    """Seconds that the decode steps of ``calls`` (the tokens of each row of each sampler call) take
    at the measured cost of one step with that many live rows, linear between the measured batches,
    and nothing else: no prompt prefill, no per-call work. A call's step t runs the rows that sample
    a (t+1)-th token, so the call pays for every step its longest row takes."""
    xs = sorted(ms_per_step)
    ys = [ms_per_step[x] for x in xs]
    return sum(float(np.interp(sum(n > t for n in ns), xs, ys)) for ns in calls for t in range(max(ns))) / 1000


def bound_rows(traces: dict[int, dict[str, tuple[int, list[list[int]]]]], ms_per_step: dict[int, float]) -> list[dict]:
    """Whole and stepwise at each batch at the decode-step bound (`decode_bound`): what a sampler with
    no cost but its decode steps would reach on the very calls the measured rows made."""
    rows = []
    for b, trace in traces.items():
        (w_tokens, w_calls), (s_tokens, s_calls) = trace["whole"], trace["stepwise"]
        w_s, s_s = decode_bound(w_calls, ms_per_step), decode_bound(s_calls, ms_per_step)
        note = (f"stepwise / whole at the bound: {s_tokens / s_s / (w_tokens / w_s):.2f}; decode steps "
                f"{sum(max(ns) for ns in w_calls)} whole, {sum(max(ns) for ns in s_calls)} stepwise in {len(s_calls)} calls")
        rows += [_row("decode-step bound: whole", b, w_tokens, w_s, note=note),
                 _row("decode-step bound: stepwise", b, s_tokens, s_s, note=note)]
        print(rows[-2], rows[-1], sep="\n", flush=True)
    return rows


@torch.inference_mode()
def hf_generate(model, tok, prompts: list[str], new_tokens: int) -> tuple[int, float, list[list[int]]]:
    start = time.perf_counter()
    enc = tok(prompts, return_tensors="pt", padding=True, padding_side="left")
    out = model.generate(**enc, do_sample=True, max_new_tokens=new_tokens, top_k=0, pad_token_id=tok.pad_token_id)
    new = out[:, enc["input_ids"].shape[1]:]  # (B, T)
    eos = (new == tok.eos_token_id).int()
    ended = eos.cumsum(-1) - eos > 0  # tokens after a row's first eos are padding
    return int((~ended).sum()), time.perf_counter() - start, []


def _solution_steps(text: str) -> list[str]:
    return [line for line in text.split("\n") if line.strip()][:MAX_STEPS]


def _correct(steps: list[str], answer: int) -> bool:
    m = ANSWER.match(steps[-1]) if steps else None
    return bool(m) and int(m.group(1)) == answer


def label_items(policy, items: list[tuple[str, int]], new_tokens: int) -> list[tuple[str, int]]:
    """Every prefix (prompt + first h steps, h < steps) of one seed solution per problem."""
    seeds = policy.sample([p for p, _ in items], 1, until="solution", max_steps=MAX_STEPS, max_new_tokens=new_tokens,
                          seed=list(range(len(items))), is_final_step=is_final)
    out = []
    for (prompt, answer), (g,) in zip(items, seeds.generations):
        steps = _solution_steps(g.text)
        out += [(prompt + "".join(s + "\n" for s in steps[:h]), answer) for h in range(len(steps))]
    return out


def pav_labels(policy, prefixes: list[tuple[str, int]], rollouts: int, new_tokens: int):
    start = time.perf_counter()
    batch = policy.sample([c for c, _ in prefixes], rollouts, until="solution", max_steps=MAX_STEPS,
                          max_new_tokens=new_tokens, seed=[7000 + i for i in range(len(prefixes))], is_final_step=is_final)
    seconds = time.perf_counter() - start
    labels = [sum(_correct(_solution_steps(c[c.rindex("?\n") + 2:] + g.text), a) for g in row)
              for (c, a), row in zip(prefixes, batch.generations)]
    return labels, batch.texts, batch.generated_tokens, seconds


@torch.inference_mode()
def naive_labels(policy, prefixes: list[tuple[str, int]], rollouts: int, new_tokens: int):
    """One ``generate`` call per prefix with its rollouts as the batch, drawing with pav's keyed noise."""
    from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

    from pav.policies.base import scan_steps
    from pav.policies.noise import keyed_uniform, row_keys, step_salt

    model, tok = policy.model, policy.tokenizer

    class KeyedRace(LogitsProcessor):
        """Scores whose argmax is pav's keyed draw: log p - log E, E = -log U (U keyed by row and t)."""

        def __init__(self, keys, start):
            self.keys, self.start = keys, start

        def __call__(self, input_ids, scores):
            u = keyed_uniform(step_salt(self.keys, input_ids.shape[1] - self.start), scores.shape[-1], torch.float32)
            logp = scores.float().masked_fill(policy._banned, -torch.inf).log_softmax(-1)
            return logp - (-u.log()).log()

    class SolutionDone(StoppingCriteria):
        def __init__(self, start):
            self.start = start

        def __call__(self, input_ids, scores, **kwargs):
            texts = tok.batch_decode(input_ids[:, self.start:], skip_special_tokens=True)
            return torch.tensor([scan_steps(t, 0, until="solution", delimiter="\n", max_steps=MAX_STEPS,
                                            is_final_step=is_final).end is not None for t in texts])

    labels, texts, tokens = [], [], 0
    start = time.perf_counter()
    for i, (context, answer) in enumerate(prefixes):
        ids = torch.tensor([tok(context)["input_ids"]] * rollouts)  # (R, T): the prompt encoded R times
        keys = row_keys([7000 + i] * rollouts, range(rollouts))
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
                             logits_processor=LogitsProcessorList([KeyedRace(keys, ids.shape[1])]),
                             stopping_criteria=StoppingCriteriaList([SolutionDone(ids.shape[1])]),
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        row_texts = []
        for row in out[:, ids.shape[1]:].tolist():
            n = row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
            text = tok.decode(row[:n], skip_special_tokens=True)
            end = scan_steps(text, 0, until="solution", delimiter="\n", max_steps=MAX_STEPS, is_final_step=is_final).end
            row_texts.append(text[:end] if end is not None else text)
            tokens += n if end is None else len(tok(row_texts[-1], add_special_tokens=False)["input_ids"])
        texts.append(row_texts)
        labels.append(sum(_correct(_solution_steps(context[context.rindex("?\n") + 2:] + t), answer) for t in row_texts))
    return labels, texts, tokens, time.perf_counter() - start


def beam_candidates(n_problems: int) -> tuple[list[str], list[tuple[str, ...]], list[str], list[tuple[str, ...]]]:
    """(prompts, steps) of a beam's first depth (4 first steps per problem) and second depth (3 next
    steps after each): arithmetic steps around the right ones, as a sampler would propose them."""
    first_p, first_s, second_p, second_s = [], [], [], []
    for (prompt, answer), (a, b, c) in zip(problems(n_problems, seed=7), _operands(n_problems, seed=7)):
        for d in range(4):
            step1 = f"{a} + {b} = {a + b + d}"
            first_p.append(prompt)
            first_s.append((step1,))
            for e in range(3):
                second_p.append(prompt)
                second_s.append((step1, f"{a + b + d} - {c} = {a + b + d - c + e}"))
    return first_p, first_s, second_p, second_s


def _operands(n: int, seed: int) -> list[tuple[int, int, int]]:
    rng = random.Random(seed)
    return [(rng.randrange(20), rng.randrange(20), rng.randrange(20)) for _ in range(n)]


def scoring_rows(model, tok, n_problems: int) -> list[dict]:
    """Beam candidates scored whole vs extending their parents' KV (see the module docstring)."""
    import numpy as np

    from pav.verifier.extend import extend_values
    from pav.verifier.model import ValueVerifier

    verifier = ValueVerifier(model, tok, delimiter="\n", seed=0)
    first_p, first_s, second_p, second_s = beam_candidates(n_problems)
    first, second = verifier.encode_many(first_p, first_s), verifier.encode_many(second_p, second_s)
    tokens = sum(len(e.input_ids) for e in second)
    start = time.perf_counter()
    whole = verifier.values_of(second, batch_size=32)
    t_whole = time.perf_counter() - start
    _, store = extend_values(verifier, first, {}, batch_size=32)
    start = time.perf_counter()
    extended, _ = extend_values(verifier, second, store, batch_size=32)
    t_extend = time.perf_counter() - start
    gap = max(float(np.abs(a - b).max()) for a, b in zip(whole, extended))
    note = f"{len(second)} second-depth candidates of {n_problems} problems; largest value difference {gap:.1e}"
    return [_row("score beam candidates: whole", 32, tokens, t_whole, note=note),
            _row("score beam candidates: extend the parent's KV", 32, tokens, t_extend, note=note)]


def step_cost_rows(model, tok, batches: list[int]) -> list[dict]:
    """What one decode step costs with every row of the batch live (see the module docstring)."""
    from pav.policies.hf import HFPolicy

    rows = []
    for b in batches:
        policy = HFPolicy(model, tok, "bench", batch_size=b)
        prompts = [p for p, _ in problems(b, seed=b)]
        whole(policy, prompts[:1], 2)  # warm-up
        spans = []
        for _ in range(STEP_COST_REPEATS):
            _, long, _ = whole(policy, prompts, 24)
            _, short, _ = whole(policy, prompts, 4)
            spans.append(long - short)
        span = statistics.median(spans)
        rows.append(_row("decode step, every row live", b, 20 * b, span, ms_per_step=round(span / 20 * 1000, 1),
                         note=f"{span / 20 * 1000:.0f} ms per step (median of {STEP_COST_REPEATS})"))
        print(rows[-1], flush=True)
    return rows


def run(model_dir: str, batches: list[int], new_tokens: int, n_problems: int, rollouts: int, naive_prefixes: int,
        threads: int, dtype: str | None = None, beam_problems: int = 0, step_costs: list[int] = (),
        repeats: int = 1) -> list[dict]:
    from pav.policies.hf import HFPolicy, load_causal_lm

    torch.set_num_threads(threads)
    model, tok = load_causal_lm(model_dir, dtype=dtype)
    rows = []
    traces: dict[int, dict[str, tuple[int, list[list[int]]]]] = {}  # batch -> mode -> (tokens, each call's rows)
    for b in batches:
        policy = HFPolicy(model, tok, "bench", batch_size=b)
        prompts = [p for p, _ in problems(b, seed=b)]
        whole(policy, prompts[:2], 4)  # warm-up
        cases = (("whole", "pav whole", lambda: whole(policy, prompts, new_tokens)),
                 ("stepwise", "pav stepwise (KV kept across steps)", lambda: stepwise(policy, prompts, new_tokens)),
                 ("generate", "HF generate", lambda: hf_generate(model, tok, prompts, new_tokens)))
        runs: dict[str, list[tuple[int, float]]] = {}
        for _ in range(repeats):  # the cases alternate, so a slow spell of the machine hits them alike
            for mode, _, fn in cases:
                tokens, seconds, calls = fn()
                if mode != "generate":  # the bound's input: the same calls every time (keyed seeds)
                    traces.setdefault(b, {})[mode] = (tokens, calls)
                runs.setdefault(mode, []).append((tokens, seconds))
        for mode, case, _ in cases:
            speeds = sorted(runs[mode], key=lambda r: r[0] / r[1])
            tokens, seconds = speeds[len(speeds) // 2]
            note = "" if repeats == 1 else (f"median of {repeats} runs: {speeds[0][0] / speeds[0][1]:.1f}-"
                                            f"{speeds[-1][0] / speeds[-1][1]:.1f} tok/s")
            rows.append(_row(case, b, tokens, seconds, **({"note": note} if note else {})))
            print(rows[-1], flush=True)
    if n_problems:
        policy = HFPolicy(model, tok, "bench", batch_size=256)  # all rollouts of many prefixes in flight
        prefixes = label_items(policy, problems(n_problems, seed=0), 96)
        a_labels, a_texts, a_tokens, a_s = pav_labels(policy, prefixes, rollouts, 96)
        sub = prefixes[:naive_prefixes]
        b_labels, b_texts, b_tokens, b_s = naive_labels(policy, sub, rollouts, 96)
        same_labels = sum(x == y for x, y in zip(a_labels, b_labels))
        same_rollouts = sum(x == y for row_a, row_b in zip(a_texts, b_texts) for x, y in zip(row_a, row_b))
        note = (f"{len(prefixes)} prefixes of {n_problems} problems x {rollouts}; naive on {len(sub)}: identical labels "
                f"{same_labels}/{len(sub)}, identical rollouts {same_rollouts}/{len(sub) * rollouts}")
        rows.append(_row("label: pav (all prefixes, one call)", 256, a_tokens, a_s, note=note))
        rows.append(_row("label: naive generate per prefix", rollouts, b_tokens, b_s, note=note))
        print(rows[-2], rows[-1], sep="\n", flush=True)
    if beam_problems:
        rows += scoring_rows(model, tok, beam_problems)
        print(rows[-2], rows[-1], sep="\n", flush=True)
    if step_costs:
        costs = step_cost_rows(model, tok, step_costs)  # printed one by one as they are measured
        rows += costs
        if 1 in step_costs and traces and max(traces) <= max(step_costs):
            rows += bound_rows(traces, {r["batch"]: r["ms_per_step"] for r in costs})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="/work/cache/smollm2-hf", help="a Hugging Face model folder (or .gguf file)")
    ap.add_argument("--batches", default="16,64", help="comma-separated batch sizes (empty: skip the sampling cases)")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--problems", type=int, default=50, help="labelling problems (0: skip labelling)")
    ap.add_argument("--rollouts", type=int, default=8)
    ap.add_argument("--naive-prefixes", type=int, default=20)
    ap.add_argument("--beam-problems", type=int, default=8, help="problems of the beam-scoring case (0: skip it)")
    ap.add_argument("--step-costs", default="", help="comma-separated batch sizes for the decode step cost case")
    ap.add_argument("--repeats", type=int, default=1,
                    help="runs of each sampling case, alternating; a row reports the median (a noisy machine: 3)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default=None, help="float32, bfloat16 (default: the checkpoint's)")
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    rows = run(args.model, [int(b) for b in args.batches.split(",") if b], args.new_tokens, args.problems, args.rollouts,
               args.naive_prefixes, args.threads, args.dtype, args.beam_problems,
               [int(b) for b in args.step_costs.split(",") if b], args.repeats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
