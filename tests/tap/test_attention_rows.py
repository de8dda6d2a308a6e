"""Attention probabilities of only the query rows a capture keeps: each kept row equals a float64
loop over the scores and the model's own eager weights, the layer's output comes from the model's
kernel (so the forward equals a forward without a capture, bit for bit), and a set-up reused across
forwards and flow steps (hooks, routes, the row positions cached per call length) gives the same
probabilities as a fresh one."""

import math

import pytest
import torch

from policylens.attention import extract_attention
from policylens.models import TinyVLA, TinyVLAConfig
from policylens.tap import capture
from policylens.tap._hf_attention import _probs
from zoo import eager_twin, tiny_decoder


class _Attn(torch.nn.Module):
    is_causal = True


def _loop_probs(q, k, rows, mask, scale, causal, softcap):
    """float64 loops: for each kept row, softmax over keys of q·k·scale (softcapped) + the mask."""
    b, h, _, d = q.shape
    tk, n_rep = k.shape[2], h // k.shape[1]
    out = torch.zeros(b, h, len(rows), tk, dtype=torch.float64)
    for bi in range(b):
        for hi in range(h):
            for ri, i in enumerate(rows):
                scores = []
                for j in range(tk):
                    s = sum(float(q[bi, hi, i, c]) * float(k[bi, hi // n_rep, j, c]) for c in range(d)) * scale
                    if softcap is not None:
                        s = math.tanh(s / softcap) * softcap
                    if mask is not None and mask.dtype == torch.bool and not bool(mask[bi, 0, i, j]):
                        s = -math.inf
                    elif mask is not None and mask.dtype != torch.bool:
                        s += float(mask[bi, 0, i, j])
                    elif mask is None and causal and j > i:
                        s = -math.inf
                    scores.append(s)
                top = max(scores)
                e = [math.exp(s - top) for s in scores]
                out[bi, hi, ri] = torch.tensor([x / sum(e) for x in e], dtype=torch.float64)
    return out


@pytest.mark.parametrize("mask_kind", ["bool", "float", "causal"])
@pytest.mark.parametrize("softcap", [None, 5.0])
def test_kept_rows_equal_a_float64_loop(mask_kind, softcap):
    g = torch.Generator().manual_seed(1)
    b, h, hkv, tq, tk, d = 2, 4, 2, 6, 6, 8
    q, k = torch.randn(b, h, tq, d, generator=g), torch.randn(b, hkv, tk, d, generator=g)
    mask = None
    if mask_kind == "bool":
        mask = torch.rand(b, 1, tq, tk, generator=g) > 0.3
        mask[..., 0] = True  # every row attends somewhere
    elif mask_kind == "float":
        mask = torch.randn(b, 1, tq, tk, generator=g)
    rows = torch.tensor([0, 3, 5])
    got = _probs(_Attn(), q.index_select(2, rows), k, mask, 0.3, None, softcap, tq, rows)
    ref = _loop_probs(q, k, rows.tolist(), mask, 0.3, mask_kind == "causal", softcap)
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=1e-6)
    full = _probs(_Attn(), q, k, mask, 0.3, None, softcap, tq)
    # a subset of rows: the full map's numbers, to float32 rounding (the product may block differently)
    torch.testing.assert_close(full[:, :, rows], got, rtol=0, atol=3e-7)


def test_kept_rows_equal_eager_weights_and_the_forward_is_untouched():
    model = tiny_decoder("gemma")  # 4 query heads on 2 key heads
    ids = torch.randint(0, 60, (2, 9), generator=torch.Generator().manual_seed(0))
    attn = torch.ones_like(ids)
    attn[1, :2] = 0  # left padding on one sample
    rows = torch.zeros(9, dtype=torch.bool)
    rows[[2, 5, 8]] = True
    plain = model(input_ids=ids, attention_mask=attn).logits
    taps = ["llm.layers.0.attn.probs", "llm.layers.2.attn.probs"]
    with capture(model, taps, queries=rows) as cap:
        logits = model(input_ids=ids, attention_mask=attn).logits
    assert torch.equal(logits, plain)  # the model's own kernel computed the output
    ref = eager_twin(model)(input_ids=ids, attention_mask=attn, output_attentions=True).attentions
    for tap, layer in zip(taps, (0, 2), strict=True):
        assert cap[tap].shape == (2, 4, 3, 9)
        torch.testing.assert_close(cap[tap], ref[layer][:, :, rows], rtol=0, atol=1e-6)


@pytest.mark.parametrize("rows", [[1, 4, 9], [0, 1, 2, 4, 5, 6, 9]])  # few rows: computed alone; most: all rows
def test_a_reused_capture_equals_fresh_ones_across_lengths(rows):
    model = tiny_decoder("llama")
    g = torch.Generator().manual_seed(2)
    short, long = torch.randint(0, 60, (2, 7), generator=g), torch.randint(0, 60, (2, 11), generator=g)
    rows = torch.tensor(rows)  # position 9 is past the short sequence: dropped there
    tap = "llm.layers.1.attn.probs"

    def fresh(ids):
        with capture(model, [tap], queries=rows) as cap:
            model(input_ids=ids)
        return cap[tap]

    with capture(model, [tap], queries=rows) as cap:
        got = []
        for ids in (short, long, short):
            cap.clear()  # the hooks, routes and cached row positions stay
            model(input_ids=ids)
            got.append(cap[tap])
    assert [t.shape[2] for t in got] == [len(rows) - 1, len(rows), len(rows) - 1]
    for ids, t in zip((short, long, short), got, strict=True):
        assert torch.equal(t, fresh(ids))


def test_vla_flow_steps_from_one_capture_equal_eager_weights():
    torch.manual_seed(0)
    model = TinyVLA(TinyVLAConfig(image_size=28, patch_size=14, flow_steps=3)).eval()
    batch = model.example_batch(batch_size=2)
    action = model.token_layout(batch)["suffix"]["action"].any(0)
    with torch.no_grad():
        plain = model.sample_actions(batch, generator=torch.Generator().manual_seed(0))
        with capture(model, ["expert.layers.1.attn.probs"], queries=action) as cap:
            got = model.sample_actions(batch, generator=torch.Generator().manual_seed(0))
        # 8 of 9 rows kept: the whole map in one explicit pass, its output probs @ V (float rounding)
        torch.testing.assert_close(got, plain, rtol=0, atol=1e-5)
        steps = cap.calls("expert.layers.1.attn.probs")
        eager = []
        model.expert.config._attn_implementation = "eager"
        try:
            with capture(model, ["expert.layers.1.attn.probs"]) as ref:
                model.sample_actions(batch, generator=torch.Generator().manual_seed(0))
        finally:
            model.expert.config._attn_implementation = "sdpa"
        eager = ref.calls("expert.layers.1.attn.probs")  # the eager function's own weights, every row
    assert len(steps) == len(eager) == 3
    for s, e in zip(steps, eager, strict=True):
        torch.testing.assert_close(s, e[:, :, action], rtol=0, atol=1e-5)
    a = extract_attention(model, batch, [1])
    b = extract_attention(model, batch, [1])
    for key in a:
        for cam in a[key].maps:
            assert torch.equal(a[key].maps[cam], b[key].maps[cam])
