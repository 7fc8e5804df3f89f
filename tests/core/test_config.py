"""Config machinery: coercion, unknown keys, presets, save/load, resolve order, revalidation."""

from __future__ import annotations  # annotations are strings: get_type_hints must resolve them

import dataclasses
from pathlib import Path
from typing import Any, Literal, Optional

import pytest

from pav.core.config import (
    ConfigError, apply_overrides, describe, flatten, knob, load_config, load_preset,
    parse_cli_overrides, resolve, save_config,
)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    lr: float = knob(1e-3, "learning rate")
    name: Literal["adam", "sgd"] = knob("adam", "optimizer")
    betas: tuple[float, ...] = knob((0.9, 0.999), "Adam betas")

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    iterations: int = knob(10, "training iterations")
    use_cache: bool = knob(False, "reuse cached rollouts")
    run_name: str = knob("toy", "name of the run")
    widths: tuple[int, ...] = knob((1, 2), "layer widths")
    shape: tuple[int, str] = knob((3, "x"), "a fixed-length pair")
    max_len: int | None = knob(None, "token limit; none = unlimited")
    temperature: Optional[float] = knob(1.0, "sampling temperature")
    tags: list[str] = knob([], "free-form tags")
    out: Path = knob(Path("runs"), "output folder")
    optim: OptimConfig = knob(OptimConfig, "optimizer settings")
    lr_per_iteration: float = dataclasses.field(init=False)  # derived, not a knob

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}")
        object.__setattr__(self, "lr_per_iteration", self.optim.lr / self.iterations)


@pytest.mark.parametrize("key, value, expected", [
    ("iterations", "500", 500),
    ("iterations", " 1_000 ", 1000),
    ("iterations", 7, 7),
    ("use_cache", "true", True),
    ("use_cache", "Yes", True),
    ("use_cache", "0", False),
    ("use_cache", False, False),
    ("run_name", "adam", "adam"),
    ("run_name", "", ""),
    ("widths", "1,2,4", (1, 2, 4)),
    ("widths", "[1, 2, 4]", (1, 2, 4)),
    ("widths", "[]", ()),
    ("widths", "", ()),
    ("widths", [8, 16], (8, 16)),
    ("shape", "5, y", (5, "y")),
    ("max_len", "none", None),
    ("max_len", "None", None),
    ("max_len", "128", 128),
    ("max_len", None, None),
    ("temperature", "0.7", 0.7),
    ("temperature", "null", None),
    ("tags", "a, 'b c'", ["a", "b c"]),
    ("tags", ["x"], ["x"]),
    ("out", "elsewhere/run", Path("elsewhere/run")),
    ("optim.lr", "1e-3", 1e-3),
    ("optim.lr", 2, 2.0),
    ("optim.lr", "inf", float("inf")),
    ("optim.name", "sgd", "sgd"),
    ("optim.betas", "0.5, 0.6", (0.5, 0.6)),
])
def test_coercion(key, value, expected):
    cfg = apply_overrides(ToyConfig(), {key: value})
    got = flatten(cfg)[key]
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize("key, value, message", [
    ("iterations", "ten", "config key 'iterations': expected int, got 'ten' (must be an int)"),
    ("iterations", "1.5", "config key 'iterations': expected int, got '1.5' (must be an int)"),
    ("iterations", True, "config key 'iterations': expected int, got True (must be an int)"),
    ("iterations", 2.0, "config key 'iterations': expected int, got 2.0 (must be an int)"),
    ("use_cache", "maybe", "config key 'use_cache': expected bool, got 'maybe' "
                           "(must be a bool (true/false))"),
    ("use_cache", 1, "config key 'use_cache': expected bool, got 1 (must be a bool (true/false))"),
    ("run_name", 3, "config key 'run_name': expected str, got 3 (must be a str, got int)"),
    ("optim.name", "rmsprop", "config key 'optim.name': expected Literal['adam', 'sgd'], got 'rmsprop' "
                              "(must be one of 'adam', 'sgd')"),
    ("optim.lr", "nan", "config key 'optim.lr': expected float, got 'nan' (must not be nan)"),
    ("widths", "1,x", "config key 'widths': expected tuple[int, ...], got '1,x' (must be an int)"),
    ("widths", 3, "config key 'widths': expected tuple[int, ...], got 3 (must be a list, got int)"),
    ("shape", "1", "config key 'shape': expected tuple[int, str], got '1' "
                   "(must have exactly 2 items, got 1)"),
    ("max_len", "lots", "config key 'max_len': expected int | None, got 'lots' (must be an int)"),
])
def test_bad_values(key, value, message):
    with pytest.raises(ConfigError) as info:
        apply_overrides(ToyConfig(), {key: value})
    assert str(info.value) == message


