"""The `pav` command line: wiring only (argv → config → one stage function → exit code)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import click
import typer

from pav import __version__

app = typer.Typer(
    help="pav: process advantage verifiers — process rewards that measure progress "
    "(Setlur et al., 'Rewarding Progress', arXiv 2410.08146).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
DEBUG_ENV = "PAV_DEBUG"

PRESET_HELP = "preset: a name shipped with pav (e.g. 'didactic_quick') or a path to a TOML file of overrides"
SET_HELP = "override one setting, e.g. --set rl.iterations=500 (repeatable; see --show-config)"
OUT_HELP = ("run directory, any path (default: runs/<stage>-<timestamp>); a finished run is never overwritten "
            "silently, an unfinished or failed one is continued")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pav {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging"),
    debug: bool = typer.Option(False, "--debug", help=f"show the full traceback of an error (or set {DEBUG_ENV}=1)"),
) -> None:
    if debug:
        os.environ[DEBUG_ENV] = "1"
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def _resolve(cls: type, stage: str, preset: Optional[str], quick: bool, set_: list[str]):
    """defaults → preset (or the stage's quick preset) → --set overrides (a bad one: ConfigError)."""
    from pav.core.config import resolve

    if quick and preset:
        raise ValueError("use either --quick or --preset, not both")
    return resolve(cls, f"{stage}_quick" if quick else preset, set_)


def _debug() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _fail(exc: BaseException) -> None:
    """A user error: one line on stderr naming the thing and the fix, exit 2 (--debug: the traceback)."""
    if _debug():
        raise exc
    typer.secho(f"error: {_one_line(exc)}", fg="red", err=True)
    raise typer.Exit(2)


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Errors a user's input causes: bad settings, paths, runs, models, records, checkpoints.
    (ConfigError, RunExistsError, RecordError, LabelImportError, ... are ValueErrors.)"""
    from pav.policies.base import PolicyLoadError

    types: list[type[BaseException]] = [ValueError, OSError, FloatingPointError, PolicyLoadError]
    if "pav.verifier.checkpoint" in sys.modules:  # torch is loaded then anyway
        types.append(sys.modules["pav.verifier.checkpoint"].CheckpointError)
    return tuple(types)


@contextlib.contextmanager
def _errors_as_one_line():
    """User errors as one line (exit 2), anything else as one line that asks for --debug (exit 1),
    Ctrl-C as a note that the same command resumes (exit 130)."""
    try:
        yield
    except (typer.Exit, typer.Abort, click.ClickException):
        raise
    except BrokenPipeError:  # the reader stopped early (`pav ... --show-config | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush does not fail too
        raise typer.Exit(0) from None
    except KeyboardInterrupt:
        typer.secho("interrupted: rerun the same command with the same --out to resume where it stopped",
                    fg="yellow", err=True)
        raise typer.Exit(130) from None
    except Exception as exc:
        if _debug():
            raise
        if isinstance(exc, _user_error_types()):
            _fail(exc)
        typer.secho(f"error: unexpected {type(exc).__name__}: {_one_line(exc)} (rerun with --debug or "
                    f"{DEBUG_ENV}=1 for the traceback)", fg="red", err=True)
        raise typer.Exit(1) from None


def _stage(config: str, run: str, stage: str, preset: Optional[str], quick: bool, set_: list[str],
           out: Optional[Path], overwrite: bool, show_config: bool, quiet: bool, checks: bool = False) -> None:
    """One stage command: resolve the config class ``module:Class`` (defaults → preset → --set),
    then run ``module:function`` on it; stages are imported only when their command runs."""
    with _errors_as_one_line():
        cfg = _resolve(_attr(config), stage, preset, quick, set_)
        if show_config:
            return _print_settings(cfg, _sources(type(cfg), f"{stage}_quick" if quick else preset, set_))
        if out is not None and not str(out).strip():
            raise ValueError("--out is empty; name a folder for the run")
        summary = _attr(run)(cfg, out, overwrite, show_progress=_show_progress(quiet))
    if checks:
        _print_checks(summary.checks)


def _attr(path: str):
    import importlib

    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _show_progress(quiet: bool) -> bool:
    """Progress bars only on a terminal; on a pipe or in CI the stages log one line per stage and a
    periodic line for long loops instead."""
    return not quiet and sys.stderr.isatty()


QUICK = typer.Option(False, "--quick", help="the stage's quick preset (seconds to a minute; for tests)")
PRESET = typer.Option(None, "--preset", "-p", help=PRESET_HELP)
SET = typer.Option([], "--set", "-s", help=SET_HELP)
OUT = typer.Option(None, "--out", "-o", help=OUT_HELP)
OVERWRITE = typer.Option(False, "--overwrite", help="replace a finished run in --out")
SHOW = typer.Option(False, "--show-config", help="list every setting with its help and exit")
QUIET = typer.Option(False, "--quiet", "-q", help="no progress bars")
EXECUTOR = typer.Option(None, "--executor", help="local (this process or --set workers=N processes) or ray "
                        "(same as --set executor=...)")
RAY_ADDRESS = typer.Option(None, "--ray-address", help="a running Ray cluster, e.g. auto or ray://HOST:10001 "
                           "(implies --executor ray; empty: start a local one)")


def _executor_settings(set_: list[str], executor: Optional[str], ray_address: Optional[str]) -> list[str]:
    """--executor / --ray-address as the stage's `executor` and `ray_address` settings."""
    if ray_address:
        executor = executor or "ray"
        set_ = [*set_, f"ray_address={ray_address}"]
    return [*set_, f"executor={executor}"] if executor else set_


@app.command()
def demo(preset: Optional[str] = PRESET, quick: bool = QUICK, set_: list[str] = SET, out: Optional[Path] = OUT,
         overwrite: bool = OVERWRITE, show_config: bool = SHOW, quiet: bool = QUIET) -> None:
    """The whole method on the built-in task: SFT → progress labels → PQV/PAV and ORM → search → RL → report.

    About 14 minutes on 2 CPU cores (--quick: about a minute). Each stage runs in its own folder of
    the run directory (sft/, labels/, prover-labels/, pqv/, orm/, prover-pav/, pqv-eval/, search/,
    rl/; RL's advantages come from prover-pav/, the learned PAV of the task's noisy expert); a rerun with the same
    --out skips finished stages and continues an interrupted one. Writes report.html (figures
    embedded), report.md, summary.json, demo_main.png and labels.png.
    """
    _stage("pav.demo.pipeline:DemoConfig", "pav.demo.pipeline:run_demo", "demo",
           preset, quick, set_, out, overwrite, show_config, quiet)


@app.command()
def didactic(preset: Optional[str] = PRESET, quick: bool = QUICK, set_: list[str] = SET, out: Optional[Path] = OUT,
             overwrite: bool = OVERWRITE, show_config: bool = SHOW, quiet: bool = QUIET) -> None:
    """Reproduce the paper's didactic planted sub-sequence study (Fig. 3(a)-(c), Remark 3.1).

    Writes config.toml, summary.json, report.md and PNG figures into the run directory.
    """
    _stage("pav.didactic.experiments:DidacticConfig", "pav.didactic.stage:run_didactic", "didactic",
           preset, quick, set_, out, overwrite, show_config, quiet, checks=True)


@app.command()
def sft(preset: Optional[str] = PRESET, quick: bool = QUICK, set_: list[str] = SET, out: Optional[Path] = OUT,
        overwrite: bool = OVERWRITE, show_config: bool = SHOW, quiet: bool = QUIET) -> None:
    """Train the tiny base policy π from scratch on the built-in task's noisy demonstrator.

    Writes policy/ (safetensors + tokenizer, loadable with from_pretrained), metrics.jsonl and
    summary.json with held-out pass@1/8/64, the step mix and the quality gate.
    """
    _stage("pav.sft.stage:SFTConfig", "pav.sft.stage:run_sft", "sft",
           preset, quick, set_, out, overwrite, show_config, quiet)


@app.command()
def label(preset: Optional[str] = PRESET, quick: bool = QUICK, set_: list[str] = SET, out: Optional[Path] = OUT,
          overwrite: bool = OVERWRITE, show_config: bool = SHOW, quiet: bool = QUIET,
          executor: Optional[str] = EXECUTOR, ray_address: Optional[str] = RAY_ADDRESS) -> None:
    """Monte-Carlo step labels: seed solutions of π, n_mc rollouts from every prefix.

    Reads a policy (--set policy=RUN_OR_MODEL_DIR). Writes labels/shard-*.parquet (raw counts per
    prefix), solutions/shard-*.jsonl and summary.json. A killed run resumes with the same command.
    With --executor ray each shard is a Ray task (retried if its worker dies) and the shards are
    byte-identical to an in-process run; --set workers=N uses N local processes instead.
    """
    set_ = _executor_settings(set_, executor, ray_address)
    _stage("pav.rollouts.stage:LabelConfig", "pav.rollouts.stage:run_label", "label",
           preset, quick, set_, out, overwrite, show_config, quiet)


@app.command("export-labels")
def export_labels(preset: Optional[str] = PRESET, set_: list[str] = SET, out: Optional[Path] = OUT,
                  overwrite: bool = OVERWRITE, show_config: bool = SHOW, quiet: bool = QUIET) -> None:
    """Step labels of a label run as a TRL stepwise-supervision dataset (prompt, completions, labels).

    Reads --set labels=LABEL_RUN. Writes stepwise.jsonl (one row per labelled solution; load it with
    datasets.load_dataset("json", data_files=...)) and summary.json. Labels: Q̂ of each step's prefix
    (or --set target=adv, its advantage), hard (> threshold) or soft, under π or a Best-of-K prover.
    """
    _stage("pav.rollouts.stage:ExportConfig", "pav.rollouts.stage:run_export", "export_labels",
           preset, False, set_, out, overwrite, show_config, quiet)


@app.command("import-labels")
def import_labels(preset: Optional[str] = PRESET, set_: list[str] = SET, out: Optional[Path] = OUT,
                  overwrite: bool = OVERWRITE, show_config: bool = SHOW, quiet: bool = QUIET) -> None:
    """Step labels from TRL stepwise, PRM800K or ProcessBench data, as a label run for train-verifier.

    Reads --set source=FILE (.jsonl/.json/.parquet, or NAME[:CONFIG]@SPLIT with `datasets`) and
    --set format=trl-stepwise|prm800k|processbench. Writes problems.jsonl (with prompts), solutions/
    and labels/ shards, summary.json: `pav train-verifier --set labels=THIS_RUN` trains on them.
    """
    _stage("pav.rollouts.stage:ImportConfig", "pav.rollouts.stage:run_import", "import_labels",
           preset, False, set_, out, overwrite, show_config, quiet)


@app.command("train-verifier")
def train_verifier(preset: Optional[str] = PRESET, quick: bool = QUICK, set_: list[str] = SET,
                   out: Optional[Path] = OUT, overwrite: bool = OVERWRITE, show_config: bool = SHOW,
                   quiet: bool = QUIET) -> None:
    """Train a value verifier (PQV or ORM) on a label run: soft-label BCE, class-balanced sampling.

    Reads --set labels=LABEL_RUN and --set backbone=POLICY. Writes verifier/ (safetensors),
    checkpoints/ (resumable after a kill), metrics.jsonl and summary.json (held-out MSE beside
    the Monte-Carlo noise floor).
    """
    _stage("pav.verifier.stage:TrainVerifierConfig", "pav.verifier.stage:run_train_verifier", "train_verifier",
           preset, quick, set_, out, overwrite, show_config, quiet)


@app.command()
def score(preset: Optional[str] = PRESET, set_: list[str] = SET, out: Optional[Path] = OUT,
          overwrite: bool = OVERWRITE, show_config: bool = SHOW, quiet: bool = QUIET) -> None:
    """Score solutions with a verifier: per step q_base, q_prover, adv_prover, effective reward.

    Reads --set solutions=FILE --set problems=FILE --set verifier=DIR. Writes scores.jsonl.
    """
    _stage("pav.verifier.stage:ScoreConfig", "pav.verifier.stage:run_score", "score",
           preset, False, set_, out, overwrite, show_config, quiet)


@app.command("eval-verifier")
def eval_verifier(preset: Optional[str] = PRESET, set_: list[str] = SET, out: Optional[Path] = OUT,
                  overwrite: bool = OVERWRITE, show_config: bool = SHOW, quiet: bool = QUIET,
                  processbench: Optional[str] = typer.Option(
                      None, "--processbench", help="evaluate on ProcessBench items (a .json/.jsonl/.parquet file "
                      "or NAME@SPLIT) instead of held-out labels")) -> None:
    """How good a verifier is on held-out labels: MSE vs the Monte-Carlo noise, calibration, AUROC.

    Reads --set labels=LABEL_RUN --set verifier=VERIFIER_RUN. Writes predictions.jsonl,
    verifier_quality.png (reliability diagram; outcome AUROC by step, Q^π vs effective reward),
    summary.json and report.md. With --processbench FILE: ProcessBench's metric instead, the
    harmonic mean (F1) of the accuracy on erroneous items (exact earliest wrong step) and on
    correct items; a step is predicted wrong when its prefix value is below --set threshold=0.5.
    """
    if processbench:
        set_ = [*set_, f"processbench={processbench}"]
    _stage("pav.verifier.stage:EvalVerifierConfig", "pav.verifier.stage:run_eval_verifier", "eval_verifier",
           preset, False, set_, out, overwrite, show_config, quiet)


@app.command("eval-policy")
def eval_policy(preset: Optional[str] = PRESET, set_: list[str] = SET, out: Optional[Path] = OUT,
                overwrite: bool = OVERWRITE, show_config: bool = SHOW, quiet: bool = QUIET) -> None:
    """How well a policy solves a task: pass@k and maj@k (k = 1..samples) with standard errors.

    Reads --set policy=RUN_OR_MODEL_DIR_OR_GGUF_FILE and the task section (--set task.source=...,
    task.options.*). Writes samples.jsonl (each solution's steps, answer and grade), summary.json
    (also mean steps and tokens per solution, the shares with no answer, a blank or over-long step,
    or cut by the token budget) and report.md, and prints the table.
    """
    _stage("pav.eval.stage:EvalPolicyConfig", "pav.eval.stage:run_eval_policy", "eval_policy",
           preset, False, set_, out, overwrite, show_config, quiet)


@app.command()
def search(preset: Optional[str] = PRESET, quick: bool = QUICK, set_: list[str] = SET, out: Optional[Path] = OUT,
           overwrite: bool = OVERWRITE, show_config: bool = SHOW, quiet: bool = QUIET,
           executor: Optional[str] = EXECUTOR, ray_address: Optional[str] = RAY_ADDRESS) -> None:
    """Test-time search: best-of-N (ORM, PAV-as-ORM, majority votes) against step-level beam search
    scored by Q^π (PQV) and by Q^π + α·A^μ (PAV), on held-out problems, N = 2…128.

    Reads --set policy=SFT_RUN --set verifier=PQV_RUN --set orm=ORM_RUN. Writes results/ (per
    problem), summary.json (curves, compute-efficiency ratio, accuracy gain at equal compute, α and
    prover sweeps), search_curves.png, search_sweeps.png and report.md. A killed run resumes.
    Jobs run on --set workers=N local processes, or as Ray tasks with --executor ray.
    """
    set_ = _executor_settings(set_, executor, ray_address)
    _stage("pav.search.stage:SearchConfig", "pav.search.stage:run_search", "search",
           preset, quick, set_, out, overwrite, show_config, quiet, checks=True)


@app.command()
def rl(preset: Optional[str] = PRESET, quick: bool = QUICK, set_: list[str] = SET, out: Optional[Path] = OUT,
       overwrite: bool = OVERWRITE, show_config: bool = SHOW, quiet: bool = QUIET) -> None:
    """Online RL of the base policy: REINFORCE with a value (or RLOO) baseline and a KL penalty, with
    per-step weights outcome + α·A^μ (--set reward=pav) or outcome only (orm), α·Q^π (pqv), α·Q^μ (prover-q).

    Reads --set policy=SFT_RUN [--set rft_labels=LABEL_RUN] --set verifier=PQV_RUN. Writes policy/,
    metrics.jsonl (accuracy, reward parts, KL, entropy, lengths, value loss), checkpoints/ (a killed
    run resumes with the same command) and summary.json (held-out Pass@N).
    """
    _stage("pav.rl.stage:RLConfig", "pav.rl.stage:run_rl", "rl",
           preset, quick, set_, out, overwrite, show_config, quiet)


@app.command("rl-compare")
def rl_compare(preset: Optional[str] = PRESET, quick: bool = QUICK, set_: list[str] = SET, out: Optional[Path] = OUT,
               overwrite: bool = OVERWRITE, show_config: bool = SHOW, quiet: bool = QUIET) -> None:
    """ORM-RL against PAV-RL from the same start policy (RFT'd with rl.rft_labels), same sample budget, several seeds.

    Reads --set rl.policy=SFT_RUN --set rl.rft_labels=LABEL_RUN --set rl.verifier=PQV_RUN. Writes
    arms/<reward>_s<seed>/ (each a `pav rl` run), rl_curves.png (accuracy vs samples; Pass@N),
    report.md and summary.json (sample-efficiency ratio, final accuracy gain, spreads over seeds).
    """
    _stage("pav.rl.compare:RLCompareConfig", "pav.rl.compare:run_rl_compare", "rl_compare",
           preset, quick, set_, out, overwrite, show_config, quiet, checks=True)


@app.command()
def serve(preset: Optional[str] = PRESET, set_: list[str] = SET, show_config: bool = SHOW) -> None:
    """Serve step rewards over HTTP: POST /score, POST /openrlhf (OpenRLHF's remote reward model),
    GET /health, GET /metrics.

    Reads --set verifier=PQV_RUN. Binds to 127.0.0.1:8000 by default; another address needs a
    bearer token in $PAV_SERVE_TOKEN. Request size, items, steps, characters, concurrency and the
    verifier queue are capped (see --show-config); overload is answered with 429/503 at once.
    """
    with _errors_as_one_line():
        cfg = _resolve(_attr("pav.serve.stage:ServeConfig"), "serve", preset, False, set_)
        if show_config:
            return _print_settings(cfg, _sources(type(cfg), preset, set_))
        _attr("pav.serve.stage:run_serve")(cfg)


def _toml_literal(value) -> str:
    """One knob's value as a one-line TOML literal (None is spelled "none", as in saved configs)."""
    import tomli_w

    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_literal(str(k))} = {_toml_literal(v)}" for k, v in value.items()) + "}"
    value = "none" if value is None else str(value) if isinstance(value, Path) else value
    return tomli_w.dumps({"v": value}).strip()[len("v = "):]


