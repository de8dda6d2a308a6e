"""Every Python example in docs/align.md runs."""

from pathlib import Path

import pytest

from docs_blocks import python_blocks

DOC = Path(__file__).resolve().parents[2] / "docs" / "align.md"
BLOCKS = python_blocks(DOC)


def test_the_page_has_examples():
    assert BLOCKS


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_align_docs_python_block_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(BLOCKS[index].compile(), {})
