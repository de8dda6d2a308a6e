"""capture(modules=...): any submodule's output by path, one record per call, beside named taps,
on models with no adapter; on_record sees every stored record in call order."""

import pytest
import torch
from torch import nn

from policylens.tap import capture
from zoo import paligemma_batch, tiny_decoder


class Twice(nn.Module):
    """A block that returns exactly twice its input, run three times per forward (like a denoiser
    step), and an MHA whose output is a tuple: records are known exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Module()
        self.inner.step = nn.Identity()
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)

    def forward(self, x):
        for _ in range(3):
            x = 2 * self.inner.step(x)
        return self.attn(x, x, x)[0]


def test_module_paths_record_each_call_without_an_adapter():
    model = Twice().eval()
    x = torch.arange(12.0).reshape(1, 3, 4)
    with capture(model, modules=["inner.step", "attn"], dtype="float16") as cap:
        out = model(x)
    calls = cap.calls("inner.step")
    assert [c.dtype for c in calls] == [torch.float16] * 3
    for k, c in enumerate(calls):  # the Identity's input at call k is x * 2**k
        assert torch.equal(c, (x * 2**k).half())
    assert torch.equal(cap["attn"], out.detach().half())  # the first tensor of MHA's (out, weights)
    assert not model.inner.step._forward_hooks and not model.attn._forward_hooks


def test_modules_by_record_name_beside_taps(paligemma):
    batch = paligemma_batch()
    path = "model.language_model.layers.1.mlp.down_proj"
    with capture(paligemma, ["llm.layers.1.mlp.out"], modules={"down": path}) as cap:
        paligemma(**batch)
    assert cap.keys() == ["llm.layers.1.mlp.out", "down"]
    torch.testing.assert_close(cap["down"], cap["llm.layers.1.mlp.out"], rtol=0, atol=0)  # the MLP ends there


def test_on_record_sees_every_record_in_call_order():
    model = Twice().eval()
    seen = []
    with capture(model, modules={"a": "inner.step", "b": "attn"}, on_record=seen.append) as cap:
        model(torch.ones(2, 3, 4))
    assert seen == ["a", "a", "a", "b"] and len(cap.calls("a")) == 3


def test_bad_module_paths_fail_naming_the_path_and_the_fix():
    model = tiny_decoder("gemma")
    with pytest.raises(KeyError, match=r"'model.layers.0.mlp.down_prj' is not a submodule .* Did you mean: "):
        with capture(model, modules=["model.layers.0.mlp.down_prj"]):
            pass
    assert not any(m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match=r"\['llm.layers.0.out'\] named both as taps and in modules="):
        with capture(model, ["llm.layers.0.out"], modules={"llm.layers.0.out": "model.layers.0"}):
            pass
    with pytest.raises(TypeError, match="expected module path strings"):
        with capture(model, modules={"x": 3}):
            pass
