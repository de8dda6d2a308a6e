"""BAC on transformers' own pi0 / pi0.5 (``PI0ForConditionalGeneration`` / ``PI05ForConditionalGeneration``):
their action expert (``model.dit``) is cached, the state resets at each ``sample_actions``; every step
updated is bit-identical, a uniform schedule matches a plain cache written here, and a schedule that
staggers the expert's attention (which the loop's cache crop cannot follow) is refused before it runs."""

import numpy as np
import pytest
import torch

from pi_zoo import model
from policylens.accel import BACConfig, Calibration, cache_context, cache_info, discover_branches, model_hash

NAMES = [
    "model.dit.layers.0.self_attn",
    "model.dit.layers.0.mlp",
    "model.dit.layers.1.self_attn",
    "model.dit.layers.1.mlp",
]


def _inputs(variant: str) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.cat([torch.full((2, 4), 3), torch.randint(5, 40, (2, 6), generator=g)], 1)
    out = {
        "input_ids": ids,
        "pixel_values": torch.randn(2, 1, 3, 28, 28, generator=g),
        "pixel_attention_mask": torch.ones(2, 1, dtype=torch.bool),
        "attention_mask": torch.ones_like(ids),
        "noise": torch.randn(2, 4, 8, generator=g),
    }
    if variant == "pi0":
        out["state"] = torch.randn(2, 8, generator=g)
    return out


def _reference(net, inputs, every: int):
    """Plain caching written here: each expert branch module recomputes every ``every``-th call and returns
    its stored output otherwise (a skipped attention then adds no keys to the loop's cache either)."""
    calls, store, patched = {}, {}, []
    for name in NAMES:
        module = net.get_submodule(name)
        orig = module.forward

        def forward(*args, _orig=orig, _name=name, **kwargs):
            k = calls[_name] = calls.get(_name, -1) + 1
            if k % every == 0:
                store[_name] = _orig(*args, **kwargs)
            return store[_name]

        module.forward = forward
        patched.append(module)
    try:
        return net.sample_actions(**inputs)
    finally:
        for module in patched:
            del module.forward


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_native_pi_expert_is_cached_per_chunk(variant):
    net = model(variant, image_token_id=3, vocab_size=40)
    inputs = _inputs(variant)
    assert [b.name for b in discover_branches(net, "model.dit")] == NAMES
    want = net.sample_actions(**inputs)
    with cache_context(net, BACConfig(mode="uniform", every=1)):  # root, loop method and steps from the profile
        assert torch.equal(net.sample_actions(**inputs), want)
    reference = _reference(net, inputs, every=2)
    assert not torch.allclose(reference, want, atol=1e-7)
    with cache_context(net, BACConfig(mode="uniform", every=2)):
        got = net.sample_actions(**inputs)
        assert torch.equal(net.sample_actions(**inputs), got)  # a second chunk starts afresh
        with pytest.raises(ValueError, match="num_steps=2, but the BAC schedule was made for 3"):
            net.sample_actions(**inputs, num_steps=2)
    torch.testing.assert_close(got, reference, rtol=0, atol=1e-6)


def test_staggered_attention_is_refused_where_the_loop_crops_a_shared_cache():
    net = model("pi05", image_token_id=3, vocab_size=40)
    zero = {n: np.zeros((3, 3)) for n in NAMES}
    cal = Calibration(
        num_steps=3,
        block_names=NAMES,
        kinds={n: "ffn" if n.endswith("mlp") else "attn" for n in NAMES},
        layers={n: int(n.split(".")[-2]) for n in NAMES},
        model_hash=model_hash(net),
        metric="cosine",
        num_updates=2,
        n_bu=0,
        matrices={"cosine": zero, "l1": zero},
        schedule={NAMES[0]: [0, 1, 2], NAMES[1]: [0, 2], NAMES[2]: [0, 2], NAMES[3]: [0]},
    )
    with pytest.raises(ValueError, match="every expert attention must update at the same steps"):
        with cache_context(net, BACConfig(mode="optimal", calibration=cal)):
            pass
    shared = {**cal.schedule, NAMES[0]: [0, 2]}  # attention steps shared, MLP steps staggered: allowed
    cal = Calibration(**{**cal.__dict__, "schedule": shared})
    with cache_context(net, BACConfig(mode="optimal", calibration=cal)):
        assert net.sample_actions(**_inputs("pi05")).shape == (2, 4, 8)


def test_native_pi_policy_caches_its_model_expert():
    from pi_zoo import pair
    from policylens.models import NativePIPolicy

    policy = NativePIPolicy(*pair("pi05")).eval()
    batch = policy.example_batch(2)

    def sample():
        return policy.sample_actions(batch, generator=torch.Generator().manual_seed(0))

    want = sample()
    with cache_context(policy, BACConfig(mode="uniform", every=1)):
        assert [n.removeprefix("model.") for n in cache_info(policy)["schedule"]] == NAMES
        assert torch.equal(sample(), want)
    with cache_context(policy, BACConfig(mode="uniform", every=2)):
        cached = sample()
        with pytest.raises(ValueError, match="steps=2, but the BAC schedule was made for 3"):
            policy.sample_actions(batch, steps=2)
    assert 0 < (cached - want).abs().max() < 1e-2
