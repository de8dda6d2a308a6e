"""Every command's --help renders in click's notation and documents every option."""

import re

import pytest
import typer
from typer.testing import CliRunner

from policylens.cli.main import app

runner = CliRunner()
BUILTIN = {"help", "install_completion", "show_completion"}


def _commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))


def test_every_command_is_listed():
    names = {" ".join(p) for p, _ in COMMANDS}
    for expected in ("taps", "demo", "accel eval", "accel calibrate", "sim generate", "train vla", "cache build"):
        assert expected in names


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "policylens")
def test_help_is_classic_and_complete(path):
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = result.output
    assert "<bool>" not in text and not re.search(r"<(int|str|float|path|list\[)", text), text
    assert not re.search(r"\{[a-z_]+\}", text), text  # typer 0.2x writes required arguments as {name}
    assert "Show this message and exit." in text
    command = dict(COMMANDS)[path]
    for param in command.params:
        if param.name not in BUILTIN:
            assert (param.help or "").strip(), f"{' '.join(path)}: {param.name} has no help"


def test_flags_types_choices_and_arguments_render_like_click():
    text = runner.invoke(app, ["cache", "verify", "--help"], env={"COLUMNS": "200"}).output
    assert "PATH" in text and "TEXT" in text and re.search(r"--repair\s+--no-repair\s+Drop", text)
    text = runner.invoke(app, ["accel", "eval", "--help"], env={"COLUMNS": "200"}).output
    assert "[original|uniform|optimal]" in text and "INTEGER RANGE" in text
    assert "accel eval [OPTIONS]" in text
    text = runner.invoke(app, ["taps", "--help"], env={"COLUMNS": "200"}).output
    assert re.search(r"Usage: .*taps \[OPTIONS\] MODEL\b", text)
    text = runner.invoke(app, ["sim", "eval", "--help"], env={"COLUMNS": "200"}).output
    assert "renders at that size instead" in text
