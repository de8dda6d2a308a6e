"""The choices of the attention, sim and align commands are the library's own: every enum (and
tuple) the CLI keeps so that ``policylens`` starts without importing the jobs equals the tuple the
library checks against, and the help pages show them (Rich markup does not eat brackets)."""

import pytest
from typer.testing import CliRunner

from policylens.cli import _align, _attention, _sim
from policylens.cli.main import app

runner = CliRunner()


def test_attention_choices_are_the_runs():
    from policylens.attention import PHASES
    from policylens.attention._extract import STEP_MODES
    from policylens.attention._pipeline import RUN_MODES

    assert tuple(_attention.Mode) == RUN_MODES and "global" not in RUN_MODES
    assert tuple(_attention.PHASES) == tuple(PHASES)
    assert _attention.STEP_MODES == STEP_MODES


def test_sim_choices_are_the_simulators():
    from policylens.data.metaworld import FORMATS as METAWORLD_FORMATS
    from policylens.data.sim import TASKS
    from policylens.data.sim._generate import FORMATS

    assert tuple(_sim.Format) == FORMATS == METAWORLD_FORMATS
    assert tuple(TASKS) == _sim.PYBULLET_TASKS


def test_align_choices_are_the_jobs():
    import policylens.store
    from policylens.align import AMP_MODES, FUSION_MODES, OBJECTIVES, SOURCES

    assert tuple(_align.Objective) == OBJECTIVES
    assert tuple(_align.Fusion) == FUSION_MODES
    assert tuple(_align.Amp) == AMP_MODES
    assert tuple(_align.Source) == SOURCES
    assert tuple(_align.Dtype) == policylens.store.STORE_DTYPES


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (("attention", "run"), ["[minmax|log]", "prefix (text -> image), suffix (action -> image)", "mean | last"]),
        (("sim", "generate"), ['pip install -e ".[metaworld]"', "reach | put_in_tray", "[droid|lerobot]"]),
        (("sim", "eval"), ["(default 25)", "--threads"]),
        (("align", "extract"), ["[float16|bfloat16|float32]", "lerobot:PATH (a LeRobot v3.0 dataset root), or PATH"]),
        (("attention", "run"), ["droid:PATH (a DROID episode folder or a tree of them), lerobot:PATH"]),
        (("align", "train"), ["[infonce|spatial_forcing]", "[softmax|gate|moe]", "[none|bf16|fp16]"]),
        (("align", "head"), ["[rgb|points|student|raw|blind]"]),
    ],
)
def test_help_shows_the_choices(command, shown):
    text = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "250"}).output
    for item in shown:
        assert item in text, (item, text)
    assert "minmax (per map) | log" not in text and "cpu | cuda" not in text