def _sources(cls: type, preset: Optional[str], set_: list[str]) -> dict[str, str]:
    """Where each knob's value comes from: ``--set``, ``preset`` (it differs from the default) or
    ``default``; each option of a task section (``task.options.NAME``) by itself: ``preset`` when the
    preset gives it a value other than the default task's (or chose another task)."""
    from pav.core.config import flatten, parse_cli_overrides, resolve
    from pav.tasks.build import option_knobs

    default = flatten(cls())
    given = flatten(resolve(cls, preset)) if preset else default
    sets = parse_cli_overrides(set_)
    out = {k: "--set" if _under(k, sets) else "preset" if given[k] != v else "default" for k, v in default.items()}
    factory = option_knobs(cls())  # the default task's options: the section's values, else its factory's defaults
    for k, options in flatten(resolve(cls, preset, set_)).items():  # as the run gets them (--set source clears them)
        source = k.removesuffix("options") + "source"
        for n, v in options.items() if isinstance(options, dict) else ():
            key = f"{k}.{n}"
            unlike = key not in factory or _toml_literal(factory[key][1]) != _toml_literal(v)  # a list is its tuple
            from_preset = n in given[k] and given[k][n] == v and (given.get(source) != default.get(source) or unlike)
            out[key] = "--set" if _under(key, sets) else "preset" if from_preset else "default"
    return out


