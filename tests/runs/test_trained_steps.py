"""``trained_steps``: the step a run directory's training state holds; none is 0, a damaged record is named."""

import json

import pytest
import torch

from policylens.runs import save_train_state, trained_steps


def test_the_step_save_train_state_wrote(tmp_path):
    model = torch.nn.Linear(2, 2)
    save_train_state(tmp_path, model, torch.optim.SGD(model.parameters(), lr=0.1), 7)
    assert trained_steps(tmp_path) == 7
    assert trained_steps(str(tmp_path)) == 7
    save_train_state(tmp_path, model, torch.optim.SGD(model.parameters(), lr=0.1), 12)  # a resumed run went on
    assert trained_steps(tmp_path) == 12


def test_no_training_state_is_zero_steps(tmp_path):
    assert trained_steps(tmp_path) == 0
    assert trained_steps(tmp_path / "never_made") == 0
    (tmp_path / "train_state.json").mkdir()  # not a file: no state either
    assert trained_steps(tmp_path) == 0


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"step": 3', "not valid JSON"),
        ("[3]", "holds a JSON list"),
        ('{"param_groups": []}', "field 'step'=None"),
        ('{"step": "3"}', "field 'step'='3'"),
        ('{"step": -1}', "field 'step'=-1"),
        ('{"step": true}', "field 'step'=True"),
    ],
)
def test_a_damaged_record_names_the_file(tmp_path, text, match):
    (tmp_path / "train_state.json").write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        trained_steps(tmp_path)
    assert str(tmp_path / "train_state.json") in str(info.value)


def test_reads_the_record_not_the_tensors(tmp_path):
    (tmp_path / "train_state.json").write_text(json.dumps({"step": 41, "param_groups": [], "extra": {}}))
    assert trained_steps(tmp_path) == 41
