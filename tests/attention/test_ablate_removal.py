"""A camera removed through the policy's own path (transformers' pi0 / pi0.5: its
``pixel_attention_mask`` slot False and no image tokens for it, as the processor writes a sample
without that image; LeRobot: left out of the batch, padded by the policy), none for TinyVLA; and the
attention mass per span against hand counts (loops in float64) on a built example and a tiny VLA."""

import numpy as np
import pytest
import torch

from policylens.attention import policy_batch, removal_unavailable, span_mass
from policylens.attention._ablate_open import _forward
from policylens.models import LeRobotTeacher, NativePIPolicy, TinyVLA, TinyVLAConfig, lerobot_adapter
from policylens.tap import TokenSpans, capture, register_adapter, tap_name

TEXTS = ["pick up the cube", "go left"]


def _frames(cams, n=2, size=(20, 30), seed=0):
    rng = np.random.default_rng(seed)
    return {c: rng.integers(0, 256, (n, *size, 3), dtype=np.uint8) for c in cams}


@pytest.fixture(scope="module", params=["pi0", "pi05"])
def native(request):
    transformers = pytest.importorskip("transformers")
    if not hasattr(transformers, "PI05ForConditionalGeneration"):
        pytest.skip(f"transformers {transformers.__version__} has no native pi0 / pi0.5")
    import pi_zoo

    model, proc = pi_zoo.pair(request.param)
    return NativePIPolicy(model, proc), proc


