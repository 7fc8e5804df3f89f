"""Metrics logger: one flushed JSON line per step, finite values only."""

import json
import math

import numpy as np
import pytest

from pav.core.metrics import MetricsLogger, read_metrics


def test_round_trip_and_layout(tmp_path):
    with MetricsLogger(tmp_path) as logger:
        logger.log(0, {"didactic/accuracy": 0.5, "didactic/n": 3})
        assert len(read_metrics(tmp_path)) == 1  # flushed before close
        logger.log(1, {"didactic/accuracy": np.float32(0.25), "didactic/n": np.int64(4)})
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [list(r) for r in rows] == [["step", "time", "didactic/accuracy", "didactic/n"]] * 2
    assert [(r["step"], r["didactic/accuracy"], r["didactic/n"]) for r in rows] == [(0, 0.5, 3), (1, 0.25, 4)]
    assert 0 <= rows[0]["time"] <= rows[1]["time"] < 60
    assert type(rows[1]["didactic/n"]) is int


def test_appends_to_existing_file(tmp_path):
    path = tmp_path / "m.jsonl"
    for step in range(2):
        with MetricsLogger(path) as logger:
            logger.log(step, {"rl/loss": 1.0})
    assert [r["step"] for r in read_metrics(path)] == [0, 1]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -math.inf, np.float64("nan")])
def test_rejects_non_finite_naming_the_key(tmp_path, value):
    with MetricsLogger(tmp_path) as logger:
        with pytest.raises(ValueError, match=r"^metric 'rl/loss' is not finite"):
            logger.log(0, {"rl/reward": 1.0, "rl/loss": value})
    assert (tmp_path / "metrics.jsonl").read_text() == ""  # nothing partial written


@pytest.mark.parametrize("step, metrics, message", [
    (0, {"step": 1.0}, "metric key 'step' is reserved"),
    (0, {"": 1.0}, "metric key must be a non-empty str"),
    (0, {"a/b": "high"}, "metric 'a/b' must be a real number, got str"),
    (0, {"a/b": True}, "metric 'a/b' must be a real number, got bool"),
    (1.5, {"a/b": 1.0}, "step must be an int"),
])
def test_rejects_bad_input(tmp_path, step, metrics, message):
    with MetricsLogger(tmp_path) as logger:
        with pytest.raises(ValueError, match=message):
            logger.log(step, metrics)


def test_read_skips_torn_last_line_but_not_a_bad_middle_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    good = json.dumps({"step": 0, "time": 0.0})
    path.write_text(good + "\n" + '{"step": 1, "ti')
    assert read_metrics(path) == [{"step": 0, "time": 0.0}]
    path.write_text('{"step": 1, "ti\n' + good + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl:1: invalid JSON"):
        read_metrics(path)
