"""pi0 / pi0.5 as transformers ships them (tiny random builds, offline): taps against plain forward
hooks, attention probabilities under SDPA against an eager copy's weights, the layout against the
model's own ``embed_prefix`` and the processor's prompt (a camera absent included), and the policy
wrapper that ``load_model`` returns for a saved model + processor."""

import copy

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
if not hasattr(transformers, "PI05ForConditionalGeneration"):  # 5.24 had pi0 only, its processor on torchvision
    pytest.skip(
        f"transformers {transformers.__version__} has no native pi0 / pi0.5 (5.25 added them)", allow_module_level=True
    )

import pi_zoo  # noqa: E402
from policylens.models import NativePIPolicy, load_model  # noqa: E402
from policylens.tap import capture, example_entry_points, get_adapter, list_taps, probe_taps  # noqa: E402

VARIANTS = ("pi0", "pi05")


def _frames(n_cams, seed=0, size=(20, 30)):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n_cams)]


@pytest.fixture(scope="module", params=VARIANTS)
def built(request):
    model, proc = pi_zoo.pair(request.param)
    batch = dict(proc(images=[_frames(2, 0), _frames(1, 1)], text=["pick up the cube", "go"], state=torch.randn(2, 7)))
    return request.param, model, proc, batch


def _inputs(variant, batch):
    keys = ["input_ids", "attention_mask", "pixel_values", "pixel_attention_mask"] + (["state"] * (variant == "pi0"))
    return {k: batch[k] for k in keys}


def _hooked(modules, fn):
    """Plain forward hooks recording every call's output (the reference, independent of tap)."""
    seen = {name: [] for name in modules}
    handles = [
        m.register_forward_hook(lambda _m, _i, out, n=name: seen[n].append(fn(out))) for name, m in modules.items()
    ]
    try:
        yield seen
    finally:
        for h in handles:
            h.remove()


def test_hidden_taps_equal_plain_hooks_and_the_expert_fires_per_flow_step(built):
    variant, model, _, batch = built
    vlm, dit = model.model.vlm, model.model.dit
    modules = {"llm.layers.1.out": vlm.language_model.layers[1], "expert.layers.0.out": dit.layers[0]}
    modules["vision.layers.1.out"] = vlm.vision_tower.encoder.layers[1]
    noise = torch.randn(2, pi_zoo.CHUNK, pi_zoo.MAX_DIM, generator=torch.Generator().manual_seed(0))
    gen = _hooked(modules, lambda out: (out[0] if isinstance(out, tuple) else out).detach().clone())
    seen = next(gen)
    with torch.no_grad(), capture(model, list(modules)) as cap:
        model.sample_actions(**_inputs(variant, batch), noise=noise)
    gen.close()
    for name in modules:
        assert len(cap.calls(name)) == len(seen[name]) and seen[name]
        for got, want in zip(cap.calls(name), seen[name], strict=True):
            torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert len(cap.calls("expert.layers.0.out")) == model.config.num_inference_steps
    assert len(cap.calls("llm.layers.1.out")) == 1


def test_attention_probs_under_sdpa_equal_an_eager_copy(built):
    variant, model, _, batch = built
    eager = copy.deepcopy(model)
    eager.model.vlm.config.text_config._attn_implementation = "eager"
    eager.model.dit.config._attn_implementation = "eager"
    attn = {
        "llm.layers.0.attn.probs": eager.model.vlm.language_model.layers[0].self_attn,
        "expert.layers.1.attn.probs": eager.model.dit.layers[1].self_attn,
    }
    noise = torch.randn(2, pi_zoo.CHUNK, pi_zoo.MAX_DIM, generator=torch.Generator().manual_seed(1))
    gen = _hooked(attn, lambda out: out[1].detach().clone())
    seen = next(gen)
    with torch.no_grad():
        eager.sample_actions(**_inputs(variant, batch), noise=noise)
    gen.close()
    with torch.no_grad(), capture(model, list(attn)) as cap:
        model.sample_actions(**_inputs(variant, batch), noise=noise)
    t = batch["input_ids"].shape[1]
    s = pi_zoo.CHUNK + (variant == "pi0")
    assert cap.calls("llm.layers.0.attn.probs")[0].shape == (2, 4, t, t)
    assert cap.calls("expert.layers.1.attn.probs")[0].shape == (2, 4, s, t + s)
    for name in attn:
        assert len(cap.calls(name)) == len(seen[name])
        for got, want in zip(cap.calls(name), seen[name], strict=True):
            valid = batch["attention_mask"].bool()[:, None, :, None] if name.startswith("llm") else True
            torch.testing.assert_close(got * valid, want * valid, rtol=1e-5, atol=1e-6)


