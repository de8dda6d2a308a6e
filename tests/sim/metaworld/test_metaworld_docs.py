"""The MetaWorld examples of docs/sim.md run: the environment loop and the batched evaluation."""

from pathlib import Path

import pytest

from docs_blocks import python_blocks

pytest.importorskip("metaworld")

from policylens.models.diffusion._metaworld import METAWORLD_ASSETS

DOC = Path(__file__).resolve().parents[3] / "docs" / "sim.md"
BLOCKS = python_blocks(DOC, "MetaWorld (optional extra)")


def test_environment_example(capsys):
    exec(BLOCKS[0].compile(), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "50" and out[1].startswith("{'success': True")


@pytest.mark.skipif(not (METAWORLD_ASSETS / "pick-place-v3").is_dir(), reason="pick-place-v3 policy not shipped")
def test_batched_evaluation_example(capsys):
    exec(BLOCKS[1].compile(), {})
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "success 100.0% (2/2), 95% CI [34.2%, 100.0%]"
    assert out[1].startswith("1.0 (0.342")  # the shipped pick-place policy solves both
