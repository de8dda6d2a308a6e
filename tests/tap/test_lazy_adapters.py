"""On a transformers without PaliGemma and ``AttentionInterface`` (VLA-Adapter pins 4.40.1), the
hidden-state taps still list and capture, and an attention tap says what it needs. The old
release is simulated in a child interpreter by making those names unimportable; the real one is
checked outside CI by ``scripts/vla_adapter_interop.py``."""

import subprocess
import sys
import textwrap

import pytest
import torch

from policylens.tap import Adapter, Component, get_adapter, register_adapter
from policylens.tap._adapter import adapter_modules

OLD_TRANSFORMERS = textwrap.dedent(
    """
    import importlib.abc, sys
    import transformers, transformers.modeling_utils

    GONE = {"PaliGemmaConfig", "PaliGemmaModel", "PaliGemmaForConditionalGeneration", "AttentionInterface"}

    class Old(type(transformers)):
        def __getattr__(self, name):
            if name in GONE:
                raise ImportError(f"cannot import name {name!r} from 'transformers'")
            return super().__getattr__(name)

    class NoPaliGemma(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.startswith("transformers.models.paligemma"):
                raise ModuleNotFoundError(f"No module named {name!r}")

    transformers.__class__ = Old
    del transformers.modeling_utils.AttentionInterface
    sys.meta_path.insert(0, NoPaliGemma())
    """
)

CHECKS = textwrap.dedent(
    """
    import torch
    import policylens.models
    from policylens.tap import capture, list_taps
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      vocab_size=64, attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg).eval()
    names = [t.name for t in list_taps(model)]
    hidden = [n for n in names if not n.endswith("attn.probs")]
    ids = torch.randint(0, 64, (2, 5))
    with torch.no_grad(), capture(model, hidden) as cap:
        out = model(ids, output_hidden_states=True)
    assert torch.equal(cap["llm.layers.0.out"], out.hidden_states[1])
    assert torch.equal(cap["llm.norm.out"], out.hidden_states[-1])
    for impl in ("sdpa", "eager"):
        model.config._attn_implementation = impl
        try:
            with capture(model, ["llm.layers.0.attn.probs"]):
                model(ids)
        except ImportError as exc:
            print(f"{impl}: {exc}")
    try:
        policylens.models.TinyVLA
    except ImportError:
        print("TinyVLA: needs PaliGemma")
    print(f"hidden taps: {len(hidden)} ok")
    """
)


@pytest.fixture(scope="module")
def old_transformers_run():
    run = subprocess.run(
        [sys.executable, "-c", OLD_TRANSFORMERS + CHECKS], capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout


def test_simulation_really_removes_the_names():
    code = OLD_TRANSFORMERS + (
        "\ntry:\n    from transformers import PaliGemmaConfig\nexcept ImportError:\n    print('gone')\n"
        "try:\n    from transformers.modeling_utils import AttentionInterface\nexcept ImportError:\n    print('gone')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert run.stdout.split() == ["gone", "gone"], run.stderr[-3000:]


def test_hidden_state_taps_list_and_capture_on_old_transformers(old_transformers_run):
    assert "hidden taps: 9 ok" in old_transformers_run


def test_attention_taps_fail_with_the_version_needed(old_transformers_run):
    for impl in ("sdpa", "eager"):
        line = next(x for x in old_transformers_run.splitlines() if x.startswith(f"{impl}:"))
        assert "transformers>=4.57.1" in line and "AttentionInterface" in line
        assert "Hidden-state taps" in line and "work on this version" in line


def test_tiny_vla_is_imported_on_first_use_only(old_transformers_run):
    assert "TinyVLA: needs PaliGemma" in old_transformers_run


def test_builtin_modules_are_declared_as_entry_points_and_import_one_by_one():
    import importlib

    assert set(adapter_modules()) >= {
        "policylens.models._hf_adapters",
        "policylens.models._lerobot_adapters",
        "policylens.models._lerobot_teacher",
        "policylens.models._prismatic_adapter",
    }
    for name in adapter_modules():
        importlib.import_module(name)  # each imports on its own


def test_a_fresh_interpreter_finds_the_adapters_without_importing_models():
    code = (
        "import sys, torch\nfrom policylens.tap import get_adapter\n"
        "from transformers import LlamaConfig, LlamaForCausalLM\n"
        "assert 'policylens.models' not in sys.modules\n"
        "cfg = LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, "
        "vocab_size=8)\n"
        "print(get_adapter(LlamaForCausalLM(cfg)).name)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-1] == "decoder", run.stdout  # the HF decoder adapter, registered by its entry point


def test_unknown_class_error_names_families_that_failed(monkeypatch):
    from policylens.tap import _adapter

    monkeypatch.setitem(_adapter._PLUGIN_ERRORS, "policylens.models._fake", "ImportError: no PaliGemma")
    with pytest.raises(TypeError, match=r"Not loaded: policylens\.models\._fake \(ImportError: no PaliGemma\)"):
        get_adapter(torch.nn.Linear(2, 2))


def test_wildcard_key_matches_any_package_ending_in_the_module(monkeypatch):
    from policylens.tap import _adapter

    class Remote(torch.nn.Module):
        pass

    Remote.__module__, Remote.__qualname__ = "transformers_modules.some.repo.modeling_remote", "Remote"
    monkeypatch.setattr(_adapter, "_REGISTRY", dict(_adapter._REGISTRY))
    adapter = Adapter("remote", (Component("llm", layers=("layers",)),))
    register_adapter("*.modeling_remote.Remote", adapter)
    assert get_adapter(Remote()) is adapter
    Remote.__module__ = "elsewhere.not_modeling_remote"  # must end with ".modeling_remote"
    with pytest.raises(TypeError, match="no adapter"):
        get_adapter(Remote())
