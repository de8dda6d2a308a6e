"""The import rules of docs/architecture.md, kept by reading every ``import`` of src/policylens.

The graph holds module-level and function-level imports, absolute and relative, and modules named
by a string that is exactly a module's dotted name (``importlib.import_module(name)`` registries).
Rules: a floor imports only floors below it; no job imports another job; no module imports another
room's private module (``policylens.x._y`` from outside ``x``); no import cycle between rooms.
What breaks a rule today is listed in ``PENDING`` with its reason: the test fails when a new
violation appears and when a listed one is gone (delete its line), so the list only shrinks.
"""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "policylens"

# room -> floor. A room is a top-level subpackage or module of policylens ("policylens" is __init__).
FLOORS = {
    "policylens": 1, "_jsonfile": 1, "_intervals": 1, "tap": 1, "store": 1, "runs": 1,
    "data": 2,
    "models": 3,
    "sim": 4,
    "anchors": 5, "retain": 5, "align": 5, "accel": 5, "attention": 5,
    "cli": 6, "_demo": 6, "_demo_jobs": 6,
}  # fmt: skip
# Top-level helper modules: the bottom of floor 1, importable from every floor; they import no room.
# Rooms of one floor do not import each other, except on floor 6 (the entry points: cli runs the demo).
HELPERS = {"policylens", "_jsonfile", "_intervals"}
JOBS = {room for room, floor in FLOORS.items() if floor == 5}

# rule -> {"importer -> imported": why it is still there}
PENDING: dict[str, dict[str, str]] = {"floor": {}, "job": {}, "private": {}, "cycle": {}}


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(src: Path) -> dict[tuple[str, str], int]:
    """``{(importer, imported): first line}`` over every ``.py`` file under the package ``src``."""
    files = {module_name(p, src): p for p in sorted(src.rglob("*.py"))}
    top = src.name
    edges: dict[tuple[str, str], int] = {}

    def add(importer: str, imported: str, line: int) -> None:
        if imported != importer:
            edges.setdefault((importer, imported), line)

    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name == top or alias.name.startswith(f"{top}."):
                        add(name, alias.name, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                if module != top and not module.startswith(f"{top}."):
                    continue
                for alias in node.names:
                    full = f"{module}.{alias.name}"
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    add(name, full if full in files or private else module, node.lineno)
            elif isinstance(node, ast.Constant) and node.value in files and "." in node.value:
                add(name, node.value, node.lineno)  # a module named by a string (importlib.import_module)
    return edges


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def is_private(module: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in module.split(".")[2:])


def violations(edges: dict[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """``{rule: {"importer -> imported": line}}`` for the four rules (cycles: ``"a <-> b": 0``)."""
    found: dict[str, dict[str, int]] = {rule: {} for rule in PENDING}
    rooms: dict[str, set[str]] = defaultdict(set)
    for (src, dst), line in edges.items():
        a, b = room(src), room(dst)
        if a == b:
            continue
        rooms[a].add(b)
        key = f"{src} -> {dst}"
        up, sideways = FLOORS.get(b, 99) > FLOORS.get(a, 0), FLOORS.get(b, 99) == FLOORS.get(a, 0)
        if a in HELPERS or up or (sideways and b not in HELPERS and FLOORS[a] < 5):  # 5: the job rule; 6: entry points
            found["floor"][key] = line
        if a in JOBS and b in JOBS:
            found["job"][key] = line
        if is_private(dst):
            found["private"][key] = line
    for cycle in room_cycles(rooms):
        found["cycle"][" <-> ".join(cycle)] = 0
    return found


def room_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected sets of more than one room (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            members = []
            while True:
                w = stack.pop()
                members.append(w)
                if w == v:
                    break
            if len(members) > 1:
                out.append(sorted(members))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(out)


FOUND = violations(import_graph(SRC))


@pytest.mark.parametrize("rule", list(PENDING))
def test_import_rule_holds_except_the_pending_list(rule):
    found, pending = FOUND[rule], PENDING[rule]
    new = [f"{key} (line {line})" if line else key for key, line in sorted(found.items()) if key not in pending]
    fixed = sorted(set(pending) - set(found))
    assert not new, f"new {rule} violations (see docs/architecture.md): {new}"
    assert not fixed, f"fixed, delete from PENDING[{rule!r}] in tests/test_layout.py: {fixed}"


def test_every_room_has_a_floor():
    rooms = {p.stem for p in SRC.glob("*.py")} | {p.parent.name for p in SRC.glob("*/__init__.py")}
    rooms = {"policylens" if r == "__init__" else r for r in rooms}
    assert sorted(rooms - set(FLOORS)) == [], "place the new room on a floor in FLOORS and docs/architecture.md"


def test_architecture_doc_names_every_room():
    text = (ROOT / "docs" / "architecture.md").read_text()
    present = {p.parent.name for p in SRC.glob("*/__init__.py")}
    assert sorted(r for r in present if f"`{r}/`" not in text) == []


def test_the_graph_sees_every_kind_of_import(tmp_path):
    pkg = tmp_path / "pkg"
    for rel, text in {
        "__init__.py": "",
        "low/__init__.py": "from ._a import f\n",
        "low/_a.py": "def f():\n    from ..high import g\n    return g\n",
        "high/__init__.py": "import pkg.low\nfrom pkg.low import _a, f\n",
        "high/_b.py": "import importlib\nMODULES = ('pkg.low._a',)\ndef h():\n    import pkg.high as x\n",
    }.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    assert import_graph(pkg) == {
        ("pkg.low", "pkg.low._a"): 1,
        ("pkg.low._a", "pkg.high"): 2,  # relative, inside a function
        ("pkg.high", "pkg.low"): 1,
        ("pkg.high", "pkg.low._a"): 2,
        ("pkg.high._b", "pkg.low._a"): 2,  # named by a string
        ("pkg.high._b", "pkg.high"): 4,
    }
    assert room_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
