"""`pav demo --show-config` prints only knobs the demo reads: changing any printed knob changes a
config a stage of the demo runs with; the keys the demo sets itself are neither printed nor settable."""

import dataclasses
import shutil
import typing

import pytest

import pav.rl.compare
import pav.rollouts.stage
import pav.search.stage
import pav.sft.stage
import pav.verifier.stage
from pav.core.config import ConfigError, apply_overrides, describe, flatten, resolve, set_by_stage
from pav.demo import pipeline
from pav.demo.pipeline import STAGES, DemoConfig
from pav.tasks.build import MATH

RUNNERS = ((pav.sft.stage, "run_sft"), (pav.rollouts.stage, "run_label"), (pav.verifier.stage, "run_train_verifier"),
           (pav.verifier.stage, "run_eval_verifier"), (pav.search.stage, "run_search"),
           (pav.rl.compare, "run_rl_compare"))


@pytest.fixture
def stage_configs(monkeypatch, tmp_path):
    """cfg -> the configs the demo's stages would run with (every stage function stubbed)."""
    seen: list[str] = []
    for module, name in RUNNERS:
        monkeypatch.setattr(module, name, lambda cfg, out, *a, _n=name, **k: seen.append(f"{_n}: {cfg!r}") or {})
    monkeypatch.setattr(pipeline, "read_verifiers", lambda cfg, root: {})  # the stubs write no summaries
    root = tmp_path / "demo"
    def run(cfg: DemoConfig) -> list[str]:
        seen.clear()
        shutil.rmtree(root, ignore_errors=True)  # the verifiers stage caches its jobs' results there
        for stage in STAGES:
            stage.run(dataclasses.replace(cfg, workers=0) if cfg.workers else cfg, root, False)
        return sorted(seen)

    return run


def _candidates(value, tp):
    """Other values a knob of type ``tp`` may take (the first valid one is used)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return [a for a in args if a != value]
    if value is None or type(None) in args:
        return [0.5, 2, "x"] if value is None else [None]
    if isinstance(value, bool):
        return [not value]
    if isinstance(value, (int, float)):
        return [value + 1, value * 2 + 1, value / 2, 0, 1, 0.5]
    if isinstance(value, str):
        return ["cuda", value + "x", "auto", "ray"]
    if isinstance(value, tuple):
        return [value[:-1], value + value[-1:], value[1:], (1,), (0.5, 0.9)] if value else [(1,)]
    if isinstance(value, dict):
        return [{**value, "x": 1}]
    return []


def test_every_printed_knob_changes_a_stage_config_of_the_demo(stage_configs):
    default = DemoConfig()
    base = stage_configs(default)
    types = {k: tp for k, tp in typing.get_type_hints(DemoConfig).items()}
    rows = describe(default)
    ignored = []
    for key, *_ in rows:
        if key == "workers":  # how many processes, not what they compute
            continue
        value = flatten(default)[key]
        tp = _field_type(key)
        candidates = [MATH] if key == "task.source" else _candidates(value, tp)
        for other in candidates:
            try:
                cfg = apply_overrides(default, {key: other, **({"rl_prover": "policy"} if key == "task.source" else {})})
            except (ConfigError, ValueError, TypeError):
                continue
            try:
                if stage_configs(cfg) != base:
                    break
            except ValueError:  # a value a stage refuses
                continue
        else:
            ignored.append(key)
    assert len(rows) > 150 and not ignored, ignored
    assert types  # DemoConfig's annotations resolve


def _field_type(key: str):
    cls = DemoConfig
    *path, last = key.split(".")
    for part in path:
        cls = typing.get_type_hints(cls)[part]
    return typing.get_type_hints(cls)[last]


def test_keys_the_demo_sets_itself_are_not_printed_and_not_settable():
    hidden = set_by_stage(DemoConfig)
    assert {"sft.task", "label.policy", "rl.rl.task", "rl.rl.reward", "rl.rl.seed"} <= set(hidden)
    printed = [key for key, *_ in describe(DemoConfig())]
    assert not [k for k in printed if any(k == h or k.startswith(h + ".") for h in hidden)]
    with pytest.raises(ConfigError, match="label.policy is set by the command itself"):
        resolve(DemoConfig, None, ["label.policy=elsewhere"])
    for name in ("demo_quick", "smollm2"):  # shipped presets set no hidden key
        resolve(DemoConfig, name)
    assert pipeline.DemoConfig is DemoConfig
