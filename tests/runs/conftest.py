"""Each test registers its toy policy types in a registry of its own; the real one is left as it was."""

import pytest

from policylens.runs import _policy_registry


@pytest.fixture
def registry(monkeypatch):
    monkeypatch.setattr(_policy_registry, "_TYPES", {})
    monkeypatch.setattr(_policy_registry, "_NAMES", {})
    return _policy_registry