@pytest.mark.parametrize("key, message", [
    ("iteration", "unknown config key 'iteration' for ToyConfig; did you mean iterations?"),
    ("optim.learning_rate", "unknown config key 'optim.learning_rate' for ToyConfig; "
                            "see --show-config for the valid keys"),
    ("lr", "unknown config key 'lr' for ToyConfig; did you mean optim.lr?"),
    ("optim.nme", "unknown config key 'optim.nme' for ToyConfig; did you mean optim.name?"),
    ("optim", "config key 'optim' of ToyConfig is a section; set one of its keys, e.g. optim.lr"),
    ("iterations.x", "unknown config key 'iterations.x' for ToyConfig; did you mean iterations?"),
])
def test_unknown_key_suggests(key, message):
    with pytest.raises(ConfigError) as info:
        apply_overrides(ToyConfig(), {key: "1"})
    assert str(info.value) == message


def test_overrides_return_new_config_and_rerun_post_init():
    cfg = ToyConfig()
    new = apply_overrides(cfg, {"optim.lr": "0.5"})
    assert new is not cfg and new.optim.lr == 0.5 and cfg.optim.lr == 1e-3
    same = apply_overrides(cfg, {})
    assert same == cfg and same is not cfg and same.optim is not cfg.optim  # always rebuilt
    with pytest.raises(ConfigError, match=r"^invalid OptimConfig: lr must be > 0, got -1.0$"):
        apply_overrides(cfg, {"optim.lr": "-1"})
    with pytest.raises(ConfigError, match=r"^invalid ToyConfig: iterations must be >= 1, got 0$"):
        apply_overrides(cfg, {"iterations": 0})


def test_nested_mapping_overrides_are_flattened():
    cfg = apply_overrides(ToyConfig(), {"optim": {"name": "sgd"}, "iterations": 3})
    assert (cfg.optim.name, cfg.iterations) == ("sgd", 3)


def test_knob_defaults_are_not_shared():
    a, b = ToyConfig(), ToyConfig()
    assert a.tags == [] and a.tags is not b.tags and a.optim is not b.optim
    field = {f.name: f for f in dataclasses.fields(ToyConfig)}["iterations"]
    assert field.metadata["help"] == "training iterations"


def test_flatten_and_describe():
    flat = flatten(ToyConfig())
    assert list(flat) == ["iterations", "use_cache", "run_name", "widths", "shape", "max_len",
                          "temperature", "tags", "out", "optim.lr", "optim.name", "optim.betas"]
    rows = {row[0]: row for row in describe(ToyConfig)}
    assert rows["optim.lr"] == ("optim.lr", "float", "0.001", "learning rate")
    assert rows["max_len"] == ("max_len", "int | None", "None", "token limit; none = unlimited")
    assert rows["temperature"][1] == "Optional[float]"
    assert rows["optim.name"][1] == "Literal['adam', 'sgd']"
    assert rows["widths"][1:3] == ("tuple[int, ...]", "(1, 2)")
    assert describe(apply_overrides(ToyConfig(), {"iterations": "3"}))[0][2] == "3"


def test_parse_cli_overrides():
    assert parse_cli_overrides(["a=1", "b.c = x=y", "a=2", "d="]) == {"a": "2", "b.c": " x=y", "d": ""}
    with pytest.raises(ConfigError, match="'iterations' is not of the form key=value"):
        parse_cli_overrides(["iterations"])
    with pytest.raises(ConfigError, match="'=3' is not of the form key=value"):
        parse_cli_overrides(["=3"])


PRESET = """
iterations = 50
"optim.name" = "sgd"
[optim]
lr = 0.01
"""


def test_load_preset_from_path(tmp_path):
    path = tmp_path / "fast.toml"
    path.write_text(PRESET)
    expected = {"iterations": 50, "optim.name": "sgd", "optim.lr": 0.01}
    assert load_preset(path) == load_preset(str(path)) == expected
    with pytest.raises(ConfigError, match="cannot read preset file"):
        load_preset(tmp_path / "missing.toml")
    path.write_text("iterations = ")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_preset(path)