def _noise(policy, n=2):
    return torch.randn(n, *policy.noise_shape, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("removed", [2, 1])
def test_native_pi_removal_is_the_processors_batch_without_that_image(native, removed):
    policy, proc = native
    cams = policy.config.cameras
    frames, state = _frames(cams), np.random.default_rng(1).normal(size=(2, 7)).astype(np.float32)
    ours = policy_batch(policy, frames, TEXTS, state, removed=(cams[removed],))
    kept = [c for c in cams if c != cams[removed]]
    ref = proc(images=[[frames[c][i] for c in kept] for i in range(2)], text=TEXTS, state=torch.from_numpy(state))
    assert torch.equal(ours["input_ids"], ref["input_ids"]) and torch.equal(
        ours["attention_mask"], ref["attention_mask"]
    )
    present = [k for k in range(3) if k != removed]
    assert not ours["pixel_attention_mask"][:, removed].any() and ours["pixel_attention_mask"][:, present].all()
    assert (ours["pixel_values"][:, removed] == 0).all()
    assert torch.equal(ours["pixel_values"][:, present], ref["pixel_values"])
    layout = policy.token_layout(ours)["prefix"]
    assert not layout[f"image[{cams[removed]}]"].any() and all(layout[f"image[{c}]"].sum(1).eq(4).all() for c in kept)
    # the model's own path: the same actions as from the processor's two-camera batch (cameras in other slots)
    a, b = policy.sample_actions(ours, noise=_noise(policy)), policy.sample_actions(dict(ref), noise=_noise(policy))
    assert torch.allclose(a, b, atol=1e-5)
    full = policy.sample_actions(policy_batch(policy, frames, TEXTS, state), noise=_noise(policy))
    assert not torch.allclose(a, full, atol=1e-4)  # removing the camera changes the actions


def test_native_pi_mass_on_a_removed_camera_is_zero_and_the_spans_sum_to_one(native):
    policy, _ = native
    cams = policy.config.cameras
    frames, state = _frames(cams), np.zeros((2, 7), np.float32)
    batch = policy_batch(policy, frames, TEXTS, state, removed=(cams[0],))
    _, mass = _forward(policy, batch, [0, 1], 0, cams)
    for layer in (0, 1):
        m = mass[layer]
        assert np.allclose(m[f"image[{cams[0]}]"], 0) and (m[f"image[{cams[1]}]"] > 0).all()
        total = m["pad"] + m["instruction"] + sum(m[f"image[{c}]"] for c in cams)
        if policy.variant == "pi0":
            assert np.allclose(total, 1, atol=1e-5)
        else:  # pi0.5's state tokens (in the prompt) are neither text nor image: the rest stays below 1
            assert (total <= 1 + 1e-5).all() and (total > 0.5).all()
    every = policy_batch(policy, frames, TEXTS, state, removed=tuple(cams))  # all cameras: still runs
    assert not policy.token_layout(every)["prefix"]["image"].any()
    assert torch.isfinite(policy.sample_actions(every, noise=_noise(policy))).all()


def test_lerobot_removal_leaves_the_camera_out_and_the_policy_pads_it():
    from lerobot_zoo import Pi0LikeConfig, Pi0LikePolicy, byte_preprocessor

    register_adapter("lerobot_zoo.Pi0LikePolicy", lambda _m: lerobot_adapter("pi0"))
    policy = Pi0LikePolicy(Pi0LikeConfig(state_dim=7, max_state_dim=8), seed=1)
    teacher = LeRobotTeacher(policy, byte_preprocessor(policy), "pi0")
    base, wrist = teacher.config.cameras
    frames, state = _frames(teacher.config.cameras), np.zeros((2, 7), np.float32)
    batch = policy_batch(teacher, frames, TEXTS, state, removed=(wrist,))
    assert base in batch and wrist not in batch
    images, masks = policy._preprocess_images(batch)
    assert len(images) == 2 and masks[0].all() and not masks[1].any() and (images[1] == -1).all()
    assert not teacher.token_layout(batch)["prefix"][f"image[{wrist}]"].any()
    _, mass = _forward(teacher, batch, [0], 0, [base, wrist])
    assert np.allclose(mass[0][f"image[{wrist}]"], 0) and (mass[0]["pad"] < 1e-6).all()
    assert removal_unavailable(teacher, 1, 2) is None
    assert "without any camera" in removal_unavailable(teacher, 2, 2)
    with pytest.raises(ValueError, match="without any camera"):
        policy_batch(teacher, frames, TEXTS, state, removed=(base, wrist))


def test_tiny_vla_has_no_missing_camera_path():
    model = TinyVLA(TinyVLAConfig(image_size=28, patch_size=14, layers=2)).eval()
    assert "no missing-camera path" in removal_unavailable(model, 1, 2)
    with pytest.raises(ValueError, match=r"removing cameras \['hand_camera'\]: TinyVLA .* no missing-camera path"):
        policy_batch(model, _frames(model.config.cameras), TEXTS, np.zeros((2, 7)), removed=("hand_camera",))


def _hand_count(probs, queries, keys):
    """Loops: per sample, the mean over heads and own query rows of the probability summed over keys."""
    b_, h_, q_, k_ = len(probs), len(probs[0]), len(probs[0][0]), len(probs[0][0][0])
    out = []
    for b in range(b_):
        rows = [q for q in range(q_) if queries[b][q]]
        if not rows:
            out.append(float("nan"))
            continue
        total = sum(float(probs[b][h][q][k]) for h in range(h_) for q in rows for k in range(k_) if keys[b][k])
        out.append(total / (h_ * len(rows)))
    return np.array(out)


def test_span_mass_equals_a_hand_count_on_a_built_example():
    g = torch.Generator().manual_seed(0)
    probs = torch.rand(3, 2, 3, 7, generator=g, dtype=torch.float64)
    probs = probs / probs.sum(-1, keepdim=True)
    valid = torch.tensor([[0, 1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    image = torch.zeros_like(valid)
    image[:, 1:3] = True
    image[2, 1:3] = False
    text = valid & ~image
    queries = torch.tensor([[1, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=torch.bool)
    prefix = TokenSpans({"image[cam]": image, "text": text, "valid": valid}, ("cam",))
    got = span_mass(probs, queries, prefix, ["cam"])
    first = torch.zeros_like(valid)
    first[0, 1], first[1, 0], first[2, 0] = True, True, True  # the first valid token of each sample
    for span, keys in (("pad", ~valid), ("sink", first), ("instruction", text), ("image[cam]", image)):
        want = _hand_count(probs.tolist(), queries.tolist(), keys.tolist())
        assert np.allclose(got[span][:2], want[:2], rtol=0, atol=1e-12), span
        assert np.isnan(got[span][2]) and np.isnan(want[2])  # no query row: no mass
    assert got["pad"][0] > 0.2  # the example puts real mass on padding


def test_mass_of_a_tiny_vla_equals_a_hand_count_from_the_full_maps():
    torch.manual_seed(0)
    model = TinyVLA(TinyVLAConfig(image_size=28, patch_size=14, layers=2)).eval()
    cams = list(model.config.cameras)
    batch = policy_batch(model, _frames(cams, size=(28, 28)), ["reach the red cube", "go"], np.zeros((2, 7)))
    _, mass = _forward(model, batch, [1], 0, cams)
    with capture(model, [tap_name("llm", 1, "attn.probs")]) as cap:
        model.sample_actions(batch, generator=torch.Generator().manual_seed(0))
    probs = cap.calls(tap_name("llm", 1, "attn.probs"))[0].double().tolist()  # every query row
    prefix = model.token_layout(batch)["prefix"]
    text, valid = prefix["text"].tolist(), prefix["valid"]
    first = torch.zeros_like(valid)
    first[:, 0] = True  # TinyVLA's prefix starts with image tokens: the first valid token is the first patch
    spans = {"pad": ~valid, "sink": first, "instruction": prefix["text"]}
    spans |= {f"image[{c}]": prefix[f"image[{c}]"] for c in cams}
    for span, keys in spans.items():
        assert np.allclose(mass[1][span], _hand_count(probs, text, keys.tolist()), atol=1e-6), span
    assert (prefix["pad"].sum(1) > 0).all()  # both samples are padded: the pad column is a real count (of ~0)