def _under(key: str, prefixes) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _print_settings(cfg, sources: dict[str, str]) -> None:
    """The knobs the command reads, section by section, with the source of each value (default,
    preset, --set): a table on a terminal; elsewhere one `key = value  # help [source]` line per
    knob under a `# [section]` line (valid TOML, so a preset can start from it)."""
    from rich.console import Console
    from rich.table import Table

    from pav.core.config import describe, flatten
    from pav.tasks.build import option_knobs

    values, options = flatten(cfg), option_knobs(cfg)  # a task section's options: its factory's
    rows = []
    for key, tp, value, help_ in describe(cfg):
        mine = {k: v for k, v in options.items() if k.startswith(key + ".")}
        rows += [(k, t, v, h) for k, (t, v, h) in mine.items()] if mine else [(key, tp, values[key], help_)]
    rows.sort(key=lambda r: "." in r[0])  # top-level knobs first, then the sections in declared order
    tty, table, section = sys.stdout.isatty(), Table("setting", "type", "value", "source", "help"), ""
    for key, tp, value, help_ in rows:
        source = sources.get(key) or ("--set" if _under(key, [k for k, s in sources.items() if s == "--set"])
                                      else "default")  # a task option: its table's
        if key.split(".")[0] != section and "." in key:
            section = key.split(".")[0]
            table.add_section()
            if not tty:
                typer.echo(f"# [{section}]")
        if tty:
            table.add_row(key, tp, repr(value), source, help_)
        else:
            typer.echo(f"{key} = {_toml_literal(value)}  # {help_ + ' ' if help_ else ''}[{source}]")
    if tty:
        Console().print(table)


def _print_checks(checks: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    rows = [(c["name"], "—" if c["value"] is None else f"{c['value']:.4g}", c["target"],
             "—" if c["passed"] is None else ("yes" if c["passed"] else "no")) for c in checks]
    if not sys.stdout.isatty():  # one plain line per check, not a box whose cells wrap
        for name, value, goal, met in rows:
            typer.echo(f"{name}: {value} (goal {goal}; met: {met})")
        return
    table = Table("target", "measured", "goal", "met")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