def test_load_preset_by_name_from_package(tmp_path, monkeypatch):
    package = tmp_path / "toy_presets_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "fast.toml").write_text(PRESET)
    (package / "paper.toml").write_text("iterations = 1000\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_preset("fast", presets_package="toy_presets_pkg")["optim.lr"] == 0.01
    message = r"^no preset named 'fsat'; did you mean fast\? available: fast, paper$"
    with pytest.raises(ConfigError, match=message):
        load_preset("fsat", presets_package="toy_presets_pkg")
    with pytest.raises(ConfigError, match="presets package 'no_such_pkg_xyz' not found"):
        load_preset("fast", presets_package="no_such_pkg_xyz")


def test_resolve_order_cli_beats_preset_beats_default(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(PRESET)
    cfg = resolve(ToyConfig, preset=path, overrides=["iterations=7"])
    assert cfg.iterations == 7  # CLI over preset
    assert cfg.optim.name == "sgd" and cfg.optim.lr == 0.01  # preset over default
    assert cfg.run_name == "toy"  # default
    assert resolve(ToyConfig, preset={"iterations": 3}, overrides={"iterations": "4"}).iterations == 4
    assert resolve(ToyConfig) == ToyConfig()


def test_resolve_names_the_preset_in_errors(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text("iteratons = 3\n")
    with pytest.raises(ConfigError, match=rf"^preset {path}: unknown config key 'iteratons'"):
        resolve(ToyConfig, preset=path)


def test_save_load_round_trip(tmp_path):
    cfg = apply_overrides(ToyConfig(), {
        "iterations": 3, "use_cache": True, "run_name": "ünï ☃", "widths": "", "max_len": None,
        "temperature": None, "tags": "a,b", "out": "x/y", "optim.lr": 0.1, "optim.betas": "0.1,0.2",
    })
    path = tmp_path / "cfg" / "config.toml"
    save_config(cfg, path)
    assert load_config(ToyConfig, path) == cfg
    text = path.read_text()
    assert "[optim]" in text and 'max_len = "none"' in text
    assert [p.name for p in path.parent.iterdir()] == ["config.toml"]


def test_load_config_rejects_unknown_keys(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("iterations = 3\n[optim]\nmomentum = 0.9\n")
    with pytest.raises(ConfigError, match="unknown config key 'optim.momentum'"):
        load_config(ToyConfig, path)


def test_unknown_key_in_wrong_section_is_found():
    with pytest.raises(ConfigError, match=r"did you mean optim.lr\?$"):
        apply_overrides(ToyConfig(), {"optm.lr": "1"})


def test_derived_values_follow_nested_overrides_and_are_not_knobs(tmp_path):
    cfg = apply_overrides(ToyConfig(), {"optim.lr": "0.5", "iterations": "5"})
    assert cfg.lr_per_iteration == 0.1
    assert apply_overrides(cfg, {"optim.lr": "1.0"}).lr_per_iteration == 0.2  # parent rebuilt too
    assert "lr_per_iteration" not in flatten(cfg)
    with pytest.raises(ConfigError, match="unknown config key 'lr_per_iteration'"):
        apply_overrides(cfg, {"lr_per_iteration": "1"})
    save_config(cfg, tmp_path / "c.toml")
    assert "lr_per_iteration" not in (tmp_path / "c.toml").read_text()


@dataclasses.dataclass(frozen=True)
class FactoryConfig:
    source: str = knob("a:make", "a factory")
    options: dict[str, Any] = knob({}, "its keyword arguments")


@dataclasses.dataclass(frozen=True)
class WithFactory:
    task: FactoryConfig = knob(FactoryConfig(), "the task")


def test_another_source_starts_its_options_afresh():
    preset = {"task": {"options": {"level": 1, "size": 2}}}
    assert resolve(WithFactory, preset, ["task.options.size=3"]).task.options == {"level": 1, "size": "3"}
    assert resolve(WithFactory, preset, ["task.source=a:make"]).task.options == {"level": 1, "size": 2}  # same factory
    other = resolve(WithFactory, preset, ["task.options.n=2", "task.source=b:make"]).task
    assert other == FactoryConfig("b:make", {"n": "2"})  # the preset's options were for a:make
    assert resolve(WithFactory, {"task": {"source": "b:make", "options": {"n": 1}}}).task.options == {"n": 1}
