"""``cache build`` options: a camera map reaches the source and the manifest (and the rebuild
command), and a bad layer or a kind a policy cannot give fails before anything is written."""

import pytest
from typer.testing import CliRunner

from policylens.anchors import build_cache
from policylens.cli._cache import app, build_command
from policylens.store import StoreError, read_manifest

runner = CliRunner()


def test_camera_map_reaches_the_manifest_and_the_rebuild_command(tmp_path):
    from policylens.sim.pybullet import generate_episodes

    data = generate_episodes("reach", 1, tmp_path / "d", seed=0, fmt="lerobot", image_size=56, progress=False)[0]
    out = str(tmp_path / "store")
    mapping = "varied_camera_2=varied_camera_1,hand_camera=hand_camera"
    args = ["build", "--dataset", f"lerobot:{data}", "--camera-map", mapping, "--batch-size", "4", "--out", out]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert read_manifest(out)["meta"]["extra"]["camera_map"] == {
        "varied_camera_2": "varied_camera_1",
        "hand_camera": "hand_camera",
    }
    assert "--camera-map hand_camera=hand_camera,varied_camera_2=varied_camera_1" in build_command(out)
    res = runner.invoke(app, ["build", "--dataset", f"lerobot:{data}", "--camera-map", "nope", "--out", out])
    assert res.exit_code == 2 and "camera_map='nope'" in res.output


def test_a_bad_layer_fails_before_the_store_exists(tmp_path):
    out = tmp_path / "never"
    res = runner.invoke(app, ["build", "--dataset", "synthetic:2", "--layer", "99", "--out", str(out)])
    assert res.exit_code == 2 and "llm has" in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert not out.exists()


def test_an_align_kind_is_refused_before_the_policy_loads(tmp_path):
    out = tmp_path / "never"
    res = runner.invoke(app, ["build", "--dataset", "synthetic:2", "--kind", "patch_grid", "--out", str(out)])
    text = " ".join(res.output.replace("│", " ").split())  # click's box, unwrapped
    assert res.exit_code == 2 and "'patch_grid' is not one of 'hidden_feature', 'hidden_state'," in text
    assert not out.exists()
    with pytest.raises(StoreError, match=r"kind='patch_grid'.*align extract"):  # the library says where it comes from
        build_cache("tiny_vla", "synthetic:2", str(out), kind="patch_grid")
