"""The CLI is one thin layer: its modules import each other without a cycle (shared helpers live in
``_common``), import no other subpackage's private module, call functions with keywords past the
third argument, and ``policylens --help`` imports no torch (every job does, for seconds)."""

import ast
import subprocess
import sys
from pathlib import Path

import policylens.cli

CLI = Path(policylens.cli.__file__).parent
PACKAGE = "policylens.cli"
# private modules of other subpackages the CLI still imports, and why (the list may only shrink)
PENDING_PRIVATE: dict[str, str] = {}
TABLES = {"Table", "table.add_row"}  # rich tables take their columns positionally


def _trees() -> dict[str, ast.Module]:
    return {f"{PACKAGE}.{p.stem}": ast.parse(p.read_text(), str(p)) for p in sorted(CLI.glob("*.py"))}


def _imports(tree: ast.Module) -> set[str]:
    """Every module (or ``module.name``) imported anywhere in ``tree``, relative ones resolved."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = PACKAGE.rsplit(".", node.level - 1)[0]
                base = f"{parent}.{base}" if base else parent
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each cycle found by a depth-first walk, as the path that closes it."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def cli_graph() -> dict[str, set[str]]:
    trees = _trees()
    return {name: {m for m in _imports(tree) if m in trees and m != name} for name, tree in trees.items()}


def test_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_among_cli_modules():
    graph = cli_graph()
    assert "policylens.cli._common" in graph["policylens.cli._train"]  # the walk sees relative imports
    assert _cycles(graph) == []


def test_no_private_module_of_another_subpackage():
    found = set()
    for tree in _trees().values():
        for module in _imports(tree):
            parts = module.split(".")
            private = [i for i, p in enumerate(parts) if i >= 2 and p.startswith("_")]
            if parts[0] == "policylens" and private and parts[1] != "cli":
                found.add(".".join(parts[: private[0] + 1]))  # the module, not the name imported from it
    assert found == set(PENDING_PRIVATE), found ^ set(PENDING_PRIVATE)


def test_calls_past_three_arguments_name_them():
    long_calls = []
    for name, tree in _trees().items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and len(node.args) > 3 and ast.unparse(node.func) not in TABLES:
                long_calls.append(f"{name}:{node.lineno} {ast.unparse(node.func)}")
    assert long_calls == []


def test_help_imports_no_torch():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from policylens.cli.main import app\n"
        "for args in ([], ['accel'], ['align'], ['attention'], ['cache'], ['retain'], ['sim'], ['train'],"
        " ['cache', 'build'], ['align', 'train'], ['retain', 'train'], ['taps']):\n"
        "    result = CliRunner().invoke(app, [*args, '--help'])\n"
        "    assert result.exit_code == 0, result.output\n"
        "heavy = sorted(m for m in ('torch', 'numpy', 'pybullet') if m in sys.modules)\n"
        "print('loaded:', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "loaded: []" in out.stdout, out.stdout
