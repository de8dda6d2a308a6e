"""Shared fixtures for the MetaWorld tests: one environment per module (making one takes ~1 s).

MuJoCo picks its GL backend when it is first imported, and the modules here import metaworld
(``pytest.importorskip``) at collection: choose the backend first, as ``policylens`` does before
its own first import (OSMesa on a machine without a display, when it is installed).
"""

import pytest

from policylens.sim.metaworld._render import configure_gl

configure_gl()


@pytest.fixture(scope="module")
def pick_place_env():
    pytest.importorskip("metaworld")
    from policylens.sim.metaworld import MetaWorldEnv

    with MetaWorldEnv("pick-place-v3") as env:
        yield env
