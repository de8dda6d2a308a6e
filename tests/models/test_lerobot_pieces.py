"""LeRobot's pi0 / pi0.5 adapters on a stand-in that calls its layers the way LeRobot does
(``tests/lerobot_zoo.py``): every tap fires on every entry point it runs on and equals the
model's own computation, attention probabilities included, and the layout is the one the
policy builds, with missing cameras padded after the present ones."""

import pytest
import torch
from transformers.models.gemma import modeling_gemma

from lerobot_zoo import LANG_MASK, PaliGemmaWithExpert, Pi0LikePolicy, pi0_like_batch
from policylens.models import lerobot_adapter
from policylens.tap import TapNotFiredError, capture, list_taps, register_adapter

register_adapter("lerobot_zoo.Pi0LikePolicy", lambda _m: lerobot_adapter("pi0"))
LAYERS = 3


@pytest.fixture(scope="module")
def policy():
    return Pi0LikePolicy(seed=0)


def _record_joint_layers(monkeypatch) -> list[list[torch.Tensor]]:
    """The joint pass's own per-layer outputs, recorded around ``joint_layer``."""
    outputs: list[list[torch.Tensor]] = []
    original = PaliGemmaWithExpert.joint_layer

    def recording(self, i, embeds, mask, positions):
        out = original(self, i, embeds, mask, positions)
        outputs.append([o.detach().clone() for o in out])
        return out

    monkeypatch.setattr(PaliGemmaWithExpert, "joint_layer", recording)
    return outputs


def _record_attention(monkeypatch) -> list[torch.Tensor]:
    weights: list[torch.Tensor] = []
    original = modeling_gemma.eager_attention_forward

    def recording(module, *args, **kwargs):
        out, w = original(module, *args, **kwargs)
        weights.append(w.detach().clone())
        return out, w

    monkeypatch.setattr(modeling_gemma, "eager_attention_forward", recording)
    return weights


def test_every_hidden_tap_fires_in_the_joint_training_pass_and_equals_its_layers(policy, monkeypatch):
    own = _record_joint_layers(monkeypatch)
    batch = pi0_like_batch(policy)
    names = [
        f"{c}.layers.{i}.{p}"
        for c in ("llm", "expert")
        for i in range(LAYERS)
        for p in ("in", "out", "attn.out", "mlp.out")
    ]
    with capture(policy, names) as cap:
        policy(batch)
    assert len(own) == LAYERS
    for i in range(LAYERS):
        for k, comp in enumerate(("llm", "expert")):
            torch.testing.assert_close(cap[f"{comp}.layers.{i}.out"], own[i][k], rtol=0, atol=0)
            if i:
                torch.testing.assert_close(cap[f"{comp}.layers.{i}.in"], own[i - 1][k], rtol=0, atol=0)


def test_inference_taps_fire_once_per_pass_and_equal_the_layer_modules(policy):
    batch = pi0_like_batch(policy)
    llm = policy.model.paligemma_with_expert.language_model
    expert = policy.model.paligemma_with_expert.gemma_expert.model
    reference: dict[str, list[torch.Tensor]] = {}
    hooks = [
        layer.register_forward_hook(
            lambda _m, _a, out, key=f"{name}.{i}": reference.setdefault(key, []).append(
                (out[0] if isinstance(out, tuple) else out).detach().clone()
            )
        )
        for name, stack in (("llm", llm), ("expert", expert))
        for i, layer in enumerate(stack.layers)
    ]
    try:
        with capture(
            policy, ["llm.layers.1.out", "llm.layers.-1.out", "expert.layers.0.out", "expert.layers.-1.out"]
        ) as cap:
            policy.predict_action_chunk(batch, noise=torch.zeros(2, 4, 5))
    finally:
        for h in hooks:
            h.remove()
    steps = policy.config.num_inference_steps
    assert len(cap.calls("llm.layers.1.out")) == 1 and len(cap.calls("expert.layers.0.out")) == steps
    torch.testing.assert_close(cap["llm.layers.1.out"], reference["llm.1"][0], rtol=0, atol=0)
    torch.testing.assert_close(cap["llm.layers.-1.out"], reference[f"llm.{LAYERS - 1}"][0], rtol=0, atol=0)
    torch.testing.assert_close(cap.stacked("expert.layers.-1.out"), torch.stack(reference[f"expert.{LAYERS - 1}"]))


