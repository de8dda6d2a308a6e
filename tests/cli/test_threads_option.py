"""``--threads`` is on every command that runs a model or a simulator: each command is classed as
compute or not (a new command must be), and `policylens taps` sets and prints the count."""

import pytest
import torch
import typer
from typer.testing import CliRunner

from policylens.cli.main import app

runner = CliRunner()

COMPUTE = {
    "accel calibrate", "accel eval",
    "align extract", "align ingest", "align train", "align distill", "align head", "align rollout",
    "attention run", "attention ablate", "attention faithfulness",
    "cache build", "retain train", "sim generate", "sim eval", "train vla", "train diffusion",
    "demo", "taps",
}  # fmt: skip
READ_ONLY = {"cache info", "cache verify", "align verify", "attention report", "version"}  # files and numbers only


def leaf_commands(command, path=()):
    subs = getattr(command, "commands", None)
    if not subs:
        yield " ".join(path), command
    for name, sub in (subs or {}).items():
        yield from leaf_commands(sub, (*path, name))


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_every_compute_command_takes_threads():
    commands = dict(leaf_commands(typer.main.get_command(app)))
    assert set(commands) == COMPUTE | READ_ONLY, set(commands) ^ (COMPUTE | READ_ONLY)
    lacking = sorted(name for name in COMPUTE if "threads" not in {p.name for p in commands[name].params})
    assert lacking == []


def test_taps_sets_and_prints_the_thread_count():
    torch.set_num_threads(2)
    result = runner.invoke(app, ["taps", "tiny_vla", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.count("torch threads: 1") == 1 and torch.get_num_threads() == 1
    assert "expert.layers.3.attn.probs" in result.output
