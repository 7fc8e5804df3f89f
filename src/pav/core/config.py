"""Config machinery for "one dataclass per stage" (cleanrl style).

A stage declares its knobs as a dataclass whose fields are made with ``knob(default, help)``;
configs may nest (``DidacticConfig.rl: RLConfig``) and keys are dotted (``rl.iterations``). A config
is resolved as defaults -> preset (a TOML file of overrides) -> command-line ``key=value`` overrides.
Values are coerced by the field's annotation; unknown keys are errors that suggest the closest valid
keys. Every override goes through ``dataclasses.replace`` so the config's ``__post_init__``
validation reruns. ``None`` is spelled ``none`` on the command line and in saved TOML (TOML has no
null), so an ``Optional[str]`` knob cannot hold the literal string "none". A ``dict[str, Any]`` knob
is a free table (``task.options``): any key below it is accepted and kept as given (a command-line
string or a TOML value), for the code that reads the table to check and convert. A free table
``X.options`` holds the keyword arguments of the factory ``X.source`` names, so an override that
changes ``X.source`` starts ``X.options`` empty: a preset's options for the built-in task are not
handed to a user's task (``--quick --set task.source=mytask:make_task``).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.resources
import math
import tomllib
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import tomli_w

from pav.core.io import atomic_open

C = TypeVar("C")

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}
_NONE = {"none", "null"}


class ConfigError(ValueError):
    """A config key or value is invalid."""


def knob(default: Any, help: str) -> Any:
    """A config field with one line of ``help``.

    Mutable defaults (list, dict, set) and dataclass instances are copied per config; a dataclass
    *type* as default means "a fresh instance of it".
    """
    metadata = {"help": help}
    if isinstance(default, type) and dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=default, metadata=metadata)
    if isinstance(default, (list, dict, set)) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: _copy(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _copy(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return dataclasses.replace(value)
    return type(value)(value)


# ----------------------------------------------------------------------------------------------
# Introspection


def _knob_fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    """(field, resolved annotation) for each settable field of config class ``cls``."""
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"expected a dataclass type, got {cls!r}")
    hints = get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.init]


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _is_table(tp: Any) -> bool:
    """A free table knob: ``dict[str, Any]`` (keys below it are not declared)."""
    return get_origin(tp) is dict


def flatten(cfg: Any) -> dict[str, Any]:
    """Dotted key -> value for every knob of ``cfg`` (nested configs are walked)."""
    out: dict[str, Any] = {}
    for f, tp in _knob_fields(type(cfg)):
        value = getattr(cfg, f.name)
        if _is_section(tp):
            out.update({f"{f.name}.{k}": v for k, v in flatten(value).items()})
        else:
            out[f.name] = value
    return out


def _flat_fields(cls: type, prefix: str = "") -> dict[str, tuple[dataclasses.Field, Any]]:
    """Dotted key -> (field, annotation) for every leaf knob of ``cls``."""
    out: dict[str, tuple[dataclasses.Field, Any]] = {}
    for f, tp in _knob_fields(cls):
        key = prefix + f.name
        if _is_section(tp):
            out.update(_flat_fields(tp, key + "."))
        else:
            out[key] = (f, tp)
    return out


def type_name(tp: Any) -> str:
    """Readable name of an annotation: ``int``, ``tuple[int, ...]``, ``Literal['adam', 'sgd']``."""
    if isinstance(tp, type) and not get_args(tp):
        return tp.__name__
    return repr(tp).replace("typing.", "").replace("NoneType", "None")


def set_by_stage(cls: type, prefix: str = "") -> tuple[str, ...]:
    """Keys a config sets itself before its stage reads them (class attribute ``SET_BY_STAGE``,
    e.g. the demo's own task section replaces each stage's), nested configs' included: no knob,
    so `describe` leaves them out and `resolve` refuses an override of one."""
    keys = [prefix + k for k in getattr(cls, "SET_BY_STAGE", ())]
    for f, tp in _knob_fields(cls):
        if _is_section(tp):
            keys += set_by_stage(tp, f"{prefix}{f.name}.")
    return tuple(keys)


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def describe(cfg_or_type: Any) -> list[tuple[str, str, str, str]]:
    """Rows ``(key, type, value, help)`` for a ``--show-config`` table: the knobs the command reads.

    Given a config instance the value column shows its values; given a type, the defaults.
    """
    cfg = cfg_or_type() if isinstance(cfg_or_type, type) else cfg_or_type
    values, hidden = flatten(cfg), set_by_stage(type(cfg))
    return [
        (key, type_name(tp), repr(values[key]), f.metadata.get("help", ""))
        for key, (f, tp) in _flat_fields(type(cfg)).items() if not _under(key, hidden)
    ]


# ----------------------------------------------------------------------------------------------
# Coercion of override values by annotation


def coerce(value: Any, tp: Any) -> Any:
    """Convert a command-line string or TOML value to annotation ``tp``; ValueError if impossible."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (Union, types.UnionType):
        return _coerce_union(value, args)
    if origin is Literal:
        return _coerce_literal(value, args)
    if origin in (tuple, list):
        return _coerce_sequence(value, origin, args)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ValueError(f"must be a table, got {type(value).__name__}; set its keys one by one")
        return dict(value)
    scalar = _SCALARS.get(tp)
    if scalar is None:
        raise ValueError(f"unsupported config type {type_name(tp)}")
    return scalar(value)


