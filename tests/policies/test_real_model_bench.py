"""bench/real_model_bench.py's decode-step bound: the calls' decode steps at the measured step costs."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "real_model_bench.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("real_model_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_call_pays_every_step_of_its_longest_row_at_the_live_rows_cost(bench):
    costs = {1: 10.0, 3: 30.0}  # ms per step; 2 rows: 20 ms, between the two
    # call 1: rows of 3 and 1 tokens: a 2-row step, then two 1-row steps; call 2: one row, 2 steps
    assert bench.decode_bound([[3, 1], [2]], costs) == pytest.approx((20 + 10 + 10 + 10 + 10) / 1000)
    assert bench.decode_bound([[2, 2, 2]], costs) == pytest.approx(2 * 30 / 1000)


def test_bound_rows_compare_stepwise_with_whole_on_the_same_rows(bench):
    costs = {1: 10.0, 2: 16.0}
    rows = bench.bound_rows({2: {"whole": (8, [[4, 4]]), "stepwise": (8, [[2, 1], [2, 3]])}}, costs)
    whole, step = rows
    # whole: 4 two-row steps, 64 ms; stepwise: 16 + 10, then 16 + 16 + 10 = 68 ms; 64 / 68 = 0.94
    assert whole["seconds"] == pytest.approx(0.064, abs=0.005) and step["seconds"] == pytest.approx(0.068, abs=0.005)
    assert "stepwise / whole at the bound: 0.94" in step["note"]
    assert "decode steps 4 whole, 5 stepwise in 2 calls" in step["note"]
