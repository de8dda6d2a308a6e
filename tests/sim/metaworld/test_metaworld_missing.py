"""Without the metaworld extra: the package imports, and `--suite metaworld` prints the install command.

The extra is simulated missing by making its import fail, so this runs whether it is installed or not.
"""

import importlib

from typer.testing import CliRunner

from policylens.cli.main import app
from policylens.sim.metaworld import _require

runner = CliRunner()


def _no_metaworld(monkeypatch):
    real = importlib.import_module

    def fake(name, *args, **kwargs):
        if name.split(".")[0] in ("metaworld", "mujoco"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(_require.importlib, "import_module", fake)


def test_suite_metaworld_without_the_extra_names_the_install_command(monkeypatch, tmp_path):
    _no_metaworld(monkeypatch)
    for args in (
        ["sim", "eval", "--suite", "metaworld", "--task", "pick-place-v3"],
        ["sim", "generate", "--suite", "metaworld", "--task", "pick-place-v3", "--out", str(tmp_path / "d")],
        ["train", "diffusion", "--suite", "metaworld", "--task", "pick-place-v3", "--out", str(tmp_path / "r")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert len(result.stderr.splitlines()) == 1
        assert 'pip install -e ".[metaworld]"' in result.stderr and "metaworld" in result.stderr
    assert not (tmp_path / "d").exists() and not (tmp_path / "r").exists()
