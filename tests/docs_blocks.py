"""The python blocks of a markdown file, with the HTML-comment markers written right above each.

Markers (one comment per line, directly above the opening fence):
``<!-- requires: lerobot -->`` (optional stacks, comma-separated, from ``STACKS``: run only where
installed), ``<!-- illustrative -->`` (a fragment with names the reader supplies: compiled, never run;
a ``requires`` beside it says what the reader needs) and ``<!-- slow -->`` (run only with
``POLICYLENS_SLOW_DOCS=1``). An unknown marker raises, so a typo
cannot silence a block. ``Block.compile()`` keeps the markdown's line numbers in tracebacks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STACKS = ("lerobot", "vla-adapter", "metaworld", "mujoco-render", "gpu")
_FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
_MARKER = re.compile(r"<!--\s*(.*?)\s*-->")


@dataclass(frozen=True)
class Block:
    path: Path
    index: int  # among the file's python blocks
    line: int  # 1-based line of the first code line
    code: str
    headings: tuple[str, ...]  # the enclosing headings, outermost first
    requires: tuple[str, ...] = ()
    illustrative: bool = False
    slow: bool = False

    @property
    def name(self) -> str:
        return f"{self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path}:{self.line}"

    def compile(self):
        """The code object, its line numbers and file name those of the markdown."""
        return compile("\n" * (self.line - 1) + self.code, str(self.path), "exec")


def _markers(lines: list[str], fence: int, where: str) -> dict:
    found: dict = {"requires": (), "illustrative": False, "slow": False}
    i = fence - 1
    while i >= 0 and (m := _MARKER.fullmatch(lines[i].strip())):
        word, _, rest = m.group(1).partition(":")
        word = word.strip()
        if word == "requires":
            stacks = tuple(s.strip() for s in rest.split(",") if s.strip())
            unknown = [s for s in stacks if s not in STACKS]
            if not stacks or unknown:
                raise ValueError(f"{where}: 'requires:' takes stacks from {', '.join(STACKS)}, got {rest.strip()!r}")
            found["requires"] += stacks
        elif word in ("illustrative", "slow") and not rest:
            found[word] = True
        else:
            raise ValueError(f"{where}: unknown marker {m.group(0)!r}; use requires: STACK, illustrative or slow")
        i -= 1
    return found


def _headings(lines: list[str]) -> list[tuple[str, ...]]:
    """The enclosing headings of each line (``#`` lines inside fences are code, not headings)."""
    out, path, fenced = [], [], False
    for ln in lines:
        if ln.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"(#+)\s+(.*)", ln)):
            path = [*path[: len(m.group(1)) - 1], m.group(2).strip()]
        out.append(tuple(path))
    return out


def python_blocks(path: str | Path, section: str | None = None) -> list[Block]:
    """Every ```` ```python ```` block of ``path`` in order; with ``section``, those under that heading."""
    path = Path(path)
    text = path.read_text()
    lines = text.splitlines()
    headings = _headings(lines)
    blocks = []
    for m in _FENCE.finditer(text):
        fence = text.count("\n", 0, m.start())  # 0-based line of the opening fence
        marks = _markers(lines, fence, f"{path.name}:{fence + 1}")
        blocks.append(Block(path, len(blocks), fence + 2, m.group(1), headings[fence], **marks))
    return blocks if section is None else [b for b in blocks if section in b.headings]
