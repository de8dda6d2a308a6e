"""Fixtures shared by the whole suite (the model zoo lives in ``zoo.py``)."""

import pytest
import torch

from zoo import tiny_paligemma

torch.set_num_threads(1)


@pytest.fixture
def paligemma():
    return tiny_paligemma()
