"""``tap_name`` is the one builder of tap names: it spells the grammar every job uses, its names
are the ones ``list_taps`` lists, and bad parts fail naming the parameter."""

import re
from pathlib import Path

import numpy as np
import pytest

from policylens.models import TinyVLA, TinyVLAConfig
from policylens.tap import LAYER_POINTS, list_taps, resolve_taps, tap_name

SRC = Path(__file__).resolve().parents[2] / "src" / "policylens"


def test_the_grammar_spelled_out():
    assert tap_name("llm", -2) == "llm.layers.-2.out"
    assert tap_name("expert", 3, "attn.probs") == "expert.layers.3.attn.probs"
    assert tap_name("vision_fused", np.int64(0), "mlp.out") == "vision_fused.layers.0.mlp.out"
    assert tap_name("llm", None, "norm.out") == "llm.norm.out"
    assert tap_name("projector", None) == "projector.out"


def test_every_listed_tap_of_a_model_is_a_built_name():
    model = TinyVLA(TinyVLAConfig(image_size=28, patch_size=14)).eval()
    listed = [info.name for info in list_taps(model)]
    built = set()
    for name in listed:
        parts = name.split(".")
        if len(parts) > 2 and parts[1] == "layers":
            built.add(tap_name(parts[0], int(parts[2]), ".".join(parts[3:])))
        else:
            built.add(tap_name(parts[0], None, ".".join(parts[1:])))
    assert built == set(listed)
    n = len(model.paligemma.language_model.layers)
    assert resolve_taps(model, [tap_name("llm", -1)])[0].canonical == tap_name("llm", n - 1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("llm.x", 0), "component='llm.x'"),
        (("", 0), "component=''"),
        (("llm", "2"), "layer='2'"),
        (("llm", True), "layer=True"),
        (("llm", 1.0), "layer=1.0"),
        (("llm", 0, "probs"), "point='probs'"),
        (("llm", None, "attn.out"), "point='attn.out' with layer=None"),
    ],
)
def test_bad_parts_name_the_parameter(args, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        tap_name(*args)


def test_every_layer_point_is_accepted():
    assert [tap_name("llm", 1, p) for p in LAYER_POINTS] == [f"llm.layers.1.{p}" for p in LAYER_POINTS]


# files that still format a tap name by hand, with why; the test fails when one is fixed (delete it here)
PENDING: dict[str, str] = {}


def test_the_jobs_build_tap_names_through_tap_name():
    """No source file outside tap/_names.py formats ``<component>.layers.<i>`` by hand."""
    by_hand = re.compile(r"""f["'][^"'\n]*\.layers\.\{""")
    found = {
        str(p.relative_to(SRC))
        for p in SRC.rglob("*.py")
        if p != SRC / "tap" / "_names.py" and any(by_hand.search(line) for line in p.read_text().splitlines())
    }
    assert sorted(found - set(PENDING)) == [], "build tap names with policylens.tap.tap_name"
    assert sorted(set(PENDING) - found) == [], "fixed: delete it from PENDING"