def test_layout_matches_embed_prefix_with_a_camera_absent(built):
    variant, model, _, batch = built
    batch = dict(batch)
    # sample 1 has one camera: move it to slot 1 so slot 0 is the absent one
    pv, present = batch["pixel_values"].clone(), batch["pixel_attention_mask"].clone()
    pv[1, 1], pv[1, 0] = pv[1, 0], 0
    present[1] = torch.tensor([False, True])
    batch.update(pixel_values=pv, pixel_attention_mask=present)
    layout = get_adapter(model).layout(model, batch)
    prefix = layout["prefix"]
    with torch.no_grad():
        emb = model.model.embed_prefix(batch["input_ids"], pv, present)
        feats = model.model.vlm.get_image_features(pv.flatten(0, 1)).pooler_output.reshape(2, 2, 4, -1)
    for b in range(2):
        for k, cam in enumerate(("cam0", "cam1")):
            rows = prefix[f"image[{cam}]"][b]
            assert int(rows.sum()) == 4 * int(present[b, k])
            if present[b, k]:
                torch.testing.assert_close(emb[b, rows], feats[b, k], rtol=0, atol=0)
    mask = batch["attention_mask"].bool()
    assert torch.equal(prefix["valid"], mask) and torch.equal(prefix["pad"], ~mask)
    assert torch.equal(prefix["text"] | prefix["image"] | prefix["state"], mask)
    assert layout["suffix"].shape[1] == pi_zoo.CHUNK + (variant == "pi0")
    assert torch.equal(layout["vision"]["valid"][:, 0], present.flatten())


def test_pi05_state_span_is_the_state_written_in_the_prompt():
    model, proc = pi_zoo.pair("pi05")
    state = torch.tensor([[0.1, 1.0, -1.0, 0.5, 2.0, -2.0, 0.3]])
    batch = dict(proc(images=[_frames(1)], text=["stack"], state=state))
    policy = NativePIPolicy(model, proc, cameras=["front"])
    spans = policy.token_layout(batch)["prefix"]
    ids = batch["input_ids"][0]
    spelled = proc.tokenizer.decode(ids[spans["state"][0]]).strip()
    prompt = proc.build_prompts(["stack"], [[0]], proc.normalize(state, "state"))[0]
    assert spelled and prompt.split("State: ")[1].split(";")[0] == spelled
    assert "Task: stack, " in proc.tokenizer.decode(ids[spans["text"][0]])
    bare = get_adapter(model).layout(model, batch)["prefix"]  # no tokenizer: the state stays text
    assert not bare["state"].any() and torch.equal(bare["text"], spans["text"] | spans["state"])


@pytest.mark.parametrize("variant", VARIANTS)
def test_load_model_gives_the_policy_wrapper_and_every_tap_fires(variant, tmp_path):
    model, proc = pi_zoo.pair(variant)
    model.save_pretrained(tmp_path)
    proc.save_pretrained(tmp_path)
    policy = load_model(tmp_path)
    assert isinstance(policy, NativePIPolicy) and policy.config.state_dim == pi_zoo.STATE_DIM
    assert policy.config.cameras == ["base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb"]
    frames = {c: torch.from_numpy(np.stack(_frames(1, i))) for i, c in enumerate(policy.config.cameras)}
    batch = policy.make_batch(frames, ["pick"], torch.zeros(1, 7))
    want = proc(images=[[f[0].numpy() for f in frames.values()]], text=["pick"], state=torch.zeros(1, 7))
    for k, v in want.items():
        torch.testing.assert_close(batch[k], v, rtol=0, atol=0)
    noise = torch.randn(1, *policy.noise_shape, generator=torch.Generator().manual_seed(3))
    got = policy.sample_actions(batch, noise=noise)
    with torch.no_grad():
        ref = model.sample_actions(**_inputs(variant, batch), noise=noise)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    names = [t.name for t in list_taps(policy)]
    with torch.no_grad(), capture(policy, names, missing="ignore") as cap:
        policy.sample_actions(batch, noise=noise)
    silent = [n for n in names if not cap.calls(n)]
    assert silent == [], silent
    with pytest.raises(KeyError, match=r"no images for cameras \['right_wrist_0_rgb'\]"):
        policy.make_batch({c: frames[c] for c in list(frames)[:2]}, ["pick"], torch.zeros(1, 7))


