"""Stage-1 models: multi-encoder fusion (each mode against a per-token loop, the balance loss on
known cases, gate statistics), temporal pooling and the point projector."""

import math

import pytest
import torch

from policylens.align._fusion import FusionConfig, MultiEncoderFusion, balance_loss
from policylens.align._points import PointProjector
from policylens.align._temporal import TemporalPool

B, N, DIMS, D = 2, 3, (5, 7, 4), 6


def _feats(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, N, c, generator=g) * (10.0**e) for e, c in enumerate(DIMS)]  # scales 1, 10, 100


def _adapted(fusion, feats, b, n):
    """h_e for one token: LayerNorm then the linear adaptor, written out."""
    out = []
    for adapter, x in zip(fusion.adapters, feats, strict=True):
        norm, lin = adapter[0], adapter[1]
        v = x[b, n]
        z = (v - v.mean()) / torch.sqrt(v.var(unbiased=False) + norm.eps) * norm.weight + norm.bias
        out.append(lin.weight @ z + lin.bias)
    return out


def _perturb(module, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))


def test_softmax_mode_matches_the_loop_and_reports_its_weights():
    fusion = MultiEncoderFusion(FusionConfig(DIMS, D, "softmax"))
    with torch.no_grad():
        fusion.logits.copy_(torch.tensor([0.0, 1.0, -1.0]))
    feats = _feats()
    out = fusion(feats)
    z = [math.exp(v) for v in (0.0, 1.0, -1.0)]
    w = [v / sum(z) for v in z]
    for b in range(B):
        for n in range(N):
            h = _adapted(fusion, feats, b, n)
            torch.testing.assert_close(out.tokens[b, n], sum(w[e] * h[e] for e in range(3)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.stats.gate_mean, torch.tensor(w))
    assert out.stats.entropy.item() == pytest.approx(-sum(p * math.log(p) for p in w), rel=1e-5)
    torch.testing.assert_close(out.stats.load, torch.full((3,), 1 / 3))
    assert out.balance_loss.item() == 0.0


def test_per_token_gate_matches_the_loop_and_its_statistics():
    fusion = MultiEncoderFusion(FusionConfig(DIMS, D, "gate"))
    _perturb(fusion)
    feats = _feats()
    out = fusion(feats)
    gates, ents = [], []
    for b in range(B):
        for n in range(N):
            h = _adapted(fusion, feats, b, n)
            g = torch.softmax(fusion.router.weight @ torch.cat(h) + fusion.router.bias, 0)
            gates.append(g)
            ents.append(-sum(p * math.log(p) for p in g.tolist()))
            torch.testing.assert_close(out.tokens[b, n], sum(g[e] * h[e] for e in range(3)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.stats.gate_mean, torch.stack(gates).mean(0).detach())
    assert out.stats.entropy.item() == pytest.approx(sum(ents) / len(ents), rel=1e-5)


@pytest.mark.parametrize("k", [1, 2])
def test_topk_moe_matches_the_loop_with_load_and_balance_loss(k):
    fusion = MultiEncoderFusion(FusionConfig(DIMS, D, "moe", top_k=k))
    _perturb(fusion, seed=4)
    feats = _feats(seed=2)
    out = fusion(feats)
    counts, prob_sum = [0] * 3, [0.0] * 3
    for b in range(B):
        for n in range(N):
            h = _adapted(fusion, feats, b, n)
            p = torch.softmax(fusion.router.weight @ torch.cat(h) + fusion.router.bias, 0).tolist()
            chosen = sorted(range(3), key=lambda e: -p[e])[:k]
            total = sum(p[e] for e in chosen)
            torch.testing.assert_close(out.tokens[b, n], sum(p[e] / total * h[e] for e in chosen), rtol=1e-5, atol=1e-5)
            for e in range(3):
                counts[e] += e in chosen
                prob_sum[e] += p[e]
    tokens = B * N
    f = [c / (tokens * k) for c in counts]
    big_p = [s / tokens for s in prob_sum]
    torch.testing.assert_close(out.stats.load, torch.tensor(f))
    assert out.balance_loss.item() == pytest.approx(3 * sum(a * b for a, b in zip(f, big_p, strict=True)), rel=1e-5)
    assert sum(out.stats.to_log()[f"fusion/load_{e}"] for e in range(3)) == pytest.approx(1.0)


def test_balance_loss_is_one_when_uniform_and_e_when_collapsed():
    e, t = 4, 8
    uniform = torch.full((t, e), 1 / e)
    assert balance_loss(uniform, (torch.arange(t) % e)[:, None]).item() == pytest.approx(1.0)
    collapsed = torch.zeros(t, e)
    collapsed[:, 0] = 1
    assert balance_loss(collapsed, torch.zeros(t, 1, dtype=torch.long)).item() == pytest.approx(float(e))


def test_balance_loss_gradient_reaches_the_router():
    fusion = MultiEncoderFusion(FusionConfig(DIMS, D, "moe"))
    fusion(_feats()).balance_loss.backward()
    assert fusion.router.weight.grad.abs().sum() > 0


def test_config_and_inputs_are_checked():
    with pytest.raises(ValueError, match="mode='sum'"):
        FusionConfig(DIMS, D, "sum")
    with pytest.raises(ValueError, match="top_k=4"):
        FusionConfig(DIMS, D, "moe", top_k=4)
    fusion = MultiEncoderFusion(FusionConfig(DIMS, D))
    with pytest.raises(ValueError, match="got 2 feature tensors"):
        fusion(_feats()[:2])
    bad = _feats()
    bad[1] = bad[1][:, :2]
    with pytest.raises(ValueError, match=r"features\[1\]"):
        fusion(bad)


@pytest.mark.parametrize("mode", ["softmax", "gate", "moe"])
def test_bf16_autocast_gives_finite_outputs(mode):
    fusion = MultiEncoderFusion(FusionConfig(DIMS, D, mode, top_k=2 if mode == "moe" else 1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fusion(_feats())
    assert torch.isfinite(out.tokens.float()).all() and out.balance_loss.dtype == torch.float32
    assert torch.isfinite(out.stats.entropy) and math.isfinite(sum(out.stats.to_log().values()))


# --- temporal pooling -------------------------------------------------------------------------


def _window(seed=0):
    return torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(seed))  # (B, T, N, C)


def test_mean_pool_respects_the_valid_mask():
    x = _window()
    valid = torch.tensor([[True, True, True, True], [True, False, True, False]])
    out = TemporalPool(5, "mean")(x, valid)
    torch.testing.assert_close(out[0], x[0].mean(0))
    torch.testing.assert_close(out[1], (x[1, 0] + x[1, 2]) / 2)


@pytest.mark.parametrize("mode", ["attention", "gated"])
def test_attention_pools_start_at_the_mean_and_match_the_loop(mode):
    pool = TemporalPool(5, mode, hidden=8)
    x = _window(1)
    torch.testing.assert_close(pool(x), x.mean(1))
    _perturb(pool, seed=3)
    out = pool(x, torch.tensor([[True, True, False, True], [True, True, True, True]]))
    for b in range(2):
        for n in range(3):
            frames = [t for t in range(4) if b == 1 or t != 2]
            scores = []
            for t in frames:
                v = x[b, t, n]
                if mode == "attention":
                    scores.append((pool.key.weight @ v) @ pool.query / math.sqrt(5))
                else:
                    hidden = torch.tanh(pool.v.weight @ v + pool.v.bias) * torch.sigmoid(
                        pool.u.weight @ v + pool.u.bias
                    )
                    scores.append(pool.w.weight[0] @ hidden)
            a = torch.softmax(torch.stack(scores), 0)
            want = sum(a[i] * x[b, t, n] for i, t in enumerate(frames))
            torch.testing.assert_close(out[b, n], want, rtol=1e-5, atol=1e-6)


def test_temporal_pool_checks_its_inputs():
    with pytest.raises(ValueError, match="mode='max'"):
        TemporalPool(5, "max")
    with pytest.raises(ValueError, match=r"expected \(B, T, N, 5\)"):
        TemporalPool(5)(torch.zeros(2, 3, 5))
    with pytest.raises(ValueError, match="no True frame"):
        TemporalPool(5)(_window(), torch.tensor([[True] * 4, [False] * 4]))


# --- point projector ---------------------------------------------------------------------------


def test_point_features_path_projects_each_point():
    proj = PointProjector(8, feat_dim=256)
    feats = torch.randn(2, 10, 256)
    out = proj(torch.randn(2, 10, 3), feats=feats)
    assert out.shape == (2, 10, 8)
    torch.testing.assert_close(out[0, 3], proj(torch.zeros(1, 1, 3), feats=feats[:1, 3:4])[0, 0])  # per point


def test_xyz_path_is_translation_invariant_and_ignores_padding():
    proj = PointProjector(8, use_rgb=True, hidden=16)
    xyz, rgb = torch.randn(1, 6, 3), torch.rand(1, 6, 3)
    out = proj(xyz, rgb=rgb)
    torch.testing.assert_close(proj(xyz + torch.tensor([1.0, -2.0, 3.0]), rgb=rgb), out, rtol=1e-4, atol=1e-5)
    padded_xyz = torch.cat([xyz, torch.full((1, 2, 3), 50.0)], 1)
    padded_rgb = torch.cat([rgb, torch.ones(1, 2, 3)], 1)
    mask = torch.tensor([[True] * 6 + [False] * 2])
    torch.testing.assert_close(proj(padded_xyz, rgb=padded_rgb, mask=mask)[:, :6], out, rtol=1e-4, atol=1e-5)


def test_point_projector_names_the_missing_input():
    with pytest.raises(ValueError, match="feat_dim=256"):
        PointProjector(8, feat_dim=256)(torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match="use_rgb=True needs rgb"):
        PointProjector(8, use_rgb=True)(torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match="use_rgb=False"):
        PointProjector(8)(torch.zeros(1, 4, 3), rgb=torch.zeros(1, 4, 3))
