"""Which task a stage runs on: the ``task`` section, a factory named ``module:function`` and its options.

Every stage that takes a task has one section, `TaskConfig`: ``task.source`` names a factory that
`build_task` imports and calls with ``task.options`` as keyword arguments; the factory returns a
`pav.tasks.base.Task`. The two tasks in the box are selected the same way
(``pav.tasks.modreach:make_task``, the default, and ``pav.tasks.math_task:make_task``); a user task
is a module on ``sys.path`` with such a factory (see docs/your-task.md). A plug-in that cannot be
imported, has no such factory, takes no such option or returns something that does not behave as a
Task on its first problem is refused with one `TaskPluginError` line, before a stage does any work.

Runs of `pav label` store each problem's rendered prompt in ``meta["prompt"]`` and its step
delimiter in ``meta["step_delimiter"]``, and `prompt_of` / `delimiter_of` prefer them, so stages
that read a label run's problems (verifier data, exports) need no task config and no tokenizer.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import numbers
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_type_hints

from pav.core.config import ConfigError, coerce, knob
from pav.core.records import Problem
from pav.core.rejects import TooManyRejects
from pav.tasks.base import Task, join_steps

MODREACH = "pav.tasks.modreach:make_task"
MATH = "pav.tasks.math_task:make_task"
REJECTS_FILE = "rejects.jsonl"
ENTRY_POINTS = "pav.tasks"  # a package's [project.entry-points."pav.tasks"] NAME = "module:function"


TASK_HELP = "the task: task.source (a factory 'module:function') and task.options.* (its keyword arguments)"


class TaskPluginError(ValueError):
    """A task plug-in cannot be used; the message is one line naming the module and the fault."""


@dataclass(frozen=True)
class TaskConfig:
    source: str = knob(MODREACH, "the task: a factory 'module:function' returning a pav Task (built in: "
                                 f"{MODREACH}, {MATH}), or the name of an installed plug-in (entry point "
                                 f"group '{ENTRY_POINTS}')")
    options: dict[str, Any] = knob({}, "keyword arguments of the factory, one key each "
                                       "(task.options.NAME=VALUE; e.g. task.options.train=FILE for the math task)")

    def __post_init__(self) -> None:
        module, sep, name = self.source.partition(":")
        if not (module.strip() and (name.strip() or not sep)):
            raise ValueError(f"task.source must be 'module:function' or a plug-in's name, got {self.source!r}")


def task_config(source: str = MODREACH, **options: Any) -> TaskConfig:
    """A `TaskConfig` for code (tests, the demo): ``task_config(MATH, train="gsm8k.jsonl")``."""
    return TaskConfig(source, dict(options))


def builtin_task(cfg: Any) -> TaskConfig:
    """The `TaskConfig` of the built-in task with ``cfg``'s (a `ModReachConfig`) knobs; options hold
    only the knobs that differ from their defaults."""
    defaults = type(cfg)()
    changed = {f.name: list(v) if isinstance(v := getattr(cfg, f.name), tuple) else v  # as saved in TOML
               for f in dataclasses.fields(cfg) if getattr(cfg, f.name) != getattr(defaults, f.name)}
    return TaskConfig(MODREACH, changed)


def build_task(cfg: TaskConfig, tokenizer: Any = None, rejects_dir: str | Path | None = None,
               check: bool = True) -> Task:
    """The task ``cfg`` names, checked (`check_task`) unless ``check`` is False (a caller that binds a
    tokenizer later checks then); ``tokenizer`` renders chat prompts (a task with ``bind_tokenizer``).
    With ``rejects_dir``, a task's malformed source records (its ``rejects`` ledger) are listed in the
    run's ``rejects.jsonl``, also when there are too many and it is refused."""
    try:
        task = _call_factory(cfg)
    except TooManyRejects as exc:
        if rejects_dir is not None:
            exc.ledger.write(Path(rejects_dir) / REJECTS_FILE)
        raise
    task = with_tokenizer(task, tokenizer)
    if check:
        check_task(task, cfg.source)
    if rejects_dir is not None and hasattr(task, "rejects"):
        task.rejects.write(Path(rejects_dir) / REJECTS_FILE)
    return task


def check_source(cfg: TaskConfig) -> None:
    """Refuse (TaskPluginError, one line) a ``task`` section whose factory cannot be imported, does
    not take its options or returns something that is not a Task, so that a stage can stop before it
    writes anything. A task that renders prompts with the policy's tokenizer (``bind_tokenizer``) has
    its methods probed later, once bound; too many malformed records are left for the stage to report
    (it lists them in the run directory)."""
    try:
        task = _call_factory(cfg)
    except TooManyRejects:
        return
    check_task(task, cfg.source, probe=not hasattr(task, "bind_tokenizer"))