def test_image_transform_finds_the_processors_padding():
    model, proc = pi_zoo.pair("pi0")
    policy = NativePIPolicy(model, proc)
    white = np.full((20, 30, 3), 255, np.uint8)
    pixels = proc(images=[[white]], text=["x"], state=torch.zeros(1, 7))["pixel_values"][0, 0, 0]  # (28, 28)
    content = pixels > 0.5  # the frame is white (1.0), padding is 0
    rows, cols = content.any(1).nonzero().flatten(), content.any(0).nonzero().flatten()
    tf = policy.image_transform((20, 30))
    top, left, bottom, right = tf.pad
    assert (top, left) == (0, 0) and int(rows.max()) + 1 == 28 - bottom and int(cols.max()) + 1 == 28 - right


@pytest.mark.parametrize("variant", VARIANTS)
def test_probe_finds_every_tap_on_inference_and_the_expert_on_training(variant):
    model, proc = pi_zoo.pair(variant)
    policy = NativePIPolicy(model, proc)
    fired = probe_taps(policy, example_entry_points(policy))
    names = [t.name for t in list_taps(policy)]
    assert sorted(fired) == sorted(names)
    assert all(f.get("inference") for f in fired.values())
    steps = model.config.num_inference_steps
    assert fired["expert.layers.0.out"] == {"inference": steps, "training": 1}
    assert fired["llm.layers.0.out"] == {"inference": 1, "training": 1}
    loss = policy(**policy.example_batch(2, seed=1, with_action=True)).loss
    assert loss.ndim == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("variant", VARIANTS)
def test_sample_actions_with_grad_runs_the_models_loop_and_keeps_the_graph(variant):
    model, proc = pi_zoo.pair(variant)
    policy = NativePIPolicy(model, proc)
    batch = policy.example_batch(2, seed=4)
    noise = torch.randn(2, *policy.noise_shape, generator=torch.Generator().manual_seed(2))
    plain = policy.sample_actions(batch, noise=noise, steps=2)
    graph = policy.sample_actions(batch, noise=noise, steps=2, grad=True)
    torch.testing.assert_close(graph, plain, rtol=1e-5, atol=1e-6)
    graph.square().mean().backward()
    grads = [p.grad for n, p in model.named_parameters() if n.startswith("model.dit.layers.0")]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("bridge", [None, {"flow_steps": "all", "action": True}])
def test_a_bridge_cache_and_the_student_agree_at_step_zero(tmp_path, bridge):
    """The same extractor builds the teacher's cache and the student's features: L_ret = 0 at step 0
    (the default bridge, and every flow step with the predicted velocity)."""
    from policylens.anchors import build_cache
    from policylens.retain import AnchorSet

    model, proc = pi_zoo.pair("pi0")
    model.save_pretrained(tmp_path / "pi0")
    proc.save_pretrained(tmp_path / "pi0")
    build_cache(
        str(tmp_path / "pi0"), "synthetic:3", str(tmp_path / "bridge"), kind="bridge", progress=False, bridge=bridge
    )
    student = load_model(tmp_path / "pi0")
    anchors = AnchorSet(tmp_path / "bridge", student)
    b = anchors.batch([0, 1, 2])
    target = b.pop("target_features").float()
    index = b.pop("sample_index")
    features = anchors.student(b, indices=index)["target_features"]
    assert features.requires_grad
    torch.testing.assert_close(features.float(), target, rtol=1e-3, atol=1e-3)  # the cache is float16
