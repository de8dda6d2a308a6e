"""`cache build` sets torch's thread count (--threads): these tests run it with one thread, as the
rest of the suite runs, and put back the count they found."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("POLICYLENS_THREADS", "1")
    yield
    torch.set_num_threads(before)