def _call_factory(cfg: TaskConfig) -> Any:
    factory = load_factory(cfg.source)
    options = _typed_options(factory, cfg)
    try:
        return factory(**options)
    except TooManyRejects:
        raise
    except Exception as exc:  # a factory's own refusal (a bad option value, an unreadable problem file)
        raise TaskPluginError(f"task {cfg.source}: {_one_line(exc)}") from exc


def load_factory(source: str) -> Callable[..., Any]:
    """The callable ``module:function`` (or the installed plug-in ``source``) names; TaskPluginError
    (one line) if there is none."""
    if ":" not in source:
        return _entry_point(source)
    module_name, _, name = source.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ModuleNotFoundError, or the module itself fails on import
        raise TaskPluginError(f"task module {module_name!r} cannot be imported: {_one_line(exc)}") from exc
    factory = module
    for part in name.split("."):
        if not hasattr(factory, part):
            raise TaskPluginError(f"task module {module_name!r} has no {name!r} (task.source = {source!r})")
        factory = getattr(factory, part)
    if not callable(factory):
        raise TaskPluginError(f"task module {module_name!r}: {name!r} is a {type(factory).__name__}, not a factory")
    return factory


def _entry_point(name: str) -> Callable[..., Any]:
    from importlib.metadata import entry_points

    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINTS)}
    if name not in found:
        installed = ", ".join(sorted(found)) or "none"
        raise TaskPluginError(f"no task plug-in named {name!r} (installed: {installed}); "
                              "or give task.source as 'module:function'")
    try:
        return found[name].load()
    except Exception as exc:
        raise TaskPluginError(f"task plug-in {name!r} ({found[name].value}) cannot be loaded: {_one_line(exc)}") from exc


def option_knobs(cfg: Any, prefix: str = "") -> dict[str, tuple[str, Any, str]]:
    """``{"task.options.NAME": (type, value, help)}`` for every option the factory of each task
    section of the stage config ``cfg`` takes (its value: the section's, else the default), so
    ``--show-config`` can list them: a factory's ``options_class`` (a config dataclass, as the
    built-in factories have), else its signature. A factory that cannot be loaded lists none."""
    from pav.core.config import describe, flatten, type_name

    out: dict[str, tuple[str, Any, str]] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if isinstance(value, TaskConfig):
            key = f"{prefix}{f.name}.options."
            try:
                factory = load_factory(value.source)
            except TaskPluginError:
                continue
            options_class = getattr(factory, "options_class", None)
            if options_class is not None:
                defaults = flatten(options_class())
                out.update({key + k: (tp, value.options.get(k, defaults[k]), help_)
                            for k, tp, _, help_ in describe(options_class)})
            else:
                for name, param in _parameters(factory).items():
                    default = None if param.default is inspect.Parameter.empty else param.default
                    ann = param.annotation
                    tp = "" if ann is inspect.Parameter.empty else ann if isinstance(ann, str) else type_name(ann)
                    out[key + name] = (tp, value.options.get(name, default), "")
        elif dataclasses.is_dataclass(value):
            out.update(option_knobs(value, f"{prefix}{f.name}."))
    return out


