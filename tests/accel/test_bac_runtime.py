"""BAC runtime: exact cached outputs on a toy block, torch layers (both norm_first, encoder fast
path), bit-identity of k=1 and of apply-then-remove, step-count errors, batch sizes."""

import pytest
import torch
from torch import nn

from policylens.accel import (
    BACConfig,
    BlockSpec,
    BranchSpec,
    apply_cache,
    cache_context,
    cache_info,
    discover_branches,
    register_block,
    remove_cache,
    reset_state,
    unregister_block,
)
from zoo import tiny_diffusion_policy


class Double(nn.Module):
    def forward(self, x):
        return 2 * x


class ToyBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.branch = Double()

    def forward(self, x):
        return x + self.branch(x)


class ToyDenoiser(nn.Module):
    num_inference_steps = 6

    def __init__(self):
        super().__init__()
        self.block = ToyBlock()

    def predict_action(self, x):
        for _ in range(self.num_inference_steps):
            x = self.block(x)
        return x


@pytest.fixture
def toy_registered():
    register_block(ToyBlock, [BranchSpec("double", "ffn", "branch")])
    yield
    unregister_block(ToyBlock)


def test_toy_block_cached_outputs_exact(toy_registered):
    model = ToyDenoiser().eval()
    x0 = torch.ones(2, 3)
    assert torch.equal(model.predict_action(x0), x0 * 3**6)
    with cache_context(model, BACConfig(mode="uniform", every=3)):  # updates at steps 0 and 3
        out = model.predict_action(x0)
        # x1 = 3, x2 = x1 + 2*x0 = 5, x3 = 7, x4 = 3*x3 = 21, x5 = 21 + 14 = 35, x6 = 49
        assert torch.equal(out, x0 * 49)
        assert torch.equal(model.predict_action(x0), x0 * 49)  # state resets per prediction
        assert cache_info(model)["skipped_fraction"] == pytest.approx(4 / 6)
    assert torch.equal(model.predict_action(x0), x0 * 3**6)


def test_step_count_mismatch_fails_clearly(toy_registered):
    model = ToyDenoiser().eval()
    with cache_context(model, BACConfig(mode="uniform", every=2)):
        reset_state(model)
        for _ in range(6):
            model.block(torch.ones(1))
        with pytest.raises(RuntimeError, match="made for 6 denoising steps"):
            model.block(torch.ones(1))
    with (
        cache_context(model, BACConfig(mode="uniform", every=2)),
        pytest.raises(ValueError, match="num_inference_steps=50"),
    ):
        model.predict_action(torch.ones(1), num_inference_steps=50)


def _layers():
    torch.manual_seed(0)
    kw = {"d_model": 8, "nhead": 2, "dim_feedforward": 16, "batch_first": True}
    return [
        nn.TransformerDecoderLayer(**kw, norm_first=True),
        nn.TransformerDecoderLayer(**kw, norm_first=False),
        nn.TransformerEncoderLayer(**kw, norm_first=True),
        nn.TransformerEncoderLayer(**kw, norm_first=False),
    ]


@pytest.mark.parametrize("idx", range(4))
def test_torch_layer_skip_adds_cached_branches(idx):
    layer = _layers()[idx].eval()
    dec = isinstance(layer, nn.TransformerDecoderLayer)
    x0, x1, mem = torch.randn(2, 5, 8), torch.randn(2, 5, 8), torch.randn(2, 3, 8)
    call = (lambda x: layer(x, mem)) if dec else layer
    # reference branch outputs at step 0, computed from the public submodules
    with torch.no_grad():
        h = layer.norm1(x0) if layer.norm_first else x0
        sa = layer.self_attn(h, h, h, need_weights=False)[0]
        y = x0 + sa if layer.norm_first else layer.norm1(x0 + sa)
        if dec:
            h = layer.norm2(y) if layer.norm_first else y
            ca = layer.multihead_attn(h, mem, mem, need_weights=False)[0]
            y = y + ca if layer.norm_first else layer.norm2(y + ca)
        h = (layer.norm3 if dec else layer.norm2)(y) if layer.norm_first else y
        ff = layer.linear2(layer.activation(layer.linear1(h)))
        # step 1 skips every branch: the layer must add the step-0 branch outputs to x1
        y = x1 + sa if layer.norm_first else layer.norm1(x1 + sa)
        if dec:
            y = y + ca if layer.norm_first else layer.norm2(y + ca)
        last = layer.norm3 if dec else layer.norm2
        want = y + ff if layer.norm_first else last(y + ff)
        with cache_context(layer, BACConfig(mode="uniform", every=2, num_steps=2, reset_method=None)):
            reset_state(layer)
            call(x0)
            got = call(x1)
    assert torch.allclose(got, want, atol=1e-6)


