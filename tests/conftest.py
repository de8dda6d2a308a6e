"""Fixtures shared by the whole suite (the model zoo lives in ``zoo.py``)."""

import pytest
import torch

from zoo import tiny_paligemma

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    """Commands set torch's thread count (--threads, default from POLICYLENS_THREADS): every test
    runs them with one thread, as the suite runs, and gets back the count it found."""
    before = torch.get_num_threads()
    monkeypatch.setenv("POLICYLENS_THREADS", "1")
    yield
    torch.set_num_threads(before)


@pytest.fixture
def paligemma():
    return tiny_paligemma()
