"""The safe grader's table of figures: verdicts, injection payloads, blow-ups, threads.

Prints Markdown tables (paste them into a note):
  1. every (prediction, gold) pair of tests/tasks/data/grader_pairs.jsonl with the expected and the
     actual verdict and the time taken;
  2. the code-injection payloads of tests/tasks/data/injection_payloads.jsonl, each as prediction
     and as gold: verdict counts, whether the sentinel file appeared, operations the workers'
     audit hook refused;
  3. pathological answers: time to the verdict (bound: deadline + 1 s) and of the next normal call;
  4. the 1,000 pairs of tests/tasks/data/thread_pairs.jsonl graded on one thread and from 8 threads: identical verdicts?, pairs/s.

    .venv/bin/python bench/grader_table.py [--workers 2] [--deadline 5]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pav.tasks.grader import MathGrader, verdict_table

DATA = Path(__file__).resolve().parents[1] / "tests" / "tasks" / "data"
PATHOLOGICAL = {"9^{9^{9^9}}": "9^{9^{9^9}}", "5,000 nested braces": "{" * 5000 + "1" + "}" * 5000,
                "1 MB answer": "1" * 1_000_000}


def _md(text: str, width: int = 40) -> str:
    text = text.replace("|", "\\|").replace("\n", "⏎")
    return "`" + (text if len(text) <= width else text[: width - 1] + "…") + "`"


def pairs_table(grader: MathGrader) -> None:
    cases = [json.loads(line) for line in (DATA / "grader_pairs.jsonl").read_text().splitlines()]
    grades = grader.grade_many([(c["pred"], c["gold"]) for c in cases])
    print(f"## 1. Verdicts on {len(cases)} pairs\n")
    print("| # | category | prediction | gold | expected | verdict | ms |\n|---|---|---|---|---|---|---|")
    for i, (c, g) in enumerate(zip(cases, grades), 1):
        mark = "" if g.verdict.value == c["expect"] else " ✗"
        print(f"| {i} | {c['category']} | {_md(c['pred'])} | {_md(c['gold'])} | {c['expect']} | "
              f"{g.verdict.value}{mark} | {1000 * g.seconds:.1f} |")
    agree = sum(g.verdict.value == c["expect"] for c, g in zip(cases, grades))
    per_cat = Counter(c["category"] for c in cases)
    print(f"\n{agree}/{len(cases)} as expected; categories: " + ", ".join(f"{k} {v}" for k, v in per_cat.items()))
    print(f"verdicts: {verdict_table(grades)}\n")


def injection_table(grader: MathGrader) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sentinel = Path(tmp) / "SENTINEL"
        rows = (DATA / "injection_payloads.jsonl").read_text().splitlines()
        texts = [json.loads(line)["payload"].replace("SENT", str(sentinel)) for line in rows]
        blocked = grader.counters["blocked_operations"]
        as_pred = grader.grade_many([(t, "1") for t in texts])
        as_gold = grader.grade_many([("1", t) for t in texts])
        print(f"## 2. {len(texts)} code-injection payloads\n")
        print("| payload as | verdicts | sentinel file created | operations refused by the audit hook |\n|---|---|---|---|")
        for name, grades in (("prediction", as_pred), ("gold", as_gold)):
            counts = {k: v for k, v in verdict_table(grades).items() if v}
            print(f"| {name} | {counts} | {sentinel.exists()} | {grader.counters['blocked_operations'] - blocked} |")
        print("\nPass: no sentinel, nothing refused (nothing even tried), every verdict typed.\n")


def pathological_table(grader: MathGrader) -> None:
    print(f"## 3. Pathological answers (deadline {grader.deadline_s:g} s)\n")
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
    print("## 4. 1,000 pairs, one thread vs 8 threads\n")
    print("| run | pairs/s | verdicts identical to one thread |\n|---|---|---|")
    print(f"| 1 thread | {len(pairs) / t1:.0f} | — |")
    print(f"| 8 threads ({len(grader._all)} workers) | {len(pairs) / t8:.0f} | {threaded == single} |\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--deadline", type=float, default=5.0)
    args = ap.parse_args()
    with MathGrader(workers=args.workers, deadline_s=args.deadline) as grader:
        pairs_table(grader)
        injection_table(grader)
        pathological_table(grader)
        threads_table(grader)
        print(f"counters: {dict(grader.counters)}")


if __name__ == "__main__":
    main()
