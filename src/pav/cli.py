"""The `pav` command line: wiring only (argv → config → one stage function → exit code)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from pav import __version__

app = typer.Typer(
    help="pav: process advantage verifiers — process rewards that measure progress "
    "(Setlur et al., 'Rewarding Progress', arXiv 2410.08146).",
    no_args_is_help=True,
    add_completion=False,
)

PRESET_HELP = "preset: a name shipped with pav (e.g. 'quick') or a path to a TOML file of overrides"
SET_HELP = "override one setting, e.g. --set rl.iterations=500 (repeatable; see --show-config)"
OUT_HELP = "run directory (default: runs/<stage>-<timestamp>); a finished run is never overwritten silently"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pav {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="print the version"),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging"),
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


@app.command()
def didactic(
    preset: Optional[str] = typer.Option(None, "--preset", "-p", help=PRESET_HELP),
    quick: bool = typer.Option(False, "--quick", help="shorthand for --preset quick (under a minute; for tests)"),
    set_: list[str] = typer.Option([], "--set", "-s", help=SET_HELP),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help=OUT_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace a finished run in --out"),
    show_config: bool = typer.Option(False, "--show-config", help="list every setting with its help and exit"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Reproduce the paper's didactic planted sub-sequence study (Fig. 3(a)-(c), Remark 3.1).

    Writes config.toml, summary.json, report.md and PNG figures into the run directory.
    """
    from pav.core.config import ConfigError, describe, resolve
    from pav.didactic.experiments import DidacticConfig

    if quick and preset:
        raise typer.BadParameter("use either --quick or --preset, not both")
    try:
        cfg = resolve(DidacticConfig, "quick" if quick else preset, set_)
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    if show_config:
        _print_settings(describe(cfg))
        return
    from pav.core.rundir import RunExistsError
    from pav.didactic.stage import run_didactic

    try:
        summary = run_didactic(cfg, out, overwrite, show_progress=not quiet)
    except RunExistsError as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    _print_checks(summary["checks"])


def _print_settings(rows: list[tuple[str, str, str, str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("setting", "type", "value", "help")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _print_checks(checks: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("target", "measured", "goal", "met")
    for c in checks:
        v = c["value"]
        table.add_row(c["name"], "—" if v is None else f"{v:.4g}", c["target"],
                      "—" if c["passed"] is None else ("yes" if c["passed"] else "no"))
    Console().print(table)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
