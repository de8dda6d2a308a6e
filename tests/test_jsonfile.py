"""Checkpoint, calibration and episode JSON files that are damaged give an error naming the file."""

import pytest

from policylens.accel import Calibration
from policylens.models import load_policy


@pytest.mark.parametrize(
    ("load", "name", "what"),
    [(load_policy, "config.json", "policy checkpoint config"), (Calibration.load, "cal.json", "BAC calibration")],
)
@pytest.mark.parametrize(
    ("content", "why"),
    [(b'{"type": "tiny_', "not valid JSON"), (b"\xff\xfe", "not UTF-8"), (b"[1, 2]", "holds a JSON list")],
)
def test_damaged_json_names_the_file(tmp_path, load, name, what, content, why):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=why) as err:
        load(tmp_path if name == "config.json" else tmp_path / name)
    assert str(tmp_path / name) in str(err.value) and what in str(err.value)
