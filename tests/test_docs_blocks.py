"""Every python block of README.md and docs/*.md runs (see tests/docs_blocks.py for the markers).

The blocks of one file run in order in one namespace, in a temporary working directory of their own;
a file whose blocks open files the reader made earlier (episodes written by ``sim generate``, a
LeRobot dataset recorded elsewhere) gets them from ``SETUP``, at tiny sizes, before its first block.
``illustrative`` blocks are compiled only; ``requires`` blocks run where their stack is installed.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from docs_blocks import ROOT, STACKS, Block, python_blocks

FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [block for path in FILES for block in python_blocks(path)]


def _installed(stack: str) -> bool:
    if stack == "gpu":
        return torch.cuda.is_available()
    if stack == "mujoco-render":  # OSMesa on a headless machine, else a display or MUJOCO_GL=egl
        headless = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
        gl = os.environ.get("MUJOCO_GL", "").lower()
        return _installed("metaworld") and (
            gl == "egl" or (not headless and gl != "osmesa") or bool(ctypes.util.find_library("OSMesa"))
        )
    module = {"lerobot": "lerobot", "vla-adapter": "prismatic", "metaworld": "metaworld"}[stack]
    return importlib.util.find_spec(module) is not None


def _my_robot(root: Path) -> None:
    """A LeRobot dataset recorded with cameras ``side`` and ``wrist`` (4 steps, 32 px)."""
    from policylens.data.lerobot import LeRobotWriter

    rng = np.random.default_rng(0)
    writer = LeRobotWriter(root, fps=15, masks=False)
    writer.add_episode({
        "instruction": "pick the cube", "success": True, "seed": 0, "scene": {},
        "actions": rng.normal(size=(4, 7)).astype(np.float32),
        "proprio": rng.normal(size=(4, 7)).astype(np.float32),
        "state": rng.normal(size=(4, 7)).astype(np.float32),
        "images": {c: rng.integers(0, 255, (4, 32, 32, 3), dtype=np.uint8) for c in ("side", "wrist")},
        "intrinsics": {c: np.eye(3) for c in ("side", "wrist")},
        "extrinsics": {c: np.repeat(np.eye(4)[None], 4, 0) for c in ("side", "wrist")},
    })  # fmt: skip
    writer.finalize()


def _formats_files(root: Path) -> None:
    from policylens.sim.pybullet import generate_episodes

    generate_episodes("reach", 1, root / "episodes", fmt="droid", image_size=64, progress=False)
    generate_episodes("reach", 1, root / "datasets" / "reach_lerobot", fmt="lerobot", image_size=32, progress=False)
    _my_robot(root / "datasets" / "my_robot")
    assert (root / "episodes/success/2026-01-01/2026-01-01-00h-00m-00s").is_dir()


SETUP = {"formats.md": _formats_files}  # file name -> what the reader made before its first block


class _Page:
    """The running state of one markdown file: its namespace, working directory and blocks run."""

    def __init__(self, workdir: Path) -> None:
        self.namespace: dict = {"__name__": "__docs__"}
        self.workdir, self.ran, self.failed = workdir, set(), None


_PAGES: dict[Path, _Page] = {}


def _skip_reason(block: Block) -> str | None:
    if block.illustrative:
        return None
    missing = [s for s in block.requires if not _installed(s)]
    if missing:
        return f"requires {', '.join(missing)} (not installed here)"
    if block.slow and os.environ.get("POLICYLENS_SLOW_DOCS") != "1":
        return "slow: set POLICYLENS_SLOW_DOCS=1"
    return None


def _run(page: _Page, block: Block) -> None:
    if page.failed is not None:
        pytest.fail(f"{page.failed} failed earlier on this page; its later blocks share its namespace")
    try:
        exec(block.compile(), page.namespace)
    except BaseException:
        page.failed = block.name
        raise
    page.ran.add(block.index)


@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_docs_block(block, tmp_path_factory, monkeypatch):
    code = block.compile()  # every block, run or not, is valid Python
    assert code is not None
    if block.illustrative:
        return
    if reason := _skip_reason(block):
        pytest.skip(reason)
    if block.path not in _PAGES:
        _PAGES[block.path] = _Page(tmp_path_factory.mktemp(block.path.stem))
        monkeypatch.chdir(_PAGES[block.path].workdir)
        if block.path.name in SETUP:
            SETUP[block.path.name](_PAGES[block.path].workdir)
    page = _PAGES[block.path]
    monkeypatch.chdir(page.workdir)
    for earlier in python_blocks(block.path)[: block.index]:  # when run alone (-k), the page up to here
        if earlier.index not in page.ran and not earlier.illustrative and _skip_reason(earlier) is None:
            _run(page, earlier)
    _run(page, block)


def test_every_page_is_collected():
    assert {b.path.name for b in BLOCKS} >= {"README.md", "formats.md", "sim.md", "retention.md", "bac.md"}
    assert all(set(b.requires) <= set(STACKS) for b in BLOCKS)


def test_markers_are_read(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# A\n\n```python\nx = 1\n```\n\n## B\n\n<!-- requires: metaworld, gpu -->\n<!-- slow -->\n"
        "```python\ny = x\n```\n\n<!-- illustrative -->\n```python\nloop(undefined)\n```\n"
        "\n```bash\n# not a heading\n```\n\n```python\nz = 1 / 0\n```\n"
    )
    first, second, third, fourth = python_blocks(page)
    assert (first.line, first.code, first.headings, first.requires) == (4, "x = 1\n", ("A",), ())
    assert (second.requires, second.slow, second.illustrative, second.headings) == (
        ("metaworld", "gpu"), True, False, ("A", "B"))  # fmt: skip
    assert third.illustrative and not third.slow
    assert fourth.headings == ("A", "B") and [b.index for b in python_blocks(page, "B")] == [1, 2, 3]
    with pytest.raises(ZeroDivisionError) as info:
        exec(fourth.compile(), {})
    assert info.traceback[-1].lineno + 1 == 25  # the markdown's own line number
    page.write_text("<!-- requires: lerobbot -->\n```python\nx = 1\n```\n")
    with pytest.raises(ValueError, match="lerobbot"):
        python_blocks(page)
    page.write_text("<!-- ilustrative -->\n```python\nx = 1\n```\n")
    with pytest.raises(ValueError, match="unknown marker"):
        python_blocks(page)
