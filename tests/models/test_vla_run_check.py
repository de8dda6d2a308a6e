"""TinyVLA runs before their episodes exist: ``check_vla_run`` refuses another run's directory on the
settings known up front, ``load_tiny_vla_init`` takes only a TinyVLA checkpoint of the asked settings."""

import pytest
import torch

from policylens.models import (
    TinyVLA,
    TinyVLAConfig,
    VLATrainConfig,
    check_vla_run,
    load_tiny_vla_init,
    save_policy,
    train_vla,
)
from policylens.runs import RunDirError
from zoo import tiny_diffusion_policy, vla_episodes

CFG = {"image_size": 28, "vision_layers": 1, "layers": 1, "max_text_tokens": 8, "chunk_size": 3}
DATA = {"task": "reach", "action_noise": 0.02}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished 2-step run on 2 episodes, recorded with ``DATA``."""
    out = tmp_path_factory.mktemp("vla_run")
    torch.manual_seed(0)
    model = TinyVLA(TinyVLAConfig(**CFG))
    train_vla(model, vla_episodes(), VLATrainConfig(steps=2, batch_size=2), out, run_settings=DATA)
    return out


def _model(**over):
    return TinyVLA(TinyVLAConfig(**{**CFG, **over}))


def test_a_directory_without_a_run_is_free(tmp_path):
    assert check_vla_run(tmp_path / "new", _model(), VLATrainConfig(), episodes=2, data=DATA) is False
    assert check_vla_run(tmp_path, _model(), VLATrainConfig(), episodes=2) is False


def test_the_same_run_resumes_whatever_its_steps(trained):
    for steps in (2, 50):  # a rerun may extend a run
        config = VLATrainConfig(steps=steps, batch_size=2, save_every=7)
        assert check_vla_run(trained, _model(), config, episodes=2, data=DATA) is True


@pytest.mark.parametrize(
    ("model", "config", "episodes", "data", "differ"),
    [
        ({}, {"lr": 1e-3}, 2, DATA, "train.lr 0.0003 there, 0.001 now"),
        ({}, {"seed": 1}, 2, DATA, "train.seed 0 there, 1 now"),
        ({}, {"fit_normalization": False}, 2, DATA, "train.fit_normalization True there, False now"),
        ({}, {}, 3, DATA, "data.episodes 2 there, 3 now"),
        ({}, {}, 2, {**DATA, "task": "put_in_tray"}, "data.task 'reach' there, 'put_in_tray' now"),
        ({}, {}, 2, {**DATA, "init": "base"}, "data.init unset there, 'base' now"),
        ({"image_size": 56}, {}, 2, DATA, "model.image_size 28 there, 56 now"),
        ({"use_state": False}, {}, 2, DATA, "model.use_state True there, False now"),
    ],
)
def test_another_run_is_refused_naming_what_differs(trained, model, config, episodes, data, differ):
    config = VLATrainConfig(**{"steps": 2, "batch_size": 2, **config})
    with pytest.raises(RunDirError, match="records another run") as info:
        check_vla_run(trained, _model(**model), config, episodes=episodes, data=data)
    assert differ in str(info.value) and "--overwrite" in str(info.value)
    assert str(info.value).count(" there, ") == 1  # only what differs is named


def test_episodes_must_be_counted(tmp_path):
    with pytest.raises(ValueError, match="episodes=0"):
        check_vla_run(tmp_path, _model(), VLATrainConfig(), episodes=0, data=DATA)


def test_init_loads_a_tiny_vla_of_the_asked_settings(tmp_path):
    torch.manual_seed(3)
    saved = _model(use_state=False)
    save_policy(saved, tmp_path / "base")
    model = load_tiny_vla_init(tmp_path / "base", image_size=28, use_state=False)
    assert isinstance(model, TinyVLA) and model is not saved
    want, got = saved.state_dict(), model.state_dict()
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)


@pytest.mark.parametrize(
    ("image_size", "use_state", "asked"),
    [(56, False, "{'image_size': 56, 'use_state': False}"), (28, True, "{'image_size': 28, 'use_state': True}")],
)
def test_init_refuses_other_settings_naming_both(tmp_path, image_size, use_state, asked):
    save_policy(_model(use_state=False), tmp_path / "base")
    with pytest.raises(ValueError, match="pass its values") as info:
        load_tiny_vla_init(tmp_path / "base", image_size=image_size, use_state=use_state)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'base'}: ")
    assert "has {'image_size': 28, 'use_state': False}" in message and asked in message


def test_init_refuses_another_policy_type(tmp_path):
    tiny_diffusion_policy().save_pretrained(tmp_path / "dp")
    with pytest.raises(ValueError, match="a TinyDiffusionPolicy checkpoint; fine-tuning needs a TinyVLA one") as info:
        load_tiny_vla_init(tmp_path / "dp", image_size=28, use_state=True)
    assert str(info.value).startswith(f"{tmp_path / 'dp'}: ")


def test_init_without_a_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json does not exist"):
        load_tiny_vla_init(tmp_path / "none", image_size=28, use_state=True)
