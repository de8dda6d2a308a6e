"""Generated MetaWorld episodes read back through the project's LeRobot and DROID readers."""

import json

import numpy as np
import pytest

pytest.importorskip("metaworld")

from policylens.data.droid import open_episode
from policylens.data.lerobot import open_dataset
from policylens.sim.metaworld import (
    MetaWorldEnv,
    _render,
    droid_record,
    generate_episodes,
    record_episode,
    train_layout_seed,
)

TASK, STEPS = "reach-v3", 30


@pytest.fixture(scope="module")
def recordings():
    with MetaWorldEnv(TASK, max_steps=STEPS) as env:
        return [record_episode(env, train_layout_seed(0, i)) for i in range(2)]


def test_lerobot_round_trip_keeps_metaworld_arrays(tmp_path, recordings):
    root = generate_episodes(TASK, 2, tmp_path / "lr", fmt="lerobot", max_steps=STEPS, progress=False)[0]
    ds = open_dataset(root)
    assert len(ds) == 2
    for i, rec in enumerate(recordings):
        ep = ds[i]
        assert ep.camera_names == [] and ep.instruction == "reach" and ep.success == rec["success"]
        np.testing.assert_allclose(ep.actions, rec["actions"], atol=1e-6)  # (T, 4) MetaWorld's own actions
        np.testing.assert_allclose(ep.state, rec["state"], atol=1e-6)  # (T, 39)
        np.testing.assert_allclose(ep.proprio, rec["proprio"], atol=1e-6)  # (T, 4)
    info = json.loads((root / "meta" / "info.json").read_text())
    assert info["fps"] == 80 and info["robot_type"] == "sawyer_metaworld" and info["video_path"] is None


def test_droid_round_trip_holds_absolute_targets(tmp_path, recordings):
    paths = generate_episodes(TASK, 2, tmp_path / "droid", fmt="droid", max_steps=STEPS, progress=False)
    for path, rec in zip(paths, recordings, strict=True):
        ep = open_episode(path)
        ref = droid_record(rec)
        assert ep.camera_names == [] and ep.success == rec["success"] and len(ep) == len(rec["actions"])
        np.testing.assert_allclose(ep.actions, ref["actions"], atol=1e-6)  # (T, 7) ee target, 0 rotation, gripper
        np.testing.assert_allclose(ep.proprio, ref["proprio"], atol=1e-6)
        np.testing.assert_allclose(ep.state, rec["state"], atol=1e-6)
        # each target moved by the action: 1 cm per unit (away from the workspace bounds)
        step = np.diff(ep.actions[:, :3], axis=0)
        np.testing.assert_allclose(step[:5], 0.01 * rec["actions"][1:6, :3], atol=2e-4)
    with pytest.raises(FileExistsError, match="already holds a droid dataset"):
        generate_episodes(TASK, 1, tmp_path / "droid", fmt="droid", max_steps=STEPS, progress=False)
    more = generate_episodes(TASK, 1, tmp_path / "droid", fmt="droid", if_exists="append", max_steps=5, progress=False)
    assert open_episode(more[0]).metadata["seed"] == train_layout_seed(0, 2)


@pytest.mark.skipif(_render._find_osmesa() is None, reason="rendering needs libosmesa6 (apt-get install libosmesa6)")
def test_rendered_episodes_round_trip(tmp_path):
    kw = {"cameras": ("corner", "gripperPOV"), "image_size": 32, "max_steps": 2, "progress": False}
    with MetaWorldEnv(TASK, cameras=kw["cameras"], image_size=32, max_steps=2) as env:
        rec = record_episode(env, train_layout_seed(0, 0))
    ep = open_episode(generate_episodes(TASK, 1, tmp_path / "droid", fmt="droid", **kw)[0])
    lr = open_dataset(generate_episodes(TASK, 1, tmp_path / "lr", fmt="lerobot", **kw)[0])[0]
    assert sorted(ep.camera_names) == ["corner", "gripperPOV"] and sorted(lr.camera_names) == ["corner", "gripperPOV"]
    for cam in ("corner", "gripperPOV"):
        for got in (ep, lr):
            err = np.abs(got.frame(cam, 1).astype(int) - rec["images"][cam][1].astype(int)).mean()
            assert err < 8, (cam, err)  # JPEG / H.264
            np.testing.assert_allclose(got.calibration[cam].intrinsics, rec["intrinsics"][cam])
        assert ep.calibration[cam].moving == (cam == "gripperPOV")
        np.testing.assert_allclose(ep.calibration[cam].extrinsics_at(1), rec["extrinsics"][cam][1], atol=1e-5)
