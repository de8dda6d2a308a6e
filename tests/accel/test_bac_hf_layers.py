"""BAC on transformers decoder layers (Gemma, Gemma2, Gemma3, Llama, Qwen2, pi0.5's adaptive-norm layer),
registered by class name.

Each layer's forward is checked against a composition of its public submodules written here (so the
spec's "what the layer adds to its residual" is right); cached runs, in float64, are checked against a
plain reference cache written here (each branch's output module returns what it computed at its
latest update step; gates always run); every-step-updated runs are bit-identical to the uncached
model; the whole-stack shortcut at fully skipped steps is bit-identical to running the layers."""

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from policylens.accel import BACConfig, Calibration, cache_context, discover_branches, list_blocks, model_hash

K = 6  # denoising steps of the toy loops
FAMILIES = ("gemma", "gemma2", "gemma3", "llama", "qwen2", "pi05")
SIZES = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
SIZES |= {"num_key_value_heads": 1, "head_dim": 8, "vocab_size": 32}


def stack(family: str) -> nn.Module:
    """A tiny 2-layer transformers decoder of ``family`` in float64, eval mode."""
    import transformers as tf

    torch.manual_seed(0)
    if family == "pi05":
        from pi_zoo import model

        net = model("pi05", image_token_id=3, vocab_size=40).model.dit
    elif family == "gemma3":
        net = tf.Gemma3TextModel(tf.Gemma3TextConfig(**SIZES, sliding_window=4))
    else:
        configs = {"gemma": tf.GemmaConfig, "gemma2": tf.Gemma2Config, "llama": tf.LlamaConfig}
        models = {"gemma": tf.GemmaModel, "gemma2": tf.Gemma2Model, "llama": tf.LlamaModel}
        config = configs.get(family, tf.Qwen2Config)(**SIZES)
        net = models.get(family, tf.Qwen2Model)(config)
    with torch.no_grad():  # norms start at identity / zero: make every weight matter
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return net.double().eval()


class Loop(nn.Module):
    """A toy denoiser: ``K`` steps of ``x <- x + 0.3 * stack(inputs_embeds=x)``; pi0.5 also reads the step."""

    num_inference_steps = K

    def __init__(self, net: nn.Module, family: str) -> None:
        super().__init__()
        self.net, self.family = net, family

    def call(self, x, k: int):
        if self.family == "pi05":
            t = torch.full((x.shape[0], x.shape[-1]), k / K, dtype=x.dtype)
            return self.net(inputs_embeds=x, timestep_embeds=t).last_hidden_state
        return self.net(inputs_embeds=x).last_hidden_state

    @torch.no_grad()
    def predict_action(self, x):
        for k in range(K):
            x = x + 0.3 * self.call(x, k)
        return x


