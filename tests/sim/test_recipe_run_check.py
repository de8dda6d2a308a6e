"""The diffusion recipes' run directories: ``check_reach_run`` / ``check_metaworld_run`` agree with what
the trainer records, and a recipe given another run's directory refuses it before making an episode."""

import numpy as np
import pytest

import policylens.sim.metaworld
import policylens.sim.pybullet
from policylens.models.diffusion import diffusion_loop_kwargs, metaworld_config, train_diffusion_policy
from policylens.runs import RunDirError
from policylens.sim import (
    check_metaworld_run,
    check_reach_run,
    metaworld_run_settings,
    reach_run_settings,
    train_metaworld_policy,
    train_reach_policy,
)

REACH = {"episodes": 2, "batch_size": 4, "lr": 5e-4, "seed": 0, "action_noise": 0.02}
MW = {"episodes": 3, "batch_size": 4, "lr": 5e-4, "seed": 1, "action_noise": 0.1}
TASK = "reach-v3"


def _loop(out, steps, *, batch_size, lr, data, overwrite=False):
    return diffusion_loop_kwargs(
        out, steps, batch_size=batch_size, lr=lr, save_every=500, run_settings=data, overwrite=overwrite
    )


class EpisodesMade(Exception):
    """Raised in place of making episodes: the recipe got past its run-directory check."""


def _no_episodes(*args, **kwargs):
    raise EpisodesMade


@pytest.fixture(scope="module")
def reach_run(tmp_path_factory):
    """A 2-step reach recipe run, recorded as ``policylens train diffusion`` records it."""
    out = tmp_path_factory.mktemp("reach_run")
    data = reach_run_settings(action_noise=REACH["action_noise"])
    loop = _loop(out, 2, batch_size=REACH["batch_size"], lr=REACH["lr"], data=data)
    train_reach_policy(REACH["episodes"], 2, REACH["seed"], action_noise=REACH["action_noise"], progress=False, **loop)
    return out


@pytest.fixture(scope="module")
def metaworld_run(tmp_path_factory):
    """What a MetaWorld recipe run records (its trainer, its loop settings, its data record), on random
    episodes of the task's shapes."""
    out = tmp_path_factory.mktemp("mw_run")
    config = metaworld_config(TASK, n_emb=16, n_layer=1)
    rng = np.random.default_rng(0)
    episodes = [{"obs": rng.random((12, config.obs_dim)), "action": rng.random((12, config.action_dim))}] * 3
    data = metaworld_run_settings(TASK, action_noise=MW["action_noise"])
    loop = _loop(out, 1, batch_size=MW["batch_size"], lr=MW["lr"], data=data)
    train_diffusion_policy(episodes, config, steps=1, seed=MW["seed"], progress=False, **loop)
    return out, config


def test_run_settings_name_the_data():
    assert reach_run_settings(action_noise=0.05) == {"task": "reach", "action_noise": 0.05}
    assert metaworld_run_settings(TASK, action_noise=0.1) == {"suite": "metaworld", "task": TASK, "action_noise": 0.1}


def test_reach_the_same_run_resumes_and_an_empty_directory_is_free(reach_run, tmp_path):
    assert check_reach_run(reach_run, **REACH) is True
    assert check_reach_run(tmp_path, **REACH) is False


@pytest.mark.parametrize(
    ("change", "differ"),
    [
        ({"lr": 1e-3}, "train.lr 0.0005 there, 0.001 now"),
        ({"batch_size": 8}, "train.batch_size 4 there, 8 now"),
        ({"seed": 2}, "train.seed 0 there, 2 now"),
        ({"episodes": 5}, "data.episodes 2 there, 5 now"),
        ({"action_noise": 0.0}, "data.action_noise 0.02 there, 0.0 now"),
    ],
)
def test_reach_another_run_is_refused_naming_what_differs(reach_run, change, differ):
    with pytest.raises(RunDirError, match="records another run") as info:
        check_reach_run(reach_run, **{**REACH, **change})
    assert differ in str(info.value) and str(info.value).count(" there, ") == 1


