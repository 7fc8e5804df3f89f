"""The safe grader's table of figures: accuracy on the grading corpus, latency, injection, blow-ups, threads.

Prints Markdown tables (docs/grading.md quotes them):
  1. the labelled grading corpus tests/tasks/data/grading_corpus.jsonl, per category: agreement with
     the labels, false positives (a wrong answer graded correct) and false negatives, for pav's
     grader (default `AnswerPolicy`) and for plain math-verify (its default ``parse`` + ``verify``,
     in this process; as given, and with each answer put inside ``$...$``); then the rows that set a
     non-default policy, graded by pav under it;
  2. latency per call through the worker pool (p50/p99, all workers busy) and calls/s, on fresh
     workers (first pass) and again (second pass); plain math-verify's per-call time beside it;
  3. the code-injection payloads of tests/tasks/data/injection_payloads.jsonl, each as prediction
     and as gold: verdict counts, whether the sentinel file appeared, operations the workers'
     audit hook refused;
  4. pathological answers: time to the verdict (bound: deadline + 1 s) and of the next normal call;
  5. the 1,000 pairs of tests/tasks/data/thread_pairs.jsonl graded on one thread and from 8 threads:
     identical verdicts?, pairs/s.

    .venv/bin/python bench/grader_table.py [--workers 2] [--deadline 5]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pav.tasks.answer_forms import AnswerPolicy
from pav.tasks.grader import MathGrader, verdict_table

DATA = Path(__file__).resolve().parents[1] / "tests" / "tasks" / "data"
PATHOLOGICAL = {"9^{9^{9^9}}": "9^{9^{9^9}}", "5,000 nested braces": "{" * 5000 + "1" + "}" * 5000,
                "1 MB answer": "1" * 1_000_000}


def _md(text: str, width: int = 40) -> str:
    text = text.replace("|", "\\|").replace("\n", "⏎")
    return "`" + (text if len(text) <= width else text[: width - 1] + "…") + "`"


def corpus() -> list[dict]:
    return [json.loads(line) for line in (DATA / "grading_corpus.jsonl").read_text().splitlines()]


def plain_math_verify(pred: str, gold: str, dollars: bool = False) -> tuple[bool, float]:
    """math-verify as its README calls it: ``verify(parse(gold), parse(pred))``, all defaults; (verdict, s).

    ``dollars``: each answer without a ``$`` goes inside ``$...$`` first (math-verify's LaTeX extraction
    looks for math mode, so bare ``\\frac{1}{2}`` is otherwise read as a plain expression or not at all).
    """
    from math_verify import parse, verify

    if dollars:
        pred, gold = (t if "$" in t else f"${t}$" for t in (pred, gold))
    start = time.perf_counter()
    try:
        ok = bool(verify(parse(gold), parse(pred)))
    except Exception:  # plain math-verify raising counts as "not correct", as in its own reward functions
        ok = False
    return ok, time.perf_counter() - start


def _counts(rows: list[dict], said_correct: list[bool]) -> tuple[int, int, int]:
    """(agreeing, false positives, false negatives) of verdicts against the labels."""
    agree = sum((c["expect"] == "correct") == ok for c, ok in zip(rows, said_correct))
    fp = sum(c["expect"] == "incorrect" and ok for c, ok in zip(rows, said_correct))
    fn = sum(c["expect"] == "correct" and not ok for c, ok in zip(rows, said_correct))
    return agree, fp, fn


def corpus_table(workers: int, deadline: float) -> None:
    rows = [c for c in corpus() if "policy" not in c]
    with MathGrader(workers=workers, deadline_s=deadline) as grader:
        pav = [g.correct for g in grader.grade_many([(c["pred"], c["gold"]) for c in rows])]
    plain = [plain_math_verify(c["pred"], c["gold"])[0] for c in rows]
    dollars = [plain_math_verify(c["pred"], c["gold"], dollars=True)[0] for c in rows]
    by_cat: dict[str, list[int]] = defaultdict(list)
    for i, c in enumerate(rows):
        by_cat[c["category"]].append(i)
    negatives = sum(c["expect"] == "incorrect" for c in rows)
    print(f"## 1. Grading corpus: {len(rows)} labelled pairs ({negatives} hard negatives), default policy "
          f"{AnswerPolicy()}\n")
    print("| category | pairs (neg.) | pav agree | FP | FN | math-verify agree | FP | FN | "
          "math-verify, answers in $…$ | FP | FN |\n|---|---|---|---|---|---|---|---|---|---|---|")
    for cat, idx in [*sorted(by_cat.items()), ("**all**", list(range(len(rows))))]:
        sub = [rows[i] for i in idx]
        a, fp, fn = _counts(sub, [pav[i] for i in idx])
        neg = sum(c["expect"] == "incorrect" for c in sub)
        cells = []
        for verdicts in (pav, plain, dollars):
            a, fp, fn = _counts(sub, [verdicts[i] for i in idx])
            cells.append(f"{a}/{len(sub)} ({100 * a / len(sub):.1f}%) | {fp} | {fn}")
        print(f"| {cat} | {len(sub)} ({neg}) | " + " | ".join(cells) + " |")
    print("\npav disagrees with the label on:\n")
    for c, ok in zip(rows, pav):
        if (c["expect"] == "correct") != ok:
            print(f"- {c['category']}: pred {_md(c['pred'])} gold {_md(c['gold'])}, label {c['expect']}")
    policy_rows = [c for c in corpus() if "policy" in c]
    print(f"\nRows with a non-default policy ({len(policy_rows)}):\n")
    print("| policy | pred | gold | label | pav |\n|---|---|---|---|---|")
    for key in sorted({json.dumps(c["policy"], sort_keys=True) for c in policy_rows}):
        mine = [c for c in policy_rows if json.dumps(c["policy"], sort_keys=True) == key]
        with MathGrader(workers=1, deadline_s=deadline, policy=AnswerPolicy(**json.loads(key))) as grader:
            for c in mine:
                got = grader.grade(c["pred"], c["gold"]).verdict.value
                mark = "" if got == c["expect"] else " ✗"
                print(f"| {key} | {_md(c['pred'])} | {_md(c['gold'])} | {c['expect']} | {got}{mark} |")
    print()


def _quantiles_ms(seconds: list[float]) -> str:
    cuts = statistics.quantiles(seconds, n=100, method="inclusive")
    return f"{1000 * statistics.median(seconds):.1f} | {1000 * cuts[98]:.1f} | {1000 * max(seconds):.0f}"


def latency_table(workers: int, deadline: float) -> None:
    pairs = [(c["pred"], c["gold"]) for c in corpus() if "policy" not in c]
    print(f"## 2. Latency per call, {len(pairs)} corpus pairs, {workers} workers all busy\n")
    print("| grader | pass | p50 ms | p99 ms | max ms | calls/s |\n|---|---|---|---|---|---|")
    with MathGrader(workers=workers, deadline_s=deadline) as grader:
        for name in ("first (fresh workers)", "second"):
            start = time.perf_counter()
            grades = grader.grade_many(pairs)
            wall = time.perf_counter() - start
            print(f"| pav, pool of {workers} | {name} | {_quantiles_ms([g.seconds for g in grades])} | "
                  f"{len(pairs) / wall:.0f} |")
        timeouts = grader.counters["ungraded-timeout"]
    seconds = [plain_math_verify(p, g)[1] for p, g in pairs]
    print(f"| plain math-verify, this process, 1 thread | after section 1 | {_quantiles_ms(seconds)} | "
          f"{len(pairs) / sum(seconds):.0f} |")
    print(f"\npav timeouts: {timeouts}\n")


def injection_table(grader: MathGrader) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sentinel = Path(tmp) / "SENTINEL"
        rows = (DATA / "injection_payloads.jsonl").read_text().splitlines()
        texts = [json.loads(line)["payload"].replace("SENT", str(sentinel)) for line in rows]
        blocked = grader.counters["blocked_operations"]
        as_pred = grader.grade_many([(t, "1") for t in texts])
        as_gold = grader.grade_many([("1", t) for t in texts])
        print(f"## 3. {len(texts)} code-injection payloads\n")
        print("| payload as | verdicts | sentinel file created | operations refused by the audit hook |\n|---|---|---|---|")
        for name, grades in (("prediction", as_pred), ("gold", as_gold)):
            counts = {k: v for k, v in verdict_table(grades).items() if v}
            print(f"| {name} | {counts} | {sentinel.exists()} | {grader.counters['blocked_operations'] - blocked} |")
        print("\nPass: no sentinel, nothing refused (nothing even tried), every verdict typed.\n")


def pathological_table(grader: MathGrader) -> None:
    print(f"## 4. Pathological answers (deadline {grader.deadline_s:g} s)\n")
    print("| answer | verdict | detail | s to verdict | bound | next normal call, s |\n|---|---|---|---|---|---|")
    for name, text in PATHOLOGICAL.items():
        got = grader.grade(text, "1")
        nxt = grader.grade("\\frac{1}{2}", "0.5")
        ok = "✓" if got.seconds <= grader.deadline_s + 1 else "✗"
        print(f"| {name} | {got.verdict.value} | {got.detail} | {got.seconds:.2f} | {ok} ≤ {grader.deadline_s + 1:g} | "
              f"{nxt.seconds:.3f} ({nxt.verdict.value}) |")
    print(f"\nworker restarts so far: {grader.counters['worker_restarts']}\n")


def threads_table(grader: MathGrader) -> None:
    rows = [json.loads(line) for line in (DATA / "thread_pairs.jsonl").read_text().splitlines()]
    pairs = [(r["pred"], r["gold"]) for r in rows]
    start = time.perf_counter()
    single = [grader.grade(p, g).verdict for p, g in pairs]
    t1 = time.perf_counter() - start
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=8) as pool:
        threaded = list(pool.map(lambda pg: grader.grade(*pg).verdict, pairs))
    t8 = time.perf_counter() - start
    print("## 5. 1,000 pairs, one thread vs 8 threads\n")
    print("| run | pairs/s | verdicts identical to one thread |\n|---|---|---|")
    print(f"| 1 thread | {len(pairs) / t1:.0f} | — |")
    print(f"| 8 threads ({len(grader._all)} workers) | {len(pairs) / t8:.0f} | {threaded == single} |\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2, help="grading worker processes")
    ap.add_argument("--deadline", type=float, default=5.0, help="seconds per call before ungraded-timeout")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # plain math-verify warns on every unparsable answer
    corpus_table(args.workers, args.deadline)
    latency_table(args.workers, args.deadline)
    with MathGrader(workers=args.workers, deadline_s=args.deadline) as grader:
        injection_table(grader)
        pathological_table(grader)
        threads_table(grader)
        print(f"counters: {dict(grader.counters)}")


if __name__ == "__main__":
    main()
