"""``--threads`` on `policylens train vla` / `train diffusion`: the count is set before training and
printed once; diffusion defaults to 1 thread, POLICYLENS_THREADS applies when the option is absent."""

import pytest
import torch
from typer.testing import CliRunner

from policylens.cli.main import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_train_vla_takes_threads(tmp_path):
    args = ["train", "vla", "--out", str(tmp_path / "vla"), "--episodes", "1", "--steps", "1", "--batch-size", "2"]
    result = runner.invoke(app, [*args, "--image-size", "28", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.count("torch threads: 1") == 1 and torch.get_num_threads() == 1


def test_train_diffusion_defaults_to_one_thread_and_reads_the_environment(tmp_path, monkeypatch):
    args = ["train", "diffusion", "--episodes", "2", "--steps", "1", "--batch-size", "4"]
    monkeypatch.delenv("POLICYLENS_THREADS", raising=False)
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert result.output.count("torch threads: 1") == 1
    monkeypatch.setenv("POLICYLENS_THREADS", "2")
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "b")])
    assert result.exit_code == 0 and "torch threads: 2" in result.output and torch.get_num_threads() == 2
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "c"), "--threads", "0"])
    assert result.exit_code == 2 and "--threads" in result.output
