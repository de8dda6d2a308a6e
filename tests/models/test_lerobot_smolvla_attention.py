"""SmolVLA's llm / expert ``attn.probs`` on a stand-in that computes attention the way LeRobot's
``SmolVLMWithExpertModel`` does (``tests/smolvla_zoo.py``): on ``predict_action_chunk`` (expert taps once per
flow step) and the training ``forward``, in every layer arrangement LeRobot has, they equal softmax(QKᵀ/√d + mask)
computed here in float64 with explicit loops from the inputs of each attention call; the model's output and
methods are untouched."""

import math

import pytest
import torch

from lerobot_zoo import byte_preprocessor
from policylens.models import LeRobotTeacher, lerobot_adapter
from policylens.tap import Adapter, Component, capture, list_taps, register_adapter
from smolvla_zoo import SmolVLALikeConfig, SmolVLALikePolicy, SmolVLMWithExpertLike, smolvla_like_batch

register_adapter("smolvla_zoo.SmolVLALikePolicy", lambda _m: lerobot_adapter("smolvla"))
TP, TS = 2 * 4 + 6 + 1, 4  # prefix: 2 cameras x 4 image tokens, 6 language tokens, the state; suffix: 4 actions
HEADS, KV_HEADS, HEAD_DIM = 4, 2, 8
METHODS = ("forward_attn_layer", "forward_cross_attn_layer", "get_attention_interface")

# Per arrangement, the attention calls in order: each a list of (tap owning those query rows, rows); keys per call.
# The prefix pass runs forward_attn_layer on every layer; a flow step: self-attention layers see prefix + suffix
# keys, cross-attention layers the prefix's; the training pass: self-attention layers one joint call (prefix rows,
# then suffix rows), cross-attention layers the prefix alone then the expert against the prefix.
L, E = "llm.layers.{}.attn.probs", "expert.layers.{}.attn.probs"


def llm(i: int) -> tuple[str, int]:
    return L.format(i), TP


def expert(i: int) -> tuple[str, int]:
    return E.format(i), TS


PREFIX_PASS = [[llm(i)] for i in range(4)]
CROSS_TRAIN = [[llm(0), expert(0)], [llm(1)], [expert(1)], [llm(2), expert(2)], [llm(3)], [expert(3)]]
CASES = {  # name: (config options, predict_action_chunk's calls, forward's calls)
    "cross": ({}, PREFIX_PASS + 3 * [[expert(i)] for i in range(4)], CROSS_TRAIN),
    "self": (
        {"attention_mode": "self_attn"},
        PREFIX_PASS + 3 * [[expert(i)] for i in range(4)],
        [[llm(i), expert(i)] for i in range(4)],
    ),
    "two expert layers": (  # expert 0 at LLM layer 0 (self-attention), expert 1 at LLM layer 2 (cross)
        {"num_expert_layers": 2, "self_attn_every_n_layers": 4},
        PREFIX_PASS + 3 * [[expert(0)], [expert(1)]],
        [[llm(0), expert(0)], [llm(1)], [llm(2)], [expert(1)], [llm(3)]],
    ),
    "sdpa": ({"attention": "sdpa"}, PREFIX_PASS + 3 * [[expert(i)] for i in range(4)], CROSS_TRAIN),
}


