"""mkdocs hook: the CLI and configuration references, generated from the code at build time.

A page holding ``<!-- generated: cli -->`` gets every `pav` command's help and options from the
typer app; ``<!-- generated: config -->`` gets every knob of every command (name, default, help)
from the command's own ``--show-config``. Nothing is copied by hand, so the pages cannot drift.
"""

from __future__ import annotations

import os

import click
import typer
from typer.testing import CliRunner

from pav.cli import app

CLI_MARK, CONFIG_MARK = "<!-- generated: cli -->", "<!-- generated: config -->"


def _commands() -> list[tuple[str, click.Command]]:
    group = typer.main.get_command(app)
    return sorted(group.commands.items())


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def cli_reference() -> str:
    group = typer.main.get_command(app)
    out = [f"Global options: {', '.join(f'`{p.opts[0]}` ({p.help})' for p in group.params if p.help)}.", ""]
    for name, cmd in _commands():
        out += [f"## pav {name}", "", (cmd.help or "").strip(), "", "| option | help |", "|---|---|"]
        for p in cmd.params:
            if isinstance(p, click.Option):
                out.append(f"| `{' / '.join(p.opts)}` | {_cell(p.help or '')} |")
        out.append("")
    return "\n".join(out)


def config_reference() -> str:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = []
    for name, cmd in _commands():
        if not any("--show-config" in getattr(p, "opts", ()) for p in cmd.params):
            continue
        shown = CliRunner().invoke(app, [name, "--show-config"])
        if shown.exit_code != 0:
            raise RuntimeError(f"pav {name} --show-config failed: {shown.output}")
        out += [f"## pav {name}", "", f"`pav {name} --show-config` prints these; "
                f"set one with `--set KEY=VALUE` or in a `--preset` TOML file.", "",
                "| key | default | help |", "|---|---|---|"]
        for line in shown.stdout.splitlines():
            setting, _, help_ = line.partition("  # ")
            key, _, value = setting.partition(" = ")
            out.append(f"| `{key.strip()}` | `{_cell(value.strip())}` | {_cell(help_)} |")
        out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if CLI_MARK in markdown:
        markdown = markdown.replace(CLI_MARK, cli_reference())
    if CONFIG_MARK in markdown:
        markdown = markdown.replace(CONFIG_MARK, config_reference())
    return markdown
