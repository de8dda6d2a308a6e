"""One checkpoint format (config.json + model.safetensors): saved and loaded through the type
registry, read with a format check, and every missing or damaged file named with the fix."""

import json

import pytest
import torch
from _toy_policy import Toy, register_toy, toy
from safetensors.torch import load_file, save_file

from policylens.runs import (
    check_safetensors,
    load_checkpoint,
    read_checkpoint,
    read_checkpoint_config,
    read_safetensors,
    register_policy_name,
    save_checkpoint,
)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_a_registered_policy_round_trips_through_its_type(registry, tmp_path):
    register_toy()
    model = toy(width=3).train()
    assert save_checkpoint(model, tmp_path / "ckpt") == tmp_path / "ckpt"
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text()) == {"type": "toy", "width": 3}
    assert sorted(load_file(str(tmp_path / "ckpt" / "model.safetensors"))) == ["body.bias", "body.weight", "scale"]
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert isinstance(loaded, Toy) and loaded.width == 3 and not loaded.training
    assert _same_weights(loaded, model)


def test_an_unregistered_model_needs_a_config(registry, tmp_path):
    register_toy()
    with pytest.raises(TypeError, match=r"Linear is not a registered policy type \(\['toy'\]\)"):
        save_checkpoint(torch.nn.Linear(2, 2), tmp_path)
    save_checkpoint(torch.nn.Linear(2, 2), tmp_path, config={"format": "linear-1", "dims": [2, 2]})
    config, tensors = read_checkpoint(tmp_path, format="linear-1")
    assert config == {"format": "linear-1", "dims": [2, 2]} and sorted(tensors) == ["bias", "weight"]


def test_read_checkpoint_checks_the_format_and_names_missing_files(tmp_path):
    save_checkpoint(torch.nn.Linear(2, 2), tmp_path / "a", config={"format": "head-1"})
    with pytest.raises(ValueError, match=r"a/config.json has format 'head-1'; expected 'student-1'"):
        read_checkpoint_config(tmp_path / "a", format="student-1")
    (tmp_path / "a" / "model.safetensors").unlink()
    hint = "pass the --out of a finished `policylens align head`"
    with pytest.raises(FileNotFoundError, match=r"^head='x' has no model.safetensors; pass the --out") as info:
        read_checkpoint(tmp_path / "a", what="head='x'", hint=hint)
    assert str(info.value).endswith(hint)
    with pytest.raises(FileNotFoundError, match=r"nothing has no config.json \+ model.safetensors; a checkpoint dir"):
        read_checkpoint_config(tmp_path / "nothing")


def test_damaged_files_are_named_with_the_fix(tmp_path):
    save_checkpoint(torch.nn.Linear(2, 2), tmp_path, config={"format": "f"})
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:20])
    for read in (read_safetensors, check_safetensors):
        with pytest.raises(ValueError, match=rf"{weights} is damaged \(truncated or not a safetensors file.*; retrain"):
            read(weights, fix="retrain")
    with pytest.raises(ValueError, match="is damaged.*re-save or re-download it"):
        read_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text('{"format": ')
    with pytest.raises(ValueError, match=f"{tmp_path / 'config.json'} is not valid JSON"):
        read_checkpoint(tmp_path)


def test_load_checkpoint_refuses_what_it_cannot_build(registry, tmp_path):
    register_toy()
    with pytest.raises(FileNotFoundError, match=r"config.json does not exist.*built-in name: \[\]"):
        load_checkpoint(tmp_path / "absent")
    save_checkpoint(toy(width=3), tmp_path)
    config = {"type": "other", "width": 3}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"field 'type'='other' is not one of \['toy'\]"):
        load_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"type": "toy", "width": 5}))
    with pytest.raises(ValueError, match="does not fit") as info:
        load_checkpoint(tmp_path)
    assert str(tmp_path / "model.safetensors") in str(info.value) and str(tmp_path / "config.json") in str(info.value)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model.safetensors is missing \(the weights beside"):
        load_checkpoint(tmp_path)


def test_a_registered_name_loads_unless_a_directory_has_that_name(registry, tmp_path, monkeypatch):
    register_toy()
    shipped = toy(width=2, seed=1)
    register_policy_name("toys/small", lambda: shipped)
    assert load_checkpoint("toys/small") is shipped
    monkeypatch.chdir(tmp_path)
    save_checkpoint(toy(width=4), tmp_path / "toys" / "small")
    assert load_checkpoint("toys/small").width == 4


def test_a_type_that_renames_keys_loads_weights_saved_under_the_old_ones(registry, tmp_path):
    def renamed(state, keys):
        assert set(keys) == {"body.weight", "body.bias", "scale"}
        return {k.replace("old_body.", "body."): v for k, v in state.items()}

    register_toy(rename_state=renamed)
    model = toy(width=3)
    save_checkpoint(model, tmp_path)
    old = {k.replace("body.", "old_body."): v for k, v in load_file(str(tmp_path / "model.safetensors")).items()}
    save_file(old, str(tmp_path / "model.safetensors"))
    assert _same_weights(load_checkpoint(tmp_path), model)