def eager_reference(mask: torch.Tensor, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """``(B, H, Tq, Tk)`` float64: per row, softmax of q·k/√d over the keys the bool mask allows, 0 elsewhere; a
    row that allows none is uniform (every score at the same floor, as SmolVLA's eager attention has it)."""
    b_size, tq, heads, d = query.shape
    tk, groups = key.shape[1], heads // key.shape[2]
    out = torch.zeros(b_size, heads, tq, tk, dtype=torch.float64)
    for b in range(b_size):
        for h in range(heads):
            keys = key[b, :, h // groups].double()  # (Tk, d)
            for i in range(tq):
                allowed = mask[b, i]
                if not allowed.any():
                    out[b, h, i] = 1.0 / tk
                    continue
                scores = keys[allowed] @ query[b, i, h].double() / math.sqrt(d)
                weights = torch.exp(scores - scores.max())
                out[b, h, i, allowed] = weights / weights.sum()
    return out


def _record_calls(monkeypatch) -> list[tuple]:
    """The (mask, query, key) of every attention call, whichever function the model runs."""
    calls = []
    for name in ("eager_attention_forward", "sdpa_attention_forward"):
        original = getattr(SmolVLMWithExpertLike, name)

        def recording(self, mask, batch_size, head_dim, q, k, v, original=original):
            calls.append((mask.clone(), q.detach().clone(), k.detach().clone()))
            return original(self, mask, batch_size, head_dim, q, k, v)

        monkeypatch.setattr(SmolVLMWithExpertLike, name, recording)
    return calls


def _expected(calls: list[tuple], plan: list[list[tuple[str, int]]]) -> dict[str, list[torch.Tensor]]:
    assert len(calls) == len(plan)
    want: dict[str, list[torch.Tensor]] = {}
    for (mask, q, k), streams in zip(calls, plan, strict=True):
        probs, start = eager_reference(mask, q, k), 0
        assert q.shape[1] == sum(n for _, n in streams)
        for tap, n in streams:
            want.setdefault(tap, []).append(probs[:, :, start : start + n])
            start += n
    return want


def _probs_taps(policy) -> list[str]:
    return [t.name for t in list_taps(policy) if t.name.endswith("attn.probs") and not t.name.startswith("vision")]


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("entry", ["predict_action_chunk", "forward"])
def test_llm_and_expert_probs_equal_the_eager_reference(case, entry, monkeypatch):
    options, infer_plan, train_plan = CASES[case]
    policy = SmolVLALikePolicy(SmolVLALikeConfig(**options))
    batch, names = smolvla_like_batch(policy), _probs_taps(policy)
    calls = _record_calls(monkeypatch)
    with torch.no_grad(), capture(policy, names) as cap:
        policy.predict_action_chunk(batch) if entry == "predict_action_chunk" else policy(batch)
    want = _expected(calls, infer_plan if entry == "predict_action_chunk" else train_plan)
    assert sorted(want) == sorted(names)  # every layer's taps fired
    for name in names:
        got = cap.calls(name)
        assert len(got) == len(want[name]), name  # the expert's: once per flow step
        for g, w in zip(got, want[name], strict=True):
            assert g.dtype == torch.float32 and g.shape == w.shape
            torch.testing.assert_close(g.double(), w, rtol=1e-5, atol=1e-6)


def test_shapes_per_layer_kind_and_masked_rows(monkeypatch):
    policy = SmolVLALikePolicy()
    batch = smolvla_like_batch(policy)
    with torch.no_grad(), capture(policy, _probs_taps(policy)) as cap:
        policy.predict_action_chunk(batch)
    assert cap["llm.layers.1.attn.probs"].shape == (2, HEADS, TP, TP)
    assert [c.shape for c in cap.calls(E.format(0))] == [(2, HEADS, TS, TP + TS)] * 3  # self-attention layer
    assert [c.shape for c in cap.calls(E.format(1))] == [(2, HEADS, TS, TP)] * 3  # cross-attention: the prefix
    llm = cap["llm.layers.0.attn.probs"]
    pad = [8 + 4, 8 + 5]  # sample 1's two padded language tokens
    torch.testing.assert_close(llm[1, :, pad], torch.full((HEADS, 2, TP), 1.0 / TP))  # a fully masked row: uniform
    assert llm[0, :, 0, pad].min() > 0 and llm[1, :, 0, pad].abs().max() == 0  # keys: masked in sample 1 only
    assert llm[:, :, 0, TP - 1].abs().max() == 0  # the image tokens do not see the state's block
    torch.testing.assert_close(cap.calls(E.format(0))[0].sum(-1), torch.ones(2, HEADS, TS))


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_capture_changes_no_output_and_leaves_the_methods(attention):
    policy = SmolVLALikePolicy(SmolVLALikeConfig(attention=attention))
    batch, core = smolvla_like_batch(policy), policy.model.vlm_with_expert
    noise = torch.randn(2, 4, 5, generator=torch.Generator().manual_seed(1))
    plain = policy.predict_action_chunk(batch, noise=noise)
    loss = policy(batch, noise=noise)
    with capture(policy, _probs_taps(policy)):
        tapped = policy.predict_action_chunk(batch, noise=noise)
        tapped_loss = policy(batch, noise=noise)
        assert set(METHODS) <= set(vars(core))  # routed while the capture is open
    assert torch.equal(plain, tapped) and torch.equal(loss, tapped_loss)
    assert not set(METHODS) & set(vars(core))

    def interrupted():
        with capture(policy, ["expert.layers.1.attn.probs"]):
            policy.predict_action_chunk(batch)
            raise ZeroDivisionError  # an error inside the block still unroutes

    with pytest.raises(ZeroDivisionError):
        interrupted()
    assert not set(METHODS) & set(vars(core))


def test_nested_captures_share_the_routes_and_keep_an_existing_override():
    policy = SmolVLALikePolicy()
    batch, core = smolvla_like_batch(policy), policy.model.vlm_with_expert
    own = core.get_attention_interface  # an instance attribute set before the captures stays
    core.get_attention_interface = own
    with capture(policy, ["llm.layers.0.attn.probs"]) as outer:
        with capture(policy, ["expert.layers.1.attn.probs"]) as inner:
            policy.predict_action_chunk(batch)
        policy.predict_action_chunk(batch)  # the inner capture's end leaves the outer one routed
    assert len(outer.calls("llm.layers.0.attn.probs")) == 2 and len(inner.calls("expert.layers.1.attn.probs")) == 3
    assert vars(core)["get_attention_interface"] is own
    assert not {"forward_attn_layer", "forward_cross_attn_layer"} & set(vars(core))


def test_heads_and_rows_are_selected_before_the_copy():
    policy = SmolVLALikePolicy()
    batch, name = smolvla_like_batch(policy), E.format(0)
    with capture(policy, [name]) as full:
        policy.predict_action_chunk(batch, noise=torch.zeros(2, 4, 5))
    with capture(policy, [name], heads=[1, 3], queries={name: slice(1, 3)}, keys={name: slice(0, TP)}) as part:
        policy.predict_action_chunk(batch, noise=torch.zeros(2, 4, 5))
    for a, b in zip(part.calls(name), full.calls(name), strict=True):
        assert torch.equal(a, b[:, [1, 3], 1:3, :TP])


def test_keep_graph_trains_through_the_probs_and_stop_early_ends_the_pass():
    policy = SmolVLALikePolicy()
    batch, core = smolvla_like_batch(policy), policy.model.vlm_with_expert
    with capture(policy, [E.format(1)], keep_graph=True) as cap:
        policy(batch)
    cap[E.format(1)].pow(2).sum().backward()
    assert core.lm_expert.layers[1].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert core.lm_expert.layers[2].self_attn.q_proj.weight.grad is None  # after the tapped layer: no part in it
    with torch.no_grad(), capture(policy, [L.format(0)], stop_early=True) as cap:
        policy.predict_action_chunk(batch)
        raise AssertionError("the pass should have stopped at the tap")
    assert len(cap.calls(L.format(0))) == 1 and not set(METHODS) & set(vars(core))


def test_every_listed_tap_fires_on_some_entry_point():
    policy = SmolVLALikePolicy()
    names, batch = [t.name for t in list_taps(policy)], smolvla_like_batch(policy)
    assert {"llm.layers.3.attn.probs", "expert.layers.3.attn.probs"} <= set(names)
    with torch.no_grad(), capture(policy, names, missing="ignore") as infer:
        policy.predict_action_chunk(batch)
    with torch.no_grad(), capture(policy, names, missing="ignore") as train:
        policy(batch)
    assert [n for n in names if not infer.calls(n) and not train.calls(n)] == []


def test_the_attention_job_reads_both_phases_through_a_teacher():
    from policylens.attention import extract_attention

    policy = SmolVLALikePolicy()
    teacher = LeRobotTeacher(policy, byte_preprocessor(policy, max_tokens=6), "smolvla")
    frames = {c: torch.randint(0, 255, (2, 32, 32, 3), dtype=torch.uint8) for c in policy.config.image_features}
    batch = teacher.make_batch(frames, ["pick up the cube", "push"], torch.zeros(2, 6))
    maps = extract_attention(teacher, batch, layers=[1])
    for phase in ("prefix", "suffix"):
        m = maps[(phase, 1)]
        assert {tuple(t.shape) for t in m.maps.values()} == {(2, HEADS, 2, 2)}
        total = sum(m.mass[k] for k in ("image", "text", "state", "pad", "suffix"))
        torch.testing.assert_close(total, torch.ones(2, HEADS), atol=2e-3, rtol=0)  # float16 maps
    assert maps[("suffix", 1)].steps["observation.images.top"].shape[0] == policy.config.num_steps


def test_an_unexpected_calling_convention_is_an_error_not_a_wrong_map(monkeypatch):
    original = SmolVLMWithExpertLike.forward_attn_layer

    def twice(self, *args, **kwargs):  # a layer method that calls attention once more than LeRobot's
        original(self, *args, **kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(SmolVLMWithExpertLike, "forward_attn_layer", twice)
    policy = SmolVLALikePolicy()
    with pytest.raises(RuntimeError, match="outside forward_attn_layer"), capture(policy, [L.format(0)]):
        policy.predict_action_chunk(smolvla_like_batch(policy))
    assert not set(METHODS) & set(vars(policy.model.vlm_with_expert))


def test_the_kind_on_a_model_without_smolvla_attention_says_so():
    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.Module()])
            self.layers[0].self_attn = torch.nn.Linear(2, 2)
            self.layers[0].mlp = torch.nn.Identity()

    model = Plain()
    model.policylens_adapter = Adapter("plain", (Component("llm", layers=("layers",), attention="smolvla"),))
    with pytest.raises(ValueError, match="forward_attn_layer"), capture(model, ["llm.layers.0.attn.probs"]):
        pass
