"""Test modules are imported by basename (no packages under tests/): two files with one name in
different folders stop the whole collection, so each name is used once."""

from collections import Counter
from pathlib import Path


def test_every_test_module_name_is_unique():
    names = Counter(p.name for p in Path(__file__).parent.rglob("test_*.py"))
    assert [n for n, c in names.items() if c > 1] == []
