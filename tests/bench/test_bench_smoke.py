"""Every benchmark runs at its ``--smoke`` size, so a refactor cannot break one unnoticed,
and none writes into the repository."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHES = sorted(p.name for p in (ROOT / "bench").glob("*.py"))


def _tree(root: Path) -> set[Path]:
    skip = {".git", ".venv", ".venv-oldest", "__pycache__", ".pytest_cache", ".ruff_cache"}
    return {p for p in root.rglob("*") if not skip & set(p.relative_to(root).parts)}


@pytest.mark.parametrize("script", BENCHES)
def test_benchmark_smoke_size_runs(script, tmp_path):
    assert "--smoke" in (ROOT / "bench" / script).read_text(), f"bench/{script} has no --smoke size"
    before = _tree(ROOT)
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__("os").environ, "TMPDIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "×" in result.stdout or "x B=1" in result.stdout, result.stdout[-2000:]  # a ratio was printed
    assert _tree(ROOT) - before == set(), "the benchmark wrote into the repository"
