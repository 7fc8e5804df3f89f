"""bench/paired_search.py: the paired PAV − PQV beam difference per run and pooled over runs."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "paired_search.py"


def _run(root: Path, name: str, pav: list[list[float]], pqv: list[list[float]], prover: str = "p") -> Path:
    run = root / name
    (run / "jobs").mkdir(parents=True)
    (run / "summary.json").write_text(json.dumps({"alpha": 0.1, "ns": [2, 4], "prover": prover, "k": 1}))
    for n, a, b in zip([2, 4], pav, pqv):
        (run / "jobs" / f"pav_beam_N{n}_a0.1.json").write_text(json.dumps({"outcomes": a}))
        (run / "jobs" / f"pqv_beam_N{n}.json").write_text(json.dumps({"outcomes": b}))
    return run


def _bench(*runs: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, runs)], capture_output=True, text=True, timeout=60)


def test_per_run_and_pooled_differences_match_a_hand_count(tmp_path):
    # run a, per-problem mean differences over N: (1+1)/2, (0+1)/2, (0+0)/2 → 1, 0.5, 0 ; run b: 0, -0.5
    a = _run(tmp_path, "a", [[1, 0, 0], [1, 1, 0]], [[0, 0, 0], [0, 0, 0]])
    b = _run(tmp_path, "b", [[0, 0], [1, 0]], [[0, 0], [1, 1]])
    res = _bench(a, b)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].endswith("+50.0 ± 28.9 points (1.7 SE) over 3 problems; N=2: +33.3, N=4: +66.7")
    assert "-25.0 ± 25.0 points" in lines[1] and "over 2 problems" in lines[1]
    # pooled over 5 problems: 1, 0.5, 0, 0, -0.5 → mean 0.2, sd 0.570 → SE 0.255
    assert lines[2].startswith("pooled: +20.0 ± 25.5 points (0.8 SE) over 5 problems")


def test_runs_of_different_provers_are_not_pooled(tmp_path):
    a = _run(tmp_path, "a", [[1, 0], [1, 1]], [[0, 0], [0, 0]])
    b = _run(tmp_path, "b", [[1, 0], [1, 1]], [[0, 0], [0, 0]], prover="other")
    res = _bench(a, b)
    assert res.returncode != 0 and "pool only runs of the same settings" in res.stderr


def test_a_run_without_per_problem_outcomes_is_refused(tmp_path):
    a = _run(tmp_path, "a", [[1, 0], [1, 1]], [[0, 0], [0, 0]])
    (a / "jobs" / "pqv_beam_N2.json").write_text(json.dumps({"accuracy": 0.5}))
    res = _bench(a)
    assert res.returncode != 0 and "no per-problem outcomes" in res.stderr
