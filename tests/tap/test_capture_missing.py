"""A requested tap that never fires is an error (or a warning, by choice), never a silent empty capture."""

import pytest
import torch

from policylens.models import TinyVLA, TinyVLAConfig
from policylens.tap import TapNotFiredError, TapNotFiredWarning, capture


@pytest.fixture(scope="module")
def vla():
    torch.manual_seed(0)
    model = TinyVLA(TinyVLAConfig(image_size=28, patch_size=14)).eval()
    return model, model.example_batch(batch_size=1)


def test_a_tap_that_never_fires_raises_naming_it_and_its_module(vla):
    model, batch = vla
    with pytest.raises(TapNotFiredError) as err, capture(model, ["llm.layers.0.out", "expert.layers.1.out"]):
        model.run_prefix(batch)  # the prefix pass never runs the action expert
    message = str(err.value)
    assert "1 of 2 taps fired 0 times" in message
    assert "expert.layers.1.out (hooked on expert.layers.1)" in message and "llm.layers.0.out" not in message
    assert "missing='warn'" in message


def test_warn_and_ignore_keep_what_did_fire(vla):
    model, batch = vla
    with (
        pytest.warns(TapNotFiredWarning, match="expert.layers.1.out"),
        capture(model, ["llm.layers.0.out", "expert.layers.1.out"], missing="warn") as cap,
    ):
        model.run_prefix(batch)
    assert cap["llm.layers.0.out"].shape[0] == 1 and cap.calls("expert.layers.1.out") == []
    with capture(model, ["expert.layers.1.out"], missing="ignore") as cap:
        model.run_prefix(batch)
    assert cap.calls("expert.layers.1.out") == []


def test_missing_must_be_a_known_choice(vla):
    model, _ = vla
    with pytest.raises(ValueError, match="missing='never'"), capture(model, ["llm.layers.0.out"], missing="never"):
        pass
