"""A LeRobot policy as a cache teacher: dataset frames go through the policy's own
pre-processor, the taps are the policy's, and a LeRobot checkpoint directory is recognised
(loading it needs lerobot, which CI does not have: the error says so)."""

import json

import pytest
import torch

from lerobot_zoo import LANG_MASK, Pi0LikeConfig, Pi0LikePolicy, byte_preprocessor, pi0_like_batch
from policylens.anchors import open_source, policy_extractor
from policylens.models import LeRobotTeacher, is_lerobot_checkpoint, lerobot_adapter, load_model
from policylens.tap import list_taps, register_adapter

register_adapter("lerobot_zoo.Pi0LikePolicy", lambda _m: lerobot_adapter("pi0"))
CAMERAS = {"varied_camera_1": "observation.images.base", "hand_camera": "observation.images.wrist"}


@pytest.fixture(scope="module")
def teacher():
    policy = Pi0LikePolicy(Pi0LikeConfig(state_dim=7, max_state_dim=8), seed=1)
    return LeRobotTeacher(policy, byte_preprocessor(policy), "pi0")


@pytest.fixture(scope="module")
def reach(tmp_path_factory):
    from policylens.sim.pybullet import generate_episodes

    root = tmp_path_factory.mktemp("reach")
    return generate_episodes("reach", 1, root / "lerobot", seed=0, fmt="lerobot", image_size=56, progress=False)[0]


def test_teacher_taps_are_the_policys_own(teacher):
    ours = list_taps(teacher)
    theirs = list_taps(teacher.policy)
    assert [t.name for t in ours] == [t.name for t in theirs]
    assert all(a.module_path == "policy." + b.module_path for a, b in zip(ours, theirs, strict=True))
    assert teacher.config.cameras == list(CAMERAS.values()) and teacher.config.state_dim == 7


def test_cache_features_from_dataset_frames_through_the_preprocessor(teacher, reach):
    source = open_source(teacher, f"lerobot:{reach}", camera_map=CAMERAS)
    sample = source[0]
    assert sample[LANG_MASK].sum() == 8 and sample["observation.images.base"].shape == (3, 28, 28)
    batch = {k: v[None] for k, v in sample.items()}
    run, taps = policy_extractor(teacher, "hidden_feature", [-2], "mean_image_tokens")
    features = run(batch)["target_features"]  # (1, 32)
    reference = []  # the decoder layer module's own output in the prefix pass
    layer = teacher.policy.model.paligemma_with_expert.language_model.layers[-2]
    hook = layer.register_forward_hook(lambda _m, _a, out: reference.append(out[0] if isinstance(out, tuple) else out))
    try:
        teacher.run_prefix(batch)
    finally:
        hook.remove()
    image_tokens = 2 * 4  # two cameras x (28 / 14)^2
    torch.testing.assert_close(features, reference[0][:, :image_tokens].mean(1), rtol=0, atol=1e-6)
    assert taps == ["llm.layers.-2.out"]


def test_sample_actions_is_seeded_and_leaves_the_global_rng(teacher):
    batch = pi0_like_batch(teacher.policy)
    batch["observation.state"] = batch["observation.state"][:, :7]
    state = torch.random.get_rng_state()
    a = teacher.sample_actions(batch, generator=torch.Generator().manual_seed(3))
    b = teacher.sample_actions(batch, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and torch.equal(torch.random.get_rng_state(), state)


def test_a_lerobot_checkpoint_directory_is_recognised(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"type": "pi0", "chunk_size": 50}))
    assert is_lerobot_checkpoint(tmp_path)
    try:
        import lerobot  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=rf"{tmp_path} is a LeRobot 'pi0' checkpoint.*pip install lerobot"):
            load_model(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"type": "tiny_vla"}))
    assert not is_lerobot_checkpoint(tmp_path)


def test_attention_maps_of_a_lerobot_teacher(teacher):
    from policylens.attention import extract_attention

    batch = pi0_like_batch(teacher.policy)
    batch["observation.state"] = batch["observation.state"][:, :7]
    out = extract_attention(teacher, batch, layers=[1])
    prefix, suffix = out[("prefix", 1)], out[("suffix", 1)]
    assert set(prefix.maps) == {"observation.images.base", "observation.images.wrist"}
    assert prefix.maps["observation.images.wrist"].shape == (2, 4, 2, 2)
    assert suffix.steps["observation.images.base"].shape[0] == teacher.policy.config.num_inference_steps
    total = prefix.mass["image"] + prefix.mass["text"] + prefix.mass["pad"]
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=5e-3)


def test_image_transform_undoes_the_policys_resize_with_pad(teacher):
    """A bright square on a wide frame goes through make_batch (resize with centred bars);
    the teacher's transform maps the model input back onto the square."""
    frame = torch.zeros(1, 40, 100, 3, dtype=torch.uint8)
    frame[:, 14:26, 20:32] = 255
    images = dict.fromkeys(teacher.config.cameras, frame)
    batch = teacher.make_batch(images, ["reach"], torch.zeros(1, 7))
    model_input = batch["observation.images.base"][0, 0]  # (28, 28), content 11 rows tall
    t = teacher.image_transform((40, 100))
    assert t.pad[0] + t.pad[2] == 28 - 11 and t.pad[0] == 8
    back = t.grid_to_frame(model_input, mode="bilinear") > 0.5
    square = frame[0, :, :, 0] > 0
    assert (back & square).sum() / (back | square).sum() > 0.6


def test_attention_job_runs_on_a_lerobot_teacher_with_a_camera_map(teacher, reach, tmp_path):
    from policylens.attention import AttentionRunConfig, run_attention

    cfg = AttentionRunConfig(layers=(1,), every=8, heads=False, videos=False, camera_map=CAMERAS)
    done = run_attention(teacher, f"lerobot:{reach}", tmp_path / "out", cfg, progress=False)
    folder = tmp_path / "out" / done[0]["folder"].split("/out/")[1]
    assert (folder / "00000" / "prefix_L1_max.jpg").is_file() and (folder / "00000" / "suffix_L1_max.jpg").is_file()
    assert done[0]["heads"] == 4
    with pytest.raises(ValueError, match="no camera.*camera_map"):
        run_attention(teacher, f"lerobot:{reach}", tmp_path / "other", AttentionRunConfig(layers=(1,)), progress=False)