def test_attention_probs_on_both_paths_equal_the_models_own(policy, monkeypatch):
    own = _record_attention(monkeypatch)
    batch = pi0_like_batch(policy)
    policy.model.paligemma_with_expert.language_model.config._attn_implementation = (
        "sdpa"  # as before LeRobot's first call
    )
    with capture(policy, ["llm.layers.1.attn.probs", "expert.layers.2.attn.probs"]) as cap:
        policy.predict_action_chunk(batch, noise=torch.zeros(2, 4, 5))
    # prefix pass: 3 layers, then 3 steps × 3 expert layers, in call order
    torch.testing.assert_close(cap["llm.layers.1.attn.probs"], own[1], rtol=0, atol=0)
    steps = cap.calls("expert.layers.2.attn.probs")
    assert len(steps) == policy.config.num_inference_steps
    torch.testing.assert_close(steps[0], own[LAYERS + 2], rtol=0, atol=0)
    own.clear()
    with capture(policy, ["llm.layers.0.attn.probs"]) as cap:
        policy(batch)  # joint pass: the free function gets the decoder layer's attention
    joint = cap["llm.layers.0.attn.probs"]
    torch.testing.assert_close(joint, own[0], rtol=0, atol=0)
    prefix_len = batch[LANG_MASK].shape[1] + 2 * 4
    assert joint.shape[-1] == prefix_len + 1 + policy.config.chunk_size


def test_expert_attention_in_the_joint_pass_is_reported_not_silent(policy):
    with (
        pytest.raises(TapNotFiredError, match="expert.layers.0.attn.probs"),
        capture(policy, ["expert.layers.0.attn.probs"]),
    ):
        policy(pi0_like_batch(policy))


def test_every_listed_tap_fires_on_some_entry_point(policy):
    names = [t.name for t in list_taps(policy)]
    batch = pi0_like_batch(policy)
    with capture(policy, names, missing="ignore") as train:
        policy(batch)
    with capture(policy, names, missing="ignore") as infer:
        policy.predict_action_chunk(batch)
    silent = [n for n in names if not train.calls(n) and not infer.calls(n)]
    assert silent == []


@pytest.mark.parametrize("present", [["observation.images.wrist"], ["observation.images.base"], None])
def test_layout_matches_the_policys_pad_mask_with_missing_cameras(policy, present):
    batch = pi0_like_batch(policy, cameras=present)
    images, masks, tokens, lang, _ = policy._inputs(batch)
    _, pad, _ = policy.model.embed_prefix(images, masks, tokens, lang)
    layout = lerobot_adapter("pi0").layout(policy, batch)
    assert torch.equal(layout["prefix"]["valid"], pad)
    first = (present or list(policy.config.image_features))[0]
    assert layout["prefix"].positions(f"image[{first}]").tolist() == [0, 1, 2, 3]  # present cameras come first
    assert layout["suffix"]["state"].sum(1).tolist() == [1, 1]
    assert set(layout["prefix"].grids) == set(present or policy.config.image_features)  # 28 px / patch 14: 2 x 2
    assert {(g.rows, g.cols) for g in layout["prefix"].grids.values()} == {(2, 2)}


class _CharTokenizer:
    def encode(self, text: str) -> list[int]:
        return [ord(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i) for i in ids)


def test_pi05_layout_finds_the_state_inside_the_prompt(policy):
    from policylens.models import lerobot_layout

    tok = _CharTokenizer()
    prompts = ["Task: reach the red cube, State: 12 200 7;\nAction: ", "Task: go, State: 3;\nAction: "]
    ids = [tok.encode(p) for p in prompts]
    width = max(map(len, ids)) + 2
    tokens = torch.zeros(2, width, dtype=torch.long)
    mask = torch.zeros(2, width, dtype=torch.bool)
    for i, row in enumerate(ids):
        tokens[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), True
    batch = pi0_like_batch(policy)
    batch.update({"observation.language.tokens": tokens, LANG_MASK: mask})
    with pytest.raises(ValueError, match="tokenizer"):
        lerobot_layout("pi05", policy, batch)
    layout = lerobot_layout("pi05", policy, batch, tokenizer=tok)
    prefix = layout["prefix"]
    state_text = ["".join(chr(tokens[b, p - 8]) for p in prefix.positions("state", b).tolist()) for b in range(2)]
    assert state_text == ["122007", "3"]
    assert (prefix["state"] & prefix["text"]).sum() == 0 and layout["suffix"]["state"].sum() == 0
