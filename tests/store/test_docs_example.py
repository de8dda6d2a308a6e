"""The Python example in docs/store.md runs as written."""

from pathlib import Path

from docs_blocks import python_blocks

DOC = Path(__file__).resolve().parents[2] / "docs" / "store.md"


def test_docs_example_runs():
    blocks = python_blocks(DOC)
    assert len(blocks) == 1
    scope: dict = {}
    exec(blocks[0].compile(), scope)
    assert scope["batch"]["target_features"].shape == (32, 32)
    assert scope["batch"]["obs"].shape == (32, 16)