def _x(batch: int = 2, tokens: int = 5) -> torch.Tensor:
    return torch.randn(batch, tokens, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def _position_embeddings(net, x, family):
    ids = torch.arange(x.shape[1])[None]
    if family == "gemma3":
        return net.rotary_emb(x, ids, net.config.layer_types[0])
    return net.rotary_emb(x, position_ids=ids) if family == "pi05" else net.rotary_emb(x, ids)


def _by_hand(layer, family, x, pe, t):
    """The layer's forward composed from its public submodules (what the block spec claims)."""
    kw = {"attention_mask": None, "position_embeddings": pe}
    if family == "pi05":
        normed, gate = layer.input_layernorm(x, t)
        h = x + gate * layer.self_attn(hidden_states=normed, **kw)[0]
        normed, gate = layer.post_attention_layernorm(h, t)
        return h + gate * layer.mlp(normed)
    if family in ("gemma2", "gemma3"):
        h = x + layer.post_attention_layernorm(layer.self_attn(hidden_states=layer.input_layernorm(x), **kw)[0])
        return h + layer.post_feedforward_layernorm(layer.mlp(layer.pre_feedforward_layernorm(h)))
    h = x + layer.self_attn(hidden_states=layer.input_layernorm(x), **kw)[0]
    return h + layer.mlp(layer.post_attention_layernorm(h))


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_forward_is_the_composition_the_spec_names(family):
    net = stack(family)
    x = _x()
    t = torch.randn(2, 16, dtype=torch.float64) if family == "pi05" else None
    layer = net.layers[0]
    pe = _position_embeddings(net, x, family)
    kw = {"timestep_embeds": t} if family == "pi05" else {}
    with torch.no_grad():
        got = layer(x, attention_mask=None, position_embeddings=pe, **kw)
        got = got[0] if isinstance(got, tuple) else got
        torch.testing.assert_close(got, _by_hand(layer, family, x, pe, t), rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", FAMILIES)
def test_branches_are_discovered_by_class_name(family):
    net = stack(family)
    names = [b.name for b in discover_branches(net)]
    assert names == ["layers.0.self_attn", "layers.0.mlp", "layers.1.self_attn", "layers.1.mlp"]
    assert type(net.layers[0]).__module__ + "." + type(net.layers[0]).__qualname__ in list_blocks()


def test_importing_accel_imports_no_modeling_file():
    code = "import sys, policylens.accel; print(sorted(m for m in sys.modules if m.startswith('transformers')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def _calibration(policy: nn.Module, schedule: dict[str, list[int]]) -> Calibration:
    """A calibration whose schedule is given (staggered per branch), for any registered model."""
    names = list(schedule)
    zero = {n: np.zeros((K, K)) for n in names}
    return Calibration(
        num_steps=K,
        block_names=names,
        kinds={n: "ffn" if n.endswith("mlp") else "attn" for n in names},
        layers={n: int(n.split(".")[-2]) for n in names},
        model_hash=model_hash(policy),
        metric="cosine",
        num_updates=2,
        n_bu=0,
        matrices={"cosine": zero, "l1": zero},
        schedule=schedule,
    )


STAGGERED = {  # steps 4 and 5 reuse every branch: the whole-stack shortcut runs there
    "net.layers.0.self_attn": [0, 2],
    "net.layers.0.mlp": [0, 1, 3],
    "net.layers.1.self_attn": [0, 3],
    "net.layers.1.mlp": [0, 2],
}


def _reference(policy: Loop, x: torch.Tensor, schedule: dict[str, list[int]]) -> torch.Tensor:
    """Plain caching written here: each branch's output module recomputes at its update steps and returns
    its stored value otherwise; gates run every step (what they return then is not read)."""
    outputs = {"self_attn": "self_attn", "mlp": "mlp"}
    if policy.family in ("gemma2", "gemma3"):
        outputs = {"self_attn": "post_attention_layernorm", "mlp": "post_feedforward_layernorm"}
    step, store, patched = [0], {}, []
    for name, steps in schedule.items():
        _, _, i, branch = name.split(".")
        module = policy.net.layers[int(i)].get_submodule(outputs[branch])
        orig = module.forward

        def forward(*args, _orig=orig, _name=name, _steps=steps, **kwargs):
            if step[0] in _steps:
                store[_name] = _orig(*args, **kwargs)
            return store[_name]

        module.forward = forward
        patched.append(module)
    try:
        with torch.no_grad():
            for k in range(K):
                step[0] = k
                x = x + 0.3 * policy.call(x, k)
    finally:
        for module in patched:
            del module.forward
    return x


@pytest.mark.parametrize("family", FAMILIES)
def test_cached_loop_matches_a_plain_cache_in_float64(family):
    policy = Loop(stack(family), family)
    x = _x()
    uncached = policy.predict_action(x)
    every = {n: list(range(K)) for n in STAGGERED}
    with cache_context(policy, BACConfig(mode="optimal", calibration=_calibration(policy, every))):
        assert torch.equal(policy.predict_action(x), uncached)  # every step updated: bit-identical
    for schedule in (STAGGERED, {n: [0, 3] for n in STAGGERED}):
        want = _reference(policy, x, schedule)
        assert not torch.allclose(want, uncached, atol=1e-6)  # the cache changes the result
        with cache_context(policy, BACConfig(mode="optimal", calibration=_calibration(policy, schedule))):
            got = policy.predict_action(x)
            again = policy.predict_action(x)  # the state resets per call
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
        assert torch.equal(again, got)
    assert torch.equal(policy.predict_action(x), uncached)  # removed: the model is as it was


@pytest.mark.parametrize("family", ["gemma", "gemma2", "gemma3", "llama", "qwen2"])
def test_whole_skipped_stack_is_bit_identical_to_running_its_layers(family):
    policy = Loop(stack(family), family)
    x = _x()
    layer_calls = []
    handle = policy.net.layers[0].register_forward_pre_hook(lambda *_: layer_calls.append(1))
    results = {}
    try:
        for fuse in (True, False):
            config = BACConfig(mode="optimal", calibration=_calibration(policy, STAGGERED), fuse_skipped_stacks=fuse)
            layer_calls.clear()
            with cache_context(policy, config):
                results[fuse] = policy.predict_action(x)
            results[f"calls {fuse}"] = len(layer_calls)
    finally:
        handle.remove()
    assert torch.equal(results[True], results[False])
    assert results["calls False"] == K and results["calls True"] == K - 2  # steps 4 and 5 skip the layers


def test_whole_stack_runs_its_layers_when_hidden_states_are_asked_for():
    policy = Loop(stack("gemma"), "gemma")
    x = _x()
    config = BACConfig(mode="optimal", calibration=_calibration(policy, STAGGERED))
    with cache_context(policy, config):
        policy.predict_action(x)  # leaves the state at the end of a loop; run one by hand:
        from policylens.accel import reset_state

        reset_state(policy)
        for k in range(K):
            out = policy.net(inputs_embeds=x, output_hidden_states=True)
            assert len(out.hidden_states) == 3, k  # embeddings + 2 layers, at fully skipped steps too
