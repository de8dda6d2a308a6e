"""The jobs on a saved native pi0 / pi0.5 (model + processor): an anchor cache equals a direct
capture on the same frames, the bridge and token-level kinds build, and the attention job writes
maps of the policy's patch grid for every camera."""

import json

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "PI05ForConditionalGeneration"):  # 5.24 had pi0 only, its processor on torchvision
    pytest.skip(
        f"transformers {transformers.__version__} has no native pi0 / pi0.5 (5.25 added them)", allow_module_level=True
    )

import pi_zoo  # noqa: E402
from policylens.anchors import build_cache  # noqa: E402
from policylens.attention import AttentionRunConfig, run_attention  # noqa: E402
from policylens.data import EpisodeFeed, open_episodes  # noqa: E402
from policylens.models import load_model  # noqa: E402
from policylens.sim.pybullet import generate_episodes  # noqa: E402
from policylens.store import open_store  # noqa: E402
from policylens.tap import capture, masked_mean  # noqa: E402

CAMERA_MAP = {
    "varied_camera_1": "base_0_rgb",
    "hand_camera": "left_wrist_0_rgb",
    "varied_camera_2": "right_wrist_0_rgb",
}


@pytest.fixture(scope="module")
def droid(tmp_path_factory):
    root = tmp_path_factory.mktemp("droid")
    generate_episodes("reach", 1, root, seed=0, fmt="droid", image_size=32, progress=False)
    return root


@pytest.fixture(scope="module", params=("pi0", "pi05"))
def saved(request, tmp_path_factory):
    model, proc = pi_zoo.pair(request.param)
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return path


def test_hidden_feature_cache_equals_a_direct_capture(saved, droid, tmp_path):
    out = tmp_path / "cache"
    build_cache(str(saved), f"droid:{droid}", str(out), layers=(1,), dtype="float32", camera_map=CAMERA_MAP,
                progress=False, batch_size=4)  # fmt: skip
    stored = open_store(out)[list(range(3))]["target_features"]
    policy = load_model(saved).eval()
    feed = EpisodeFeed(policy, open_episodes(f"droid:{droid}"), CAMERA_MAP)
    batch = feed.batch(0, [0, 1, 2])
    with torch.no_grad(), capture(policy, ["llm.layers.1.out"]) as cap:
        policy.run_prefix(batch)
    image = policy.token_layout(batch)["prefix"]["image"]
    want = masked_mean(cap["llm.layers.1.out"], image)
    torch.testing.assert_close(stored, want, rtol=1e-5, atol=1e-6)
    assert int(image.sum(1)[0]) == 3 * 4  # three cameras of a 2 x 2 patch grid


@pytest.mark.parametrize("kind", ["bridge", "token_level"])
def test_other_cache_kinds_build(saved, droid, tmp_path, kind):
    out = tmp_path / kind
    build_cache(str(saved), f"droid:{droid}", str(out), kind=kind, camera_map=CAMERA_MAP, progress=False)
    store = open_store(out)
    features = [k for k, f in store.manifest["fields"].items() if f["role"] == "feature"]
    assert len(store) > 0 and features
    assert all(torch.isfinite(store[[0]][k].float()).all() for k in features)


def test_attention_run_maps_every_camera_on_the_patch_grid(saved, droid, tmp_path):
    out = tmp_path / "attention"
    cfg = AttentionRunConfig(layers=(1,), every=8, camera_map=CAMERA_MAP, phases=("prefix", "suffix"), videos=False)
    run_attention(str(saved), f"droid:{droid}", out, cfg, progress=False)
    assert json.loads((out / "run.json").read_text())
    import zarr

    arrays = zarr.open_group(str(next(out.rglob("attention.zarr"))), mode="r")
    for phase in ("prefix", "suffix"):
        for cam in CAMERA_MAP.values():
            maps = np.asarray(arrays[f"{phase}_L1/{cam}"])
            assert maps.shape[-2:] == (2, 2) and np.isfinite(maps).all() and maps.max() > 0


def test_synthetic_samples_come_from_the_policys_example_batch(saved, tmp_path):
    out = tmp_path / "synthetic"
    build_cache(str(saved), "synthetic:2", str(out), layers=(0,), dtype="float32", progress=False)
    stored = open_store(out)[[0, 1]]["target_features"]
    policy = load_model(saved).eval()
    batch = {k: v[0:1] for k, v in policy.example_batch(1, seed=1).items()}
    with torch.no_grad(), capture(policy, ["llm.layers.0.out"]) as cap:
        policy.run_prefix(batch)
    want = masked_mean(cap["llm.layers.0.out"], policy.token_layout(batch)["prefix"]["image"])
    torch.testing.assert_close(stored[1:2], want, rtol=1e-5, atol=1e-6)
