"""Every Python example in the README runs, and CI runs the README's test command."""

import re
from pathlib import Path

import pytest

from docs_blocks import python_blocks

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
BLOCKS = python_blocks(ROOT / "README.md")


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples write relative paths (runs/...): keep them out of the repo
    exec(BLOCKS[index].compile(), {})


def _two_commands() -> list[str]:
    section = README.split("## Two commands", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].strip() for line in section.strip().splitlines()]


def test_ci_runs_the_readme_test_command_against_the_lock():
    install_and_demo, test = _two_commands()
    assert install_and_demo.endswith("policylens demo")
    assert "-c requirements/lock.txt" in test and test.endswith("python -m pytest")
    assert test in (ROOT / ".ci" / "run").read_text().splitlines()
    assert (ROOT / "requirements" / "lock.txt").is_file()


def test_lock_pins_torch_and_the_metadata_ranges_admit_it():
    lock = dict(
        line.split("==", 1) for line in (ROOT / "requirements" / "lock.txt").read_text().splitlines() if "==" in line
    )
    oldest = dict(
        line.split("==", 1)
        for line in (ROOT / "requirements" / "lock-oldest.txt").read_text().splitlines()
        if "==" in line
    )
    assert lock["torch"] == "2.13.0"
    floor = re.search(r'"transformers>=([0-9.]+)', (ROOT / "pyproject.toml").read_text()).group(1)
    assert oldest["transformers"] == floor
    assert lock["transformers"].split(".")[0] == "5"
