"""Checkpoints record their suite and task; the evaluator refuses another task; shipped names load."""

import json

import pytest

from policylens.models import list_policy_names, load_policy
from policylens.models.diffusion import DiffusionPolicyConfig, TinyDiffusionPolicy, metaworld_config
from policylens.models.diffusion._metaworld import METAWORLD_ASSETS
from policylens.sim.metaworld import check_policy_task, resolve_policy


def test_config_records_suite_and_task_and_older_configs_stay_the_same(tmp_path):
    config = metaworld_config("pick-place-v3", n_emb=16, n_layer=1)
    TinyDiffusionPolicy(config).save_pretrained(tmp_path / "mw")
    saved = json.loads((tmp_path / "mw" / "config.json").read_text())
    assert saved["suite"] == "metaworld" and saved["task"] == "pick-place-v3"
    assert load_policy(tmp_path / "mw").config == config
    assert "suite" not in DiffusionPolicyConfig().to_dict() and "task" not in DiffusionPolicyConfig().to_dict()
    with pytest.raises(ValueError, match=r"suite='gym': expected one of \(None, 'pybullet', 'metaworld'\)"):
        DiffusionPolicyConfig(suite="gym")


def test_another_task_or_suite_is_refused():
    config = metaworld_config("pick-place-v3")
    check_policy_task(config, "pick-place-v3", "ckpt")
    with pytest.raises(ValueError, match=r"task='push-v3': policy ckpt was trained on MetaWorld task 'pick-place-v3'"):
        check_policy_task(config, "push-v3", "ckpt")
    with pytest.raises(ValueError, match=r"trained on the pybullet simulator, not MetaWorld; pass --suite pybullet"):
        check_policy_task(DiffusionPolicyConfig(obs_dim=33, suite="pybullet"), "push-v3", "ckpt")


def test_policy_locations(tmp_path):
    assert resolve_policy("metaworld", "push-v3") == "metaworld/push-v3"
    (tmp_path / "push-v3").mkdir()
    (tmp_path / "push-v3" / "config.json").write_text("{}")
    assert resolve_policy(str(tmp_path), "push-v3") == str(tmp_path / "push-v3")
    assert resolve_policy(str(tmp_path), "reach-v3") == str(tmp_path)


@pytest.mark.parametrize("task", sorted(p.parent.name for p in METAWORLD_ASSETS.glob("*/config.json")))
def test_shipped_policies_load_by_name(task):
    assert f"metaworld/{task}" in list_policy_names()
    policy = load_policy(f"metaworld/{task}")
    assert policy.config.suite == "metaworld" and policy.config.task == task
    assert (METAWORLD_ASSETS / task / "model.safetensors").stat().st_size < 1_600_000
