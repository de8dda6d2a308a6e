"""The training state: model, optimiser and every random state saved without pickle and restored, so a
resumed loop draws what the uninterrupted one would have drawn."""

import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from policylens.runs import load_train_extra, load_train_state, save_train_state


def _draws(gens):
    """One draw from every generator a loop may use: torch's, numpy's and Python's global ones, and ``gens``."""
    return [
        torch.rand(3).tolist(),
        np.random.rand(3).tolist(),
        [random.random() for _ in range(3)],
        torch.rand(3, generator=gens["order"]).tolist(),
        gens["batches"].integers(0, 10**9, 3).tolist(),
    ]


def _gens(seed):
    return {"order": torch.Generator().manual_seed(seed), "batches": np.random.default_rng(seed)}


def test_random_states_are_saved_without_pickle_and_restored(tmp_path):
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    gens = _gens(1)
    _draws(gens)  # advance everything past its seed
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    save_train_state(tmp_path, model, opt, 3, generators=gens)
    want = _draws(gens)  # what the run draws after step 3
    torch.manual_seed(7), np.random.seed(7), random.seed(7)
    other = _gens(7)
    assert load_train_state(tmp_path, torch.nn.Linear(2, 2), torch.optim.AdamW(model.parameters()), other) == 3
    assert _draws(other) == want
    saved = json.loads((tmp_path / "train_state.json").read_text())["rng"]
    assert set(saved) == {"numpy", "python", "numpy_generators"} and list(saved["numpy_generators"]) == ["batches"]
    tensors = load_file(str(tmp_path / "train_state.safetensors"))
    assert tensors["rng.torch"].dtype == torch.uint8 and "rng.gen.order" in tensors
    assert not list(tmp_path.glob("*.pkl")) and not list(tmp_path.glob("*.pt"))


def test_a_state_without_the_named_generator_is_refused(tmp_path):
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(model.parameters())
    save_train_state(tmp_path, model, opt, 1, generators={"order": torch.Generator()})
    with pytest.raises(ValueError, match=r"no Generator 'rows' \(it holds \['order'\]\).*overwrite"):
        load_train_state(tmp_path, model, opt, {"rows": torch.Generator()})


def test_model_optimiser_and_extra_come_back_exactly(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 3)).square().sum().backward()
        opt.step()
    assert load_train_state(tmp_path, model, opt) == 0 and load_train_extra(tmp_path) == {}  # nothing saved yet
    save_train_state(tmp_path, model, opt, 3, extra={"lambda": 0.25, "series": [1.0, 2.0]})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_state.json", "train_state.safetensors"]  # no .tmp
    fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=1.0)
    assert load_train_state(tmp_path, fresh, fresh_opt) == 3
    assert load_train_extra(tmp_path) == {"lambda": 0.25, "series": [1.0, 2.0]}
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    want, got = opt.state_dict(), fresh_opt.state_dict()
    assert got["param_groups"] == json.loads(json.dumps(want["param_groups"]))  # lr 1e-2 again; betas a list
    for index, state in want["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(got["state"][index][name]), torch.as_tensor(value)), (index, name)


class _Tied(torch.nn.Module):
    """A language model's tied weights: the output head is the embedding matrix."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(6, 4)
        self.head = torch.nn.Linear(4, 6, bias=False)
        self.head.weight = self.embed.weight
        self.window = torch.nn.Parameter(torch.randn(3, 4))
        self.register_buffer("rows", self.window.detach()[1:])  # overlaps a parameter without being it


def test_tied_weights_are_stored_once_and_stay_tied(tmp_path):
    torch.manual_seed(0)
    model = _Tied()
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model.head(model.embed(torch.tensor([1, 2]))).sum().backward()
    opt.step()
    save_train_state(tmp_path, model, opt, step=1)
    stored = load_file(str(tmp_path / "train_state.safetensors"))
    assert "model.embed.weight" in stored and "model.head.weight" not in stored  # one copy on disk
    tied = json.loads((tmp_path / "train_state.json").read_text())["tied"]
    assert tied == {"model.head.weight": "model.embed.weight"}
    torch.manual_seed(1)
    again = _Tied()
    again_opt = torch.optim.AdamW(again.parameters(), lr=0.1)
    assert load_train_state(tmp_path, again, again_opt) == 1
    torch.testing.assert_close(again.embed.weight, model.embed.weight, rtol=0, atol=0)
    torch.testing.assert_close(again.rows, model.window.detach()[1:], rtol=0, atol=0)
    assert again.head.weight is again.embed.weight  # still one parameter
    assert again_opt.state_dict()["state"].keys() == opt.state_dict()["state"].keys()