def _coerce_union(value: Any, args: tuple[Any, ...]) -> Any:
    if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in _NONE)):
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return coerce(value, arg)
        except ValueError as exc:
            errors.append(str(exc))
    raise ValueError("; ".join(errors))


def _coerce_literal(value: Any, choices: tuple[Any, ...]) -> Any:
    for choice in choices:
        if type(value) is type(choice) and value == choice:
            return choice
    if isinstance(value, str):
        for choice in choices:
            if str(choice) == value.strip():
                return choice
    raise ValueError(f"must be one of {', '.join(map(repr, choices))}")


def _coerce_sequence(value: Any, origin: type, args: tuple[Any, ...]) -> Any:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            text = text[1:-1].strip()
        value = [_unquote(item.strip()) for item in text.split(",")] if text else []
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"must be a list, got {type(value).__name__}")
    if origin is tuple and args and args[-1] is not Ellipsis:  # fixed-length tuple[int, str]
        if len(value) != len(args):
            raise ValueError(f"must have exactly {len(args)} items, got {len(value)}")
        item_types = args
    else:
        item_types = (args[0] if args else str,) * len(value)
    return origin(coerce(item, tp) for item, tp in zip(value, item_types))


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _coerce_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("must be a bool (true/false)")


def _coerce_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError("must be an int")


def _coerce_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError("must be a float")
    try:
        result = float(value.strip() if isinstance(value, str) else value)
    except ValueError:
        raise ValueError("must be a float") from None
    if math.isnan(result):
        raise ValueError("must not be nan")
    return result


def _coerce_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a str, got {type(value).__name__}")
    return value


def _coerce_path(value: Any) -> Path:
    if not isinstance(value, (str, Path)):
        raise ValueError(f"must be a path, got {type(value).__name__}")
    return Path(value)


_SCALARS = {bool: _coerce_bool, int: _coerce_int, float: _coerce_float, str: _coerce_str, Path: _coerce_path}


# ----------------------------------------------------------------------------------------------
# Overrides


