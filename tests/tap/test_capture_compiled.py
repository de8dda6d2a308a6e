"""Capture works on a ``torch.compile``-d model: tap names resolve through the compiled wrapper,
the hooks run inside the compiled forward, and the tensors equal the eager ones (dynamo's
``eager`` backend here, to keep the test fast; the inductor backend gave the same on this CPU)."""

import torch

from policylens.models import TinyVLA, TinyVLAConfig
from policylens.tap import capture, list_taps

TAPS = ["llm.layers.0.out", "expert.layers.1.out", "llm.layers.1.attn.probs"]


def test_capture_through_torch_compile_equals_eager():
    torch.manual_seed(0)
    model = TinyVLA(TinyVLAConfig(image_size=28, patch_size=14, flow_steps=2)).eval()
    batch = model.example_batch(1)
    torch.manual_seed(1)
    with torch.no_grad(), capture(model, TAPS) as ref:
        model(**batch)
    compiled = torch.compile(model, backend="eager")
    assert [t.name for t in list_taps(compiled)] == [t.name for t in list_taps(model)]
    torch.manual_seed(1)
    with torch.no_grad(), capture(compiled, TAPS) as cap:
        compiled(**batch)
    for name in TAPS:
        torch.testing.assert_close(cap.stacked(name), ref.stacked(name), rtol=0, atol=1e-5)
