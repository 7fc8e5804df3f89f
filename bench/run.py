"""pav's speed suite in one command: every case side by side in one process, written as JSON and as
a markdown table (docs/benchmarks.md shows one run's table).

    .venv/bin/python bench/run.py --quick [--model /work/cache/smollm2-hf] [--out bench/results]

Sections:
  search   step-level beam search on the built-in task with a random tiny GPT-2 policy and verifier
           (nothing to train first; the verifier has log-prob features, the default): batched with KV reuse by the policy and the scorer (today's
           search), batched with the scorer reading every candidate whole, batched with neither
           reusing (the search before reuse), and one problem at a time; the policy's tok/s inside
           its sampler calls, and the labeller's on the same policy. Outputs must agree.
  real     `real_model_bench.run` on ``--model`` (a Hugging Face folder; SmolLM2-135M-Instruct
           converted from its GGUF file in the docs): whole vs stepwise vs HF generate at each
           batch, and labelling vs naive per-prefix generate. Skipped, with a note, if the folder
           is missing.

Each row carries tok/s, the ratio the section compares, peak RSS so far, model, batch, threads;
the header the machine, its load average before and after (a shared machine makes absolute
figures noisy: compare ratios within one run), and library versions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import real_model_bench  # noqa: E402


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import transformers

    import pav

    return {"cpu": cpu, "cores": os.cpu_count(), "load_before": [round(x, 1) for x in os.getloadavg()],
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "pav": getattr(pav, "__version__", "?"), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def search_section(n_problems: int, widths: list[int], threads: int) -> list[dict]:
    from pav.policies.hf import HFPolicy, tiny_gpt2
    from pav.policies.tokenizer import build_char_tokenizer
    from pav.rollouts.label import context_of
    from pav.search.beam import BeamSettings, beam_search
    from pav.tasks.modreach import ModReach
    from pav.verifier.model import ValueVerifier
    from pav.verifier.scorer import VerifierScorer

    torch.set_num_threads(threads)
    tok = build_char_tokenizer()
    model = tiny_gpt2(len(tok), seed=3, eos_token_id=tok.eos_token_id)
    with torch.no_grad():  # a random policy that ends lines often, so solutions have several steps
        w = model.lm_head.weight[tok.convert_tokens_to_ids("\n")]
        model.transformer.ln_f.bias += 2.5 * w / w.square().sum()
    policy = HFPolicy(model, tok, "random", batch_size=256)
    reference = tiny_gpt2(len(tok), seed=5, eos_token_id=tok.eos_token_id)  # log-prob features, as `pav train-verifier`
    scorer = VerifierScorer(ValueVerifier(tiny_gpt2(len(tok), seed=4, eos_token_id=tok.eos_token_id), tok, seed=4,
                                          reference=reference), k=4)
    task = ModReach()
    problems = task.problems(n_problems, seed=1, split="heldout")
    sampled: list[tuple[int, float]] = []
    real_sample = policy.sample

    def timed(*a, **k):
        batch = real_sample(*a, **k)
        sampled.append((batch.generated_tokens, batch.seconds))
        return batch

    def search(probs, settings, reuse=True, extend=True):
        sampled.clear()
        policy.sample = timed
        if not reuse:
            policy.reuse_prefixes = contextlib.nullcontext
        if not extend:
            scorer.extending_prefixes = contextlib.nullcontext
        start = time.perf_counter()
        out = beam_search(policy, scorer, task, probs, settings, seed=5)
        seconds = time.perf_counter() - start
        del policy.sample
        policy.__dict__.pop("reuse_prefixes", None)
        scorer.__dict__.pop("extending_prefixes", None)
        return out, seconds, sum(n for n, _ in sampled), sum(s for _, s in sampled)

    rows = []
    for width in widths:
        settings = BeamSettings(width=width, candidates=3, alpha=0.5, max_steps=task.max_steps, step_tokens=32,
                                temperature=1.0, top_p=1.0, dedup=True)
        reused, t_reused, gen, s_gen = search(problems, settings)
        whole, t_whole, gen_whole, s_whole = search(problems, settings, extend=False)
        again, t_again, gen_again, s_again = search(problems, settings, reuse=False, extend=False)
        alone = [search([p], settings) for p in problems]
        t_alone = sum(a[1] for a in alone)
        same = sum(a.steps == b.steps == c.steps == d[0][0].steps for a, b, c, d in zip(reused, whole, again, alone))
        note = f"identical chosen solutions (reuse / scorer reads whole / re-encode / per problem): {same}/{len(problems)}"
        base = {"model": "random tiny GPT-2 (2 layers, n_embd 64)", "batch": 256, "threads": threads, "note": note}
        rows.append({**base, "case": f"search width {width}: batched, KV reused", "tok_s": round(gen / s_gen),
                     "seconds": round(t_reused, 2), "ratio": "1.00"})
        rows.append({**base, "case": f"search width {width}: batched, scorer reads every candidate whole",
                     "tok_s": round(gen_whole / s_whole), "seconds": round(t_whole, 2),
                     "ratio": f"{t_whole / t_reused:.2f}x slower"})
        rows.append({**base, "case": f"search width {width}: batched, prefixes re-encoded", "tok_s": round(gen_again / s_again),
                     "seconds": round(t_again, 2), "ratio": f"{t_again / t_reused:.2f}x slower"})
        rows.append({**base, "case": f"search width {width}: one problem at a time", "seconds": round(t_alone, 2),
                     "tok_s": round(sum(a[2] for a in alone) / sum(a[3] for a in alone)),
                     "ratio": f"{t_alone / t_reused:.2f}x slower"})
    items = [(p, ()) for p in problems]  # the labeller on the same policy: rollouts from every prompt
    start = time.perf_counter()
    batch = policy.sample([context_of(task, p, s) for p, s in items], 16, until="solution", max_steps=task.max_steps,
                          max_new_tokens=200, seed=0, is_final_step=task.is_final_step)
    rows.append({"model": rows[0]["model"], "batch": 256, "threads": threads, "case": "labeller: 16 rollouts per prompt",
                 "tok_s": round(batch.generated_tokens / batch.seconds), "seconds": round(time.perf_counter() - start, 2),
                 "ratio": "", "note": "the search's policy tok/s is compared with this"})
    for r in rows:
        r["peak_rss_mib"] = round(real_model_bench.peak_rss_mib())
        print(r, flush=True)
    return rows


def real_section(model: str, quick: bool, threads: int) -> list[dict]:
    if not Path(model).is_dir():
        return [{"case": "real model", "note": f"skipped: no model folder at {model}"}]
    sizes = dict(batches=[16], new_tokens=16, n_problems=4, rollouts=8, naive_prefixes=3) if quick else \
        dict(batches=[16, 64], new_tokens=64, n_problems=50, rollouts=8, naive_prefixes=20)
    rows = real_model_bench.run(model, threads=threads, **sizes)
    name = Path(model).name
    for r in rows:
        r.update(model=name, threads=threads)
    return with_ratios(rows)


def with_ratios(rows: list[dict]) -> list[dict]:
    """Each real-model row's tok/s over its group's first row: pav whole at the same batch, or pav's
    labelling for the labelling rows."""
    groups: dict = {}
    for r in rows:
        groups.setdefault("label" if r["case"].startswith("label") else r["batch"], []).append(r)
    for group in groups.values():
        for r in group:
            r["ratio"] = f"{r['tok_s'] / group[0]['tok_s']:.2f}"
    return rows


def markdown(meta: dict, rows: list[dict]) -> str:
    lines = [f"Machine: {meta['cpu']}, {meta['cores']} cores, load average {meta['load_before']} before and "
             f"{meta['load_after']} after the run (shared with other jobs: compare ratios within one run). "
             f"{meta['date']}; Python {meta['python']}, torch {meta['torch']}, transformers {meta['transformers']}.",
             "", "| case | model | batch | threads | tok/s | ratio | seconds | peak RSS MiB | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(str(r.get(k, "")) for k in ("case", "model", "batch", "threads", "tok_s", "ratio",
                                                                       "seconds", "peak_rss_mib", "note")) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (a few minutes on an idle 2-core machine)")
    ap.add_argument("--model", default="/work/cache/smollm2-hf", help="a Hugging Face folder for the real-model section")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="bench/results", help="folder for speed.json and speed.md")
    args = ap.parse_args()
    meta = machine()
    rows = search_section(8 if args.quick else 50, [4] if args.quick else [4, 16], 1)
    rows += real_section(args.model, args.quick, args.threads)
    meta["load_after"] = [round(x, 1) for x in os.getloadavg()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps({"machine": meta, "rows": rows}, indent=1))
    (out / "speed.md").write_text(markdown(meta, rows))
    print(markdown(meta, rows))


if __name__ == "__main__":
    main()
