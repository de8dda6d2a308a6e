"""Shared fixtures for the data tests: one tiny generated dataset per format, per session."""

import pytest

from policylens.data.sim import generate_episodes


@pytest.fixture(scope="session")
def droid_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("droid")
    return generate_episodes("reach", 2, root, seed=0, fmt="droid", image_size=64, progress=False)


@pytest.fixture(scope="session")
def lerobot_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("lerobot")
    return generate_episodes("reach", 2, root, seed=0, fmt="lerobot", image_size=64, progress=False)[0]