def _parameters(factory: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return {}
    return {n: p for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _typed_options(factory: Callable[..., Any], cfg: TaskConfig) -> dict[str, Any]:
    """``cfg.options`` bound to the factory's parameters, command-line strings converted by their
    annotations; a name the factory does not take is refused."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin without a signature: pass the options through
        return dict(cfg.options)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(cfg.options)  # the factory checks its own keyword arguments (the built-in ones do)
    named = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    try:
        hints = get_type_hints(factory)
    except Exception:
        hints = {}
    out = {}
    for key, value in cfg.options.items():
        if key not in named:
            takes = ", ".join(named) or "no options"
            raise TaskPluginError(f"task {cfg.source}: no option {key!r} (it takes: {takes})")
        out[key] = value
        if key in hints and isinstance(value, str):
            try:
                out[key] = coerce(value, hints[key])
            except ValueError as exc:
                raise TaskPluginError(f"task.options.{key}: {exc}") from None
    return out


# -- the conformance check


TASK_ATTRIBUTES = {"name": str, "step_delimiter": str, "max_steps": int, "max_step_chars": int}
TASK_METHODS = ("problems", "prompt", "split_steps", "is_final_step", "answer", "outcome", "demonstrate")


def check_task(task: Any, source: str, probe: bool = True) -> None:
    """Refuse (TaskPluginError, one line) an object that does not behave as a `Task`: a missing
    attribute or method, or (``probe``) a method that raises or returns the wrong type on the task's
    first training problem."""
    where = f"task {source}"
    for attr, kind in TASK_ATTRIBUTES.items():
        value = getattr(task, attr, None)
        if not isinstance(value, kind) or isinstance(value, bool):
            got = "missing" if value is None else f"a {type(value).__name__}"
            raise TaskPluginError(f"{where}: returned {type(task).__name__} whose {attr!r} is {got}, not a {kind.__name__}"
                                  " (is it a pav Task?)")
    for method in TASK_METHODS:
        if not callable(getattr(task, method, None)):
            raise TaskPluginError(f"{where}: returned {type(task).__name__} without a method {method}()")
    if not task.step_delimiter or task.max_steps < 1 or task.max_step_chars < 1:
        raise TaskPluginError(f"{where}: step_delimiter must be non-empty and max_steps, max_step_chars >= 1")
    if probe:
        try:
            _probe(task, where)
        except TaskPluginError:
            raise
        except Exception as exc:
            raise TaskPluginError(f"{where}: on its first problem: {_one_line(exc)}") from exc


def _probe(task: Task, where: str) -> None:
    """Call each method once on the first training problem and check the types it returns."""
    problems = _returns(where, "problems(1, 0, 'train')", task.problems(1, 0, "train"), list)
    if len(problems) != 1 or not isinstance(problems[0], Problem):
        raise TaskPluginError(f"{where}: problems(1, 0, 'train') must return a list of one pav Problem, got "
                              f"{_describe(problems)}")
    problem = problems[0]
    prompt = _returns(where, "prompt()", task.prompt(problem), str)
    if not prompt.endswith(task.step_delimiter):
        raise TaskPluginError(f"{where}: prompt() must end with the step delimiter {task.step_delimiter!r}")
    try:
        steps = task.demonstrate(problem, random.Random(0))
    except Exception:  # a problem set without reference solutions: only SFT needs them, and says so
        steps = None
    if steps is not None:
        _returns(where, "demonstrate()", steps, list)
        if not all(isinstance(s, str) for s in steps):
            raise TaskPluginError(f"{where}: demonstrate() must return a list of str, got {_describe(steps)}")
    steps = steps or []
    split = _returns(where, "split_steps()", task.split_steps(join_steps(steps, task.step_delimiter)), list)
    if not all(isinstance(s, str) for s in split):
        raise TaskPluginError(f"{where}: split_steps() must return a list of str, got {_describe(split)}")
    if steps:
        _returns(where, "is_final_step()", task.is_final_step(steps[-1]), bool)
    answer = task.answer(steps)
    if answer is not None and not isinstance(answer, str):
        raise TaskPluginError(f"{where}: answer() must return a str or None, got {_describe(answer)}")
    outcome = task.outcome(problem, steps)
    if isinstance(outcome, bool) or not isinstance(outcome, numbers.Real) or not 0.0 <= outcome <= 1.0:
        raise TaskPluginError(f"{where}: outcome() must return a float in [0, 1], got {_describe(outcome)}")


def _returns(where: str, call: str, value: Any, kind: type) -> Any:
    if not isinstance(value, kind):
        raise TaskPluginError(f"{where}: {call} must return a {kind.__name__}, got {_describe(value)}")
    return value


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, (ValueError, ConfigError)) else f"{type(exc).__name__}: {text}"


# -- tasks and stored prompts


def with_tokenizer(task: Task, tokenizer: Any) -> Task:
    """``task`` rendering chat prompts with ``tokenizer`` (tasks without chat prompts: unchanged)."""
    if tokenizer is not None and hasattr(task, "bind_tokenizer"):
        task.bind_tokenizer(tokenizer)
    return task


def is_builtin(cfg: TaskConfig) -> bool:
    """Whether ``cfg`` selects the built-in ModReach task (whose expert and gate exist)."""
    return cfg.source == MODREACH


def prompt_of(problem: Problem) -> str:
    """The prompt a label run stored with the problem, else the built-in task's (older runs)."""
    from pav.tasks.modreach import ModReach

    stored = problem.meta.get("prompt")
    return stored if isinstance(stored, str) else ModReach().prompt(problem)


def with_prompt(problem: Problem, task: Task) -> Problem:
    """``problem`` with ``task``'s rendered prompt in ``meta["prompt"]`` and its step delimiter in
    ``meta["step_delimiter"]``."""
    return Problem(problem.problem_id, problem.question, problem.answer,
                   {**problem.meta, "prompt": task.prompt(problem), "step_delimiter": task.step_delimiter})


def delimiter_of(problem: Problem) -> str:
    """The step delimiter a label run stored with the problem (newline for older runs)."""
    stored = problem.meta.get("step_delimiter")
    return stored if isinstance(stored, str) and stored else "\n"


def with_absolute_options(cfg: Any) -> Any:
    """A stage config whose ``task.options`` that name an existing local path are made absolute, so
    that workers started in another directory find the problem files."""
    import os

    options = {k: os.path.abspath(v) if isinstance(v, str) and v and Path(v).exists() else v
               for k, v in cfg.task.options.items()}
    return dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, options=options))