def test_reach_recipe_refuses_another_run_before_any_episode(reach_run, monkeypatch):
    monkeypatch.setattr(policylens.sim.pybullet, "make_training_episodes", _no_episodes)
    noise = 0.05
    loop = _loop(
        reach_run, 3, batch_size=REACH["batch_size"], lr=REACH["lr"], data=reach_run_settings(action_noise=noise)
    )
    with pytest.raises(RunDirError, match="data.action_noise 0.02 there, 0.05 now"):
        train_reach_policy(REACH["episodes"], 3, REACH["seed"], action_noise=noise, **loop)
    with pytest.raises(RunDirError, match="train.seed 0 there, 4 now"):
        train_reach_policy(REACH["episodes"], 3, 4, action_noise=REACH["action_noise"], **loop)
    same = _loop(
        reach_run, 3, batch_size=REACH["batch_size"], lr=REACH["lr"], data=reach_run_settings(action_noise=0.02)
    )
    with pytest.raises(EpisodesMade):  # the same run goes on to make its episodes
        train_reach_policy(REACH["episodes"], 3, REACH["seed"], action_noise=REACH["action_noise"], **same)
    with pytest.raises(EpisodesMade):  # overwrite replaces the run: nothing to refuse
        train_reach_policy(REACH["episodes"], 3, REACH["seed"], action_noise=noise, **{**loop, "overwrite": True})
    with pytest.raises(EpisodesMade):  # no run directory
        train_reach_policy(REACH["episodes"], 3, REACH["seed"], action_noise=noise)


def test_metaworld_the_same_run_resumes(metaworld_run, tmp_path):
    out, config = metaworld_run
    assert check_metaworld_run(out, config, **MW) is True
    assert check_metaworld_run(tmp_path, config, **MW) is False


@pytest.mark.parametrize(
    ("config_change", "change", "differ"),
    [
        ({}, {"lr": 1e-4}, "train.lr 0.0005 there, 0.0001 now"),
        ({}, {"episodes": 2}, "data.episodes 3 there, 2 now"),
        ({}, {"action_noise": 0.2}, "data.action_noise 0.1 there, 0.2 now"),
        ({"n_emb": 32}, {}, "config.n_emb 16 there, 32 now"),
        ({"task": "push-v3"}, {}, "config.task 'reach-v3' there, 'push-v3' now"),
    ],
)
def test_metaworld_another_run_is_refused_naming_what_differs(metaworld_run, config_change, change, differ):
    out, _ = metaworld_run
    config = metaworld_config(config_change.pop("task", TASK), **{"n_emb": 16, "n_layer": 1, **config_change})
    with pytest.raises(RunDirError, match="records another run") as info:
        check_metaworld_run(out, config, **{**MW, **change})
    assert differ in str(info.value)


def test_metaworld_check_needs_a_metaworld_config(tmp_path):
    from policylens.models.diffusion import REACH_CONFIG, DiffusionPolicyConfig

    with pytest.raises(ValueError, match="suite=None; a MetaWorld run needs a metaworld_config"):
        check_metaworld_run(tmp_path, DiffusionPolicyConfig(**REACH_CONFIG), **MW)


def test_metaworld_recipe_refuses_another_run_before_any_episode(metaworld_run, monkeypatch):
    out, config = metaworld_run
    monkeypatch.setattr(policylens.sim.metaworld, "make_training_episodes", _no_episodes)
    data = metaworld_run_settings(TASK, action_noise=MW["action_noise"])
    loop = _loop(out, 2, batch_size=MW["batch_size"], lr=2e-3, data=data)
    with pytest.raises(RunDirError, match="train.lr 0.0005 there, 0.002 now"):
        train_metaworld_policy(TASK, MW["episodes"], 2, seed=MW["seed"], config=config, **loop)
    loop = _loop(out, 2, batch_size=MW["batch_size"], lr=MW["lr"], data=data)
    bigger = metaworld_config(TASK, n_emb=16, n_layer=2)
    with pytest.raises(RunDirError, match="config.n_layer 1 there, 2 now"):
        train_metaworld_policy(TASK, MW["episodes"], 2, seed=MW["seed"], config=bigger, **loop)
    with pytest.raises(EpisodesMade):
        train_metaworld_policy(TASK, MW["episodes"], 2, seed=MW["seed"], config=config, **loop)


def test_episodes_must_be_counted(tmp_path):
    with pytest.raises(ValueError, match="episodes=0"):
        check_reach_run(tmp_path, **{**REACH, "episodes": 0})
