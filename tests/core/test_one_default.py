"""One default per knob: the stage configs hold every default; no other dataclass repeats one."""

import dataclasses
import importlib
import pkgutil

import pav

SKIP = ("pav.serve.app", "pav.policies.vllm_backend")  # need optional extras (fastapi, vllm) to import


def _dataclasses() -> list[type]:
    found = {}
    for info in pkgutil.walk_packages(pav.__path__, "pav."):
        if info.name.startswith(SKIP) or info.ispkg:
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional extra that is not installed
            continue
        for obj in vars(module).values():
            if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == info.name:
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return list(found.values())


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def test_no_dataclass_repeats_a_default_that_a_stage_config_holds():
    classes = _dataclasses()
    knobs = {}  # (name, default) -> config holding it
    for cls in classes:
        for f in dataclasses.fields(cls):
            if "help" in f.metadata:
                knobs.setdefault((f.name, repr(_default(f))), f"{cls.__module__}.{cls.__qualname__}")
    repeats = []
    for cls in classes:
        for f in dataclasses.fields(cls):
            default = _default(f)
            if "help" in f.metadata or default is dataclasses.MISSING:
                continue
            holder = knobs.get((f.name, repr(default)))
            if holder is not None:
                repeats.append(f"{cls.__module__}.{cls.__qualname__}.{f.name} = {default!r} repeats {holder}")
    assert not repeats, repeats


def test_the_algorithm_settings_hold_no_defaults():
    from pav.didactic.train import RLSettings as DidacticRLSettings
    from pav.rl.train import RLSettings
    from pav.rollouts.label import LabelSettings, Sampling
    from pav.search.beam import BeamSettings

    for cls in (RLSettings, LabelSettings, Sampling, BeamSettings, DidacticRLSettings):
        assert all(_default(f) is dataclasses.MISSING for f in dataclasses.fields(cls)), cls
