"""The registry of policy types: what a config's ``type`` may name, and which type a model is."""

import pytest
import torch
from _toy_policy import Toy, register_toy, toy

from policylens.runs import (
    list_policy_names,
    list_policy_types,
    load_train_state,
    policy_type,
    policy_type_of,
    register_policy_name,
    save_train_state,
)


def test_types_and_names_are_listed_and_looked_up(registry):
    assert list_policy_types() == [] and list_policy_names() == []
    register_toy(default=lambda: toy(width=2))
    register_policy_name("toys/tiny", lambda: toy(width=1))
    assert list_policy_types() == ["toy"] and list_policy_names() == ["toy", "toys/tiny"]
    kind = policy_type("toy")
    assert kind.name == "toy" and isinstance(kind.build({"width": 4}), Toy)
    assert policy_type_of(toy()) is kind and policy_type_of(torch.nn.Linear(2, 2)) is None
    with pytest.raises(KeyError, match=r"policy type 'other' is not registered \(\['toy'\]\)"):
        policy_type("other")


def test_a_train_state_is_renamed_by_the_models_type(registry, tmp_path):
    calls = []

    def renamed(state, keys):
        calls.append(sorted(keys))
        return state

    register_toy(rename_state=renamed)
    model = toy(width=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    save_train_state(tmp_path, model, opt, 1)
    assert load_train_state(tmp_path, model, opt) == 1
    assert calls == [["body.bias", "body.weight", "scale"]]
    other = torch.nn.Linear(2, 2)  # no registered type: loaded as saved
    save_train_state(tmp_path / "b", other, torch.optim.SGD(other.parameters(), lr=0.1), 2)
    assert load_train_state(tmp_path / "b", other, torch.optim.SGD(other.parameters(), lr=0.1)) == 2
    assert len(calls) == 1