def _flatten_mapping(overrides: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            out.update(_flatten_mapping(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _unknown_key_error(key: str, cls: type) -> ConfigError:
    valid = list(_flat_fields(cls))
    sections = {k.rsplit(".", i)[0] for k in valid for i in range(1, k.count(".") + 1)}
    if key in sections:
        example = next(k for k in valid if k.startswith(key + "."))
        return ConfigError(f"config key {key!r} of {cls.__name__} is a section; "
                           f"set one of its keys, e.g. {example}")
    close = _closest_keys(key, valid)
    hint = f"did you mean {' or '.join(close)}?" if close else "see --show-config for the valid keys"
    return ConfigError(f"unknown config key {key!r} for {cls.__name__}; {hint}")


def _closest_keys(key: str, valid: list[str]) -> list[str]:
    """Up to three suggestions: a near leaf in the same section, the same leaf in another
    section, or a near full key (e.g. a misspelt section)."""
    section, _, leaf = key.rpartition(".")
    siblings = {k.rpartition(".")[2]: k for k in valid if k.rpartition(".")[0] == section}
    close = [siblings[m] for m in difflib.get_close_matches(leaf, siblings, n=3, cutoff=0.6)]
    close += [k for k in valid if k.rpartition(".")[2] == leaf]
    close += difflib.get_close_matches(key, valid, n=3, cutoff=0.8)
    return list(dict.fromkeys(close))[:3]


def apply_overrides(cfg: C, overrides: Mapping[str, Any]) -> C:
    """A new config with dotted-key ``overrides`` applied; ``__post_init__`` reruns at every level.

    Values may be command-line strings or typed (TOML) values; nested mappings are accepted too.
    """
    flat = _flatten_mapping(overrides)
    fields = _flat_fields(type(cfg))
    values = flatten(cfg)
    typed: dict[str, Any] = {}
    for key in [k for k in flat if k.rpartition(".")[2] == "source"]:
        options = key[: -len("source")] + "options"
        if options in fields and _is_table(fields[options][1]) and flat[key] != values[key]:
            typed[options] = {}  # another factory: options given for the one it replaces do not apply to it
    for key in list(flat):
        table = _table_of(key, fields)
        if table is not None:  # task.options.modulus=7: one entry of a free table, kept as given
            entries = typed.setdefault(table, dict(values[table]))
            _set_nested(entries, key[len(table) + 1:].split("."), flat.pop(key))
        elif key not in fields:
            raise _unknown_key_error(key, type(cfg))
    for key, value in flat.items():
        tp = fields[key][1]
        try:
            typed[key] = coerce(value, tp)
        except ValueError as exc:
            message = f"config key {key!r}: expected {type_name(tp)}, got {value!r} ({exc})"
            raise ConfigError(message) from None
    return _replace(cfg, typed)


def _table_of(key: str, fields: Mapping[str, tuple[dataclasses.Field, Any]]) -> str | None:
    """The free-table knob that ``key`` lies below (``task.options`` for ``task.options.a``), or None."""
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in fields and _is_table(fields[prefix][1]):
            return prefix
    return None


def _set_nested(table: dict[str, Any], path: list[str], value: Any) -> None:
    for part in path[:-1]:
        inner = table.get(part)
        table[part] = inner = dict(inner) if isinstance(inner, Mapping) else {}
        table = inner
    table[path[-1]] = value


def _replace(cfg: C, flat: Mapping[str, Any]) -> C:
    """``dataclasses.replace`` recursively; every nested config is rebuilt so its checks rerun."""
    changes: dict[str, Any] = {}
    for f, tp in _knob_fields(type(cfg)):
        if _is_section(tp):
            prefix = f.name + "."
            sub = {k[len(prefix):]: v for k, v in flat.items() if k.startswith(prefix)}
            changes[f.name] = _replace(getattr(cfg, f.name), sub)
        elif f.name in flat:
            changes[f.name] = flat[f.name]
    try:
        return dataclasses.replace(cfg, **changes)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"invalid {type(cfg).__name__}: {exc}") from exc


def parse_cli_overrides(items: Sequence[str]) -> dict[str, str]:
    """``["rl.iterations=500", "lr=1e-3"]`` -> ``{"rl.iterations": "500", "lr": "1e-3"}``; last wins."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        out[key.strip()] = value
    return out


# ----------------------------------------------------------------------------------------------
# Files


def load_preset(name_or_path: str | Path, presets_package: str = "pav.presets") -> dict[str, Any]:
    """Read a preset (TOML of overrides) as flat dotted keys.

    A name without ``.toml`` is looked up in ``presets_package``; anything else is a path on disk.
    """
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(".toml"):
        try:
            data = Path(name_or_path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read preset file {text}: {exc.strerror}") from exc
    else:
        data = _read_packaged_preset(text, presets_package)
    try:
        return _flatten_mapping(tomllib.loads(data.decode("utf-8")))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"preset {text}: invalid TOML: {exc}") from exc


def _read_packaged_preset(name: str, package: str) -> bytes:
    try:
        folder = importlib.resources.files(package)
    except ModuleNotFoundError as exc:
        raise ConfigError(f"preset {name!r}: presets package {package!r} not found") from exc
    resource = folder / f"{name}.toml"
    if not resource.is_file():
        available = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".toml"))
        close = difflib.get_close_matches(name, available, n=3)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        raise ConfigError(f"no preset named {name!r}; {hint}available: {', '.join(available) or 'none'}")
    return resource.read_bytes()


def _to_toml(cfg: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f, tp in _knob_fields(type(cfg)):
        out[f.name] = _toml_value(getattr(cfg, f.name), tp)
    return out


def _toml_value(value: Any, tp: Any) -> Any:
    if _is_section(tp):
        return _to_toml(value)
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return [_toml_value(v, None) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _toml_value(v, None) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as TOML (nested configs become tables), atomically."""
    with atomic_open(path, "wb") as f:
        tomli_w.dump(_to_toml(cfg), f)


def load_config(cls: type[C], path: str | Path) -> C:
    """Read a config saved by ``save_config``; keys missing from the file keep their defaults. A saved
    config holds the keys its command set itself too, so they are read, not refused."""
    return resolve(cls, preset=Path(path), saved=True)


def resolve(cls: type[C], preset: str | Path | Mapping[str, Any] | None = None,
            overrides: Mapping[str, Any] | Sequence[str] | None = None, saved: bool = False) -> C:
    """defaults -> preset (name, path or mapping) -> CLI overrides (mapping or ``key=value`` list).
    Keys the command sets itself are refused, except in a config the command saved (``saved``)."""
    cfg = cls()
    hidden = set() if saved else set_by_stage(cls)
    for source, given in (("preset", preset), ("--set", overrides)):
        if isinstance(given, (str, Path)) and source == "preset":
            given = load_preset(given)
        keys = _flatten_mapping(given) if isinstance(given, Mapping) else parse_cli_overrides(given or [])
        taken = [k for k in keys if _under(k, hidden)]
        if taken:
            raise ConfigError(f"{source}: {taken[0]} is set by the command itself (see --show-config for its knobs)")
    if preset is not None:
        values = preset if isinstance(preset, Mapping) else load_preset(preset)
        try:
            cfg = apply_overrides(cfg, values)
        except ConfigError as exc:
            source = "<mapping>" if isinstance(preset, Mapping) else preset
            raise ConfigError(f"preset {source}: {exc}") from exc
    if overrides:
        if not isinstance(overrides, Mapping):
            overrides = parse_cli_overrides(overrides)
        cfg = apply_overrides(cfg, overrides)
    return cfg
