"""The MetaWorld examples of docs/sim.md run: the environment loop and the batched evaluation."""

import re
from pathlib import Path

import pytest

pytest.importorskip("metaworld")

from policylens.models.diffusion._metaworld import METAWORLD_ASSETS

DOC = Path(__file__).resolve().parents[3] / "docs" / "sim.md"
SECTION = DOC.read_text().split("## MetaWorld (optional extra)")[1]
BLOCKS = re.findall(r"```python\n(.*?)```", SECTION, flags=re.S)


def test_environment_example(capsys):
    exec(compile(BLOCKS[0], "docs/sim.md MetaWorld environment", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "50" and out[1].startswith("{'success': True")


@pytest.mark.skipif(not (METAWORLD_ASSETS / "pick-place-v3").is_dir(), reason="pick-place-v3 policy not shipped")
def test_batched_evaluation_example(capsys):
    exec(compile(BLOCKS[1], "docs/sim.md MetaWorld evaluation", "exec"), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "success 100.0% (2/2), 95% CI [34.2%, 100.0%]"
    assert out[1].startswith("1.0 (0.342")  # the shipped pick-place policy solves both
