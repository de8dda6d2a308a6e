"""``capture(keep_graph=True)``: the student's features keep the autograd graph, so a loss on
them gives the same gradients as the same loss on ``output_hidden_states``; under autocast and
inside a (single-process gloo) DistributedDataParallel too."""

import gc
import os

import pytest
import torch
import torch.distributed as dist

from policylens.tap import capture
from zoo import tiny_decoder


def _grads(model) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("family", ["gemma", "qwen2"])
def test_gradients_equal_those_through_output_hidden_states(family):
    model = tiny_decoder(family)
    ids = torch.randint(0, 60, (2, 7))
    target = torch.randn(2, 32)
    with capture(model, ["llm.layers.1.out"], keep_graph=True, positions=slice(2, 6)) as cap:
        model(input_ids=ids)
    feature = cap["llm.layers.1.out"]
    assert feature.requires_grad and feature.grad_fn is not None
    ((feature.mean(1) - target) ** 2).sum().backward()
    ours = _grads(model)
    model.zero_grad(set_to_none=True)
    hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[2][:, 2:6]
    ((hidden.mean(1) - target) ** 2).sum().backward()
    ref = _grads(model)
    assert ours.keys() == ref.keys() and len(ours) > 4  # layers 0 and 1 and the embedding
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], rtol=0, atol=0)


def test_detached_by_default_and_no_cast_with_the_graph():
    model = tiny_decoder("gemma")
    with capture(model, ["llm.layers.0.out"]) as cap:
        model(input_ids=torch.randint(0, 60, (1, 5)))
    assert not cap["llm.layers.0.out"].requires_grad
    with pytest.raises(ValueError, match="keep_graph=True.*drop dtype="):
        with capture(model, ["llm.layers.0.out"], keep_graph=True, dtype="float16"):
            pass


def test_under_bf16_autocast_the_graph_reaches_the_weights():
    model = tiny_decoder("qwen2")
    with torch.autocast("cpu", dtype=torch.bfloat16), capture(model, ["llm.layers.1.mlp.out"], keep_graph=True) as cap:
        model(input_ids=torch.randint(0, 60, (2, 5)))
    feature = cap["llm.layers.1.mlp.out"]
    assert feature.dtype == torch.bfloat16  # the module's own autocast output, not cast
    feature.float().pow(2).mean().backward()
    grads = _grads(model)
    assert grads and all(torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "layers.0" in n)


def test_inside_distributed_data_parallel(tmp_path):
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29533")
    dist.init_process_group("gloo", rank=0, world_size=1, init_method=f"file://{tmp_path / 'pg'}")
    try:
        model, reference = tiny_decoder("gemma"), tiny_decoder("gemma")
        reference.load_state_dict(model.state_dict())
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        ids = torch.randint(0, 60, (2, 5))
        with capture(ddp, ["llm.layers.1.out"], keep_graph=True) as cap:
            ddp(input_ids=ids)
        cap["llm.layers.1.out"].pow(2).mean().backward()
        ours = _grads(model)
        reference(input_ids=ids, output_hidden_states=True).hidden_states[2].pow(2).mean().backward()
        assert len(ours) > 4
        for name, g in _grads(reference).items():
            torch.testing.assert_close(ours[name], g, rtol=1e-6, atol=1e-7)
        del ddp, cap
    finally:
        gc.collect()  # the DDP wrapper freed while its group still exists
        dist.destroy_process_group()