def test_encoder_fast_path_disabled_only_while_caching(monkeypatch):
    layer = _layers()[3].eval()
    calls = []
    fused = torch._transformer_encoder_layer_fwd
    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", lambda *a: calls.append(1) or fused(*a))
    x = torch.randn(1, 4, 8)
    with torch.no_grad():
        ref = layer(x)
        assert len(calls) == 1  # the fast path is what runs normally
        with cache_context(layer, BACConfig(mode="uniform", every=1, num_steps=1, reset_method=None)):
            reset_state(layer)
            got = layer(x)
        assert len(calls) == 1  # not while caching: the submodules ran
        assert torch.allclose(got, ref, atol=1e-5)
        layer(x)
    assert len(calls) == 2  # restored after removal


def _policy(n_cond_layers=0):
    return tiny_diffusion_policy(n_cond_layers=n_cond_layers)


def test_discovery_names_and_layers():
    names = [(b.name, b.kind, b.layer) for b in discover_branches(_policy(n_cond_layers=1))]
    assert names[0] == ("model.encoder.layers.0.self_attn", "attn", 0)
    assert ("model.decoder.layers.1.cross_attn", "cross_attn", 2) in names
    assert len(names) == 2 + 3 * 2


@pytest.mark.parametrize("batch", [1, 5])
@pytest.mark.parametrize("n_cond_layers", [0, 1])
def test_uniform_k1_bit_identical_and_remove_restores(batch, n_cond_layers):
    p = _policy(n_cond_layers)
    obs = torch.randn(batch, 2, 4)
    before = {k: v.clone() for k, v in p.state_dict().items()}
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    ref = p.predict_action(obs, generator=g())
    apply_cache(p, BACConfig(mode="uniform", every=1))
    same = p.predict_action(obs, generator=g())
    remove_cache(p)
    if n_cond_layers == 0:
        assert torch.equal(same, ref)
    else:  # caching turns off the fused encoder kernel: equal up to float rounding
        assert torch.allclose(same, ref, atol=1e-5)
    with cache_context(p, BACConfig(mode="uniform", every=4)):
        cached = p.predict_action(obs, generator=g())
        assert cached.shape == (batch, 8, 2) and not torch.equal(cached, ref)
    assert torch.equal(p.predict_action(obs, generator=g()), ref)
    assert all(torch.equal(v, before[k]) for k, v in p.state_dict().items())
    assert not any("forward" in m.__dict__ for m in p.modules())
    assert "predict_action" not in p.__dict__


def test_batched_equals_per_sample():
    p = _policy()
    obs = torch.randn(3, 2, 4)
    x = torch.randn(3, 8, 2)
    with cache_context(p, BACConfig(mode="uniform", num_updates=4)):
        t = torch.tensor([5])
        reset_state(p)
        outs = [p.model(x, t, p.obs_normalizer.normalize(obs)) for _ in range(12)]
        one = []
        for i in range(3):
            reset_state(p)
            one.append([p.model(x[i : i + 1], t, p.obs_normalizer.normalize(obs[i : i + 1])) for _ in range(12)][-1])
    assert torch.allclose(outs[-1], torch.cat(one), atol=1e-5)


def test_double_apply_and_training_passthrough():
    p = _policy()
    with cache_context(p, BACConfig(mode="uniform", every=3)):
        with pytest.raises(RuntimeError, match="already applied"):
            apply_cache(p, BACConfig(mode="uniform", every=3))
        p.train()
        x, t, c = torch.randn(2, 8, 2), torch.tensor([1]), torch.randn(2, 2, 4)
        torch.manual_seed(0)
        a = p.model(x, t, c)
        remove_cache(p)
        torch.manual_seed(0)
        b = p.model(x, t, c)
    assert torch.equal(a, b)


def test_register_block_rejects_non_module():
    with pytest.raises(TypeError, match="not an nn.Module"):
        register_block(int, BlockSpec((BranchSpec("x", "ffn", ""),)))
    with pytest.raises(ValueError, match="kind='mlp'"):
        BranchSpec("x", "mlp", "")
