"""Every choice the CLI offers is the library's own: the tuples ``cli/_common.py`` repeats (so that
``policylens`` starts without torch) equal the ones the library checks against; every option with a
fixed set of values, found by walking the click command tree, has exactly its library tuple as
choices, shows it in ``--help`` and does not re-type it in its help text (Rich markup does not eat
brackets); options that take a library value or something else list the values from the tuple."""

import importlib
import re

import pytest
import typer
from typer.testing import CliRunner

from policylens.cli import _attention
from policylens.cli._common import MIRRORS
from policylens.cli.main import app

runner = CliRunner()


def lib(spec: str) -> tuple:
    """``"module:NAME"`` -> that tuple of the library (a dict's keys)."""
    module, _, name = spec.partition(":")
    value = getattr(importlib.import_module(module), name)
    return tuple(value) if isinstance(value, dict) else value


def suites() -> tuple:
    from policylens.models.diffusion._config import SUITES  # the suites a diffusion config records

    return tuple(s for s in SUITES if s is not None)


# (command path, parameter) -> the library tuple of its choices
CHOICES = {
    (("accel", "calibrate"), "metric"): lambda: lib("policylens.accel:METRICS"),
    (("accel", "eval"), "mode"): lambda: lib("policylens.accel:MODES"),
    (("align", "extract"), "dtype"): lambda: lib("policylens.store:STORE_DTYPES"),
    (("align", "train"), "objective"): lambda: lib("policylens.align:OBJECTIVES"),
    (("align", "train"), "fusion"): lambda: lib("policylens.align:FUSION_MODES"),
    (("align", "train"), "amp"): lambda: lib("policylens.align:AMP_MODES"),
    (("align", "distill"), "amp"): lambda: lib("policylens.align:AMP_MODES"),
    (("align", "head"), "source"): lambda: lib("policylens.align:SOURCES"),
    (("attention", "run"), "mode"): lambda: lib("policylens.attention:RUN_MODES"),
    (("cache", "build"), "kind"): lambda: lib("policylens.anchors:POLICY_KINDS"),
    (("cache", "build"), "pooling"): lambda: lib("policylens.tap:POOLINGS"),
    (("cache", "build"), "dtype"): lambda: lib("policylens.store:STORE_DTYPES"),
    (("cache", "build"), "bridge_pooling"): lambda: lib("policylens.anchors:BRIDGE_POOLING_CHOICES"),
    (("retain", "train"), "method"): lambda: lib("policylens.retain:METHODS"),
    (("retain", "train"), "projection"): lambda: lib("policylens.retain:PROJECTIONS"),
    (("retain", "train"), "loss"): lambda: lib("policylens.retain:RETENTION_LOSSES"),
    (("retain", "train"), "anchor_features"): lambda: lib("policylens.retain:ANCHOR_FEATURES"),
    (("sim", "generate"), "fmt"): lambda: lib("policylens.sim.pybullet._generate:FORMATS"),
    (("sim", "generate"), "suite"): suites,
    (("sim", "eval"), "suite"): suites,
    (("train", "diffusion"), "suite"): suites,
}


def _commands(command, path=()):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, (*path, name))


def choice_params():
    """``{(path, name): param}`` of every parameter with a fixed set of values in the command tree."""
    out = {}
    for path, command in _commands(typer.main.get_command(app)):
        for param in command.params:
            descriptor = getattr(param, "type_descriptor", None)
            if descriptor is not None and descriptor.is_choice:
                out[(path, param.name)] = param
    return out


@pytest.mark.parametrize("spec", sorted(MIRRORS))
def test_mirrored_tuples_equal_the_library(spec):
    assert MIRRORS[spec] == lib(spec), spec


def test_the_simulators_agree_on_formats_and_suites():
    from policylens.cli._common import FORMATS, SUITES

    assert lib("policylens.sim.pybullet._generate:FORMATS") == lib("policylens.sim.metaworld:FORMATS") == FORMATS
    assert suites() == SUITES


def test_every_choice_option_is_accounted_for():
    found = set(choice_params())
    assert found == set(CHOICES), (found - set(CHOICES), set(CHOICES) - found)


@pytest.mark.parametrize("key", list(CHOICES), ids=lambda k: f"{' '.join(k[0])} {k[1]}")
def test_choice_option_shows_exactly_the_library_tuple(key):
    path = key[0]
    want = CHOICES[key]()
    param = choice_params()[key]
    assert tuple(str(c) for c in param.type_descriptor.choices) == want
    text = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "250"}).output
    shown = f"[{'|'.join(want)}]"
    assert re.search(rf"{re.escape(param.opts[0])}\s+{re.escape(shown)}", text), (shown, text)
    retyped = re.compile(rf"\b({'|'.join(map(re.escape, want))})( \| |, | or | / )({'|'.join(map(re.escape, want))})\b")
    assert not retyped.search(param.help or ""), param.help  # the choices are shown; help explains, not lists


def test_attention_phases_describe_the_jobs():
    assert tuple(_attention.PHASE_QUERIES) == lib("policylens.attention:PHASES")


def test_help_lists_open_values_from_the_library():
    from policylens.attention import PHASES, STEP_MODES
    from policylens.sim.pybullet import TASKS

    text = runner.invoke(app, ["attention", "run", "--help"], env={"COLUMNS": "250"}).output
    assert f"{' | '.join(STEP_MODES)} | a step index" in text
    assert ", ".join(f"{p} ({_attention.PHASE_QUERIES[p]})" for p in PHASES) in text
    text = runner.invoke(app, ["sim", "generate", "--help"], env={"COLUMNS": "250"}).output
    assert f"Task name: {' | '.join(TASKS)} (pybullet" in text


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (("attention", "run"), ["prefix (text -> image), suffix (action -> image)", "mean | last"]),
        (("sim", "generate"), ['pip install -e ".[metaworld]"', "reach | put_in_tray"]),
        (("sim", "eval"), ["(default: 1 pybullet, 25 MetaWorld)", "--threads"]),
        (("train", "diffusion"), ['pip install -e ".[metaworld]"']),
        (("align", "extract"), ["lerobot:PATH (a LeRobot v3.0 dataset root), or PATH"]),
        (("attention", "run"), ["droid:PATH (a DROID episode folder or a tree of them), lerobot:PATH"]),
        (("cache", "build"), ["synthetic:N (N samples of the policy's example inputs), droid:PATH"]),
        (("taps",), ["--threads"]),
    ],
)
def test_help_shows_the_choices(command, shown):
    text = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "250"}).output
    for item in shown:
        assert item in text, (item, text)
    assert "minmax (per map) | log" not in text and "cpu | cuda" not in text
