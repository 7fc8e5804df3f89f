"""ProcessBench: reading items, earliest-error prediction and the F1 metric, by hand."""

import json

import numpy as np
import pytest

from pav.tasks.math_data import MathDataError
from pav.verifier.processbench import earliest_error, processbench_metrics, read_processbench


def test_earliest_error_is_the_first_prefix_value_below_the_threshold():
    v = np.array([0.6, 0.7, 0.4, 0.9, 0.1])  # prefixes h = 0..4 of a 4-step solution
    assert earliest_error(v, 4, 0.5) == 1  # step 1 (0-based) ends prefix 2, value 0.4
    assert earliest_error(v, 4, 0.05) == -1
    assert earliest_error(v, 4, 0.95) == 0
    assert earliest_error(v[:3], 4, 0.3) == -1  # steps past the window are not below


def test_metrics_by_hand():
    labels = [2, 0, -1, -1, 1]
    preds = [2, 1, -1, 0, 1]  # erroneous: 2 of 3 exact; correct: 1 of 2
    m = processbench_metrics(labels, preds)
    assert m["acc_erroneous"] == pytest.approx(2 / 3) and m["acc_correct"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert (m["n_erroneous"], m["n_correct"]) == (3, 2)
    assert processbench_metrics([-1], [-1])["f1"] is None  # one side empty: no F1
    assert processbench_metrics([0, -1], [1, 0])["f1"] == 0.0


def test_reading_items_and_refusing_malformed_ones(tmp_path):
    good = {"id": "g-0", "problem": "1+1?", "steps": ["1+1=2", "The answer is 2."], "label": -1}
    (tmp_path / "pb.json").write_text(json.dumps([good, {**good, "id": "g-1", "label": 1}]))
    items = read_processbench(str(tmp_path / "pb.json"))
    assert [(i.item_id, i.label, len(i.steps)) for i in items] == [("g-0", -1, 2), ("g-1", 1, 2)]
    for bad in ({**good, "label": 2}, {**good, "steps": []}, {"problem": "x", "steps": ["a"]}):
        (tmp_path / "bad.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
        with pytest.raises(MathDataError, match="item 1"):
            read_processbench(str(tmp_path / "bad.jsonl"))
