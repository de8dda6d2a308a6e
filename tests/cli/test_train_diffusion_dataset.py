"""``train diffusion --dataset``: the reach diffusion policy learns from LeRobot / DROID episodes that
policylens wrote (their state and actions, without the simulator), a dataset of other sizes or bad
values is refused in one line before any training, ``--fit-dataset`` sizes the policy from a dataset of
other sizes instead, and 2 torchrun ranks train as one process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import policylens.data
import policylens.models.diffusion._dataset
import policylens.sim
import policylens.sim.pybullet
from policylens.cli.main import app
from policylens.data.lerobot import LeRobotWriter
from policylens.models.diffusion import (
    REACH_CONFIG,
    DiffusionPolicyConfig,
    TinyDiffusionPolicy,
    dataset_config,
    dataset_episodes,
)
from policylens.sim.pybullet import generate_episodes, make_training_episodes

runner = CliRunner()
WORKER = Path(__file__).with_name("_diffusion_dataset_worker.py")
# 2 ranks against one process: measured 1.0e-6 (attention key biases, whose gradient is float noise that Adam
# scales up); the weights moved 2.5e-4 from their initial values in the 4 steps
TOL = 1e-5
STATE30 = (
    "episode 0 ({d}/state30/episode_000000): 'observation.state' is 30-D but the policy reads 33-D "
    "(config.obs_dim=33); train on a dataset with 33-D obs values (record one with `policylens sim generate --task "
    "reach`, or size the policy from it with --fit-dataset)"
)
ACTION6 = "episode 0 ({d}/action6/episode_000000): 'action' is 6-D but the policy reads 7-D (config.action_dim=7)"
CAMERA_MAP = "--camera-map side=hand_camera: the diffusion policies read a state vector, no camera"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("datasets")
    for fmt in ("lerobot", "droid"):
        generate_episodes("reach", 2, root / fmt, seed=0, fmt=fmt, image_size=28, progress=False)
    expert = make_training_episodes("reach", 2, seed=0, progress=False)  # the same episodes, in memory
    bad = {  # a state-only LeRobot dataset per defect: (the change, the episodes it is made in)
        "state30": (lambda ep: {"state": ep["obs"][:, :30]}, (0, 1)),
        "action6": (lambda ep: {"actions": ep["action"][:, :6]}, (0, 1)),
        "nan": (lambda ep: {"state": np.where(np.arange(len(ep["obs"]))[:, None] == 3, np.nan, ep["obs"])}, (1,)),
    }
    for name, (change, where) in bad.items():
        writer = LeRobotWriter(root / name, fps=15, masks=False)
        for i, ep in enumerate(expert):
            rec = {"instruction": ep["instruction"], "success": True, "seed": i, "scene": {}, "images": {},
                   "actions": ep["action"], "proprio": ep["proprio"], "state": ep["obs"], "intrinsics": {},
                   "extrinsics": {}}  # fmt: skip
            writer.add_episode({**rec, **(change(ep) if i in where else {})})
        writer.finalize()
    return root, expert


@pytest.fixture
def no_simulator(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the simulator recorded episodes although the data came from disk")

    monkeypatch.setattr(policylens.sim.pybullet, "make_training_episodes", refuse)
    monkeypatch.setattr(policylens.sim, "train_reach_policy", refuse)


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("fmt", ["lerobot", "droid"])
def test_the_episodes_on_disk_are_the_experts_state_and_actions(data, fmt):
    root, expert = data
    got = dataset_episodes(DiffusionPolicyConfig(**REACH_CONFIG), f"{fmt}:{root / fmt}")
    assert len(got) == len(expert) == 2
    for g, e in zip(got, expert, strict=True):
        assert g["obs"].dtype == np.float32 and g["obs"].shape == (len(e["obs"]), 33)
        assert np.array_equal(g["obs"], e["obs"]) and np.array_equal(g["action"], e["action"])


def _eval_loss(policy: TinyDiffusionPolicy, episodes: list[dict]) -> float:
    """Epsilon MSE over every window (plain loop, edge steps repeated) at fixed noise and timesteps."""
    c, g = policy.config, torch.Generator().manual_seed(1)
    obs_w, act_w = [], []
    for ep in episodes:
        T = len(ep["obs"])
        for t in range(T):  # t: the window's current observation
            steps = [min(max(s, 0), T - 1) for s in range(t - c.n_obs_steps + 1, t - c.n_obs_steps + 1 + c.horizon)]
            obs_w.append(ep["obs"][steps[: c.n_obs_steps]])
            act_w.append(ep["action"][steps])
    obs = policy.obs_normalizer.normalize(torch.from_numpy(np.stack(obs_w)).float())
    act = policy.action_normalizer.normalize(torch.from_numpy(np.stack(act_w)).float())
    noise = torch.randn(act.shape, generator=g)
    t = torch.randint(0, c.num_train_timesteps, (len(act),), generator=g)
    with torch.no_grad():
        pred = policy.model(policy.ddpm.add_noise(act, noise, t), t, obs)
    return float((pred - noise).square().mean())


def _loss_before_and_after(trained: TinyDiffusionPolicy, episodes: list[dict]) -> tuple[float, float]:
    """:func:`_eval_loss` of the trainer's initial weights (seed 0, with the trained normalisers) and of ``trained``."""
    torch.manual_seed(0)
    initial = TinyDiffusionPolicy(trained.config)
    initial.obs_normalizer.load_state_dict(trained.obs_normalizer.state_dict())
    initial.action_normalizer.load_state_dict(trained.action_normalizer.state_dict())
    return _eval_loss(initial.eval(), episodes), _eval_loss(trained, episodes)


@pytest.mark.parametrize("fmt", ["lerobot", "droid"])
def test_the_reach_policy_learns_from_a_dataset(data, tmp_path, no_simulator, fmt):
    root, expert = data
    out, spec = tmp_path / "run", f"{fmt}:{root / fmt}"
    args = ["train", "diffusion", "--dataset", spec, "--out", str(out), "--steps", "40", "--batch-size", "16"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"trained on {spec} to step 40; checkpoint in {out}" in result.output
    run = json.loads((out / "run.json").read_text())["settings"]
    assert run["data"]["dataset"] == spec and run["data"]["episodes"] == 2 and run["config"]["obs_dim"] == 33
    trained = TinyDiffusionPolicy.from_pretrained(out)
    before, after = _loss_before_and_after(trained, expert)
    assert after < 0.5 * before, (before, after)


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--dataset", "lerobot:{d}/state30"], STATE30),
        (["--dataset", "lerobot:{d}/action6"], ACTION6),
        (
            ["--dataset", "lerobot:{d}/nan"],
            "episode 1 ({d}/nan/episode_000001): 'observation.state' is not finite at step 3; fix or drop the episode",
        ),
        (["--dataset", "lerobot:{d}/lerobot", "--episodes", "9"], "holds 2 episodes; 9 were asked for"),
        (["--dataset", "lerobot:{d}/lerobot", "--camera-map", "side=hand_camera"], CAMERA_MAP),
        (["--dataset", "lerobot:{d}/lerobot", "--action-noise", "0.1"], "the noise is for simulated episodes"),
        (["--dataset", "lerobot:{d}/lerobot", "--suite", "metaworld"], "--suite metaworld --dataset needs --task"),
        (["--dataset", "lerobot:{d}/nowhere"], "{d}/nowhere"),
        (["--fit-dataset"], "--fit-dataset sizes the policy from --dataset; pass --dataset"),
        (["--dataset", "lerobot:{d}/state30", "--fit-dataset", "--suite", "metaworld"], "records no simulator task"),
    ],
)
def test_bad_data_is_refused_in_one_line_before_training(data, tmp_path, no_simulator, extra, says):
    root, _ = data
    args = ["train", "diffusion", "--out", str(tmp_path / "run"), "--steps", "2", "--batch-size", "4"]
    result = runner.invoke(app, [*args, *[a.replace("{d}", str(root)) for a in extra]])
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and says.replace("{d}", str(root)) in errors[0], result.output
    assert not (tmp_path / "run").exists()


def test_dataset_config_takes_the_first_episodes_widths_and_the_reach_layout(data):
    root, _ = data
    config = dataset_config(f"lerobot:{root / 'state30'}", n_emb=32, n_layer=2)
    assert (config.obs_dim, config.action_dim, config.n_emb, config.n_layer) == (30, 7, 32, 2)
    assert (config.horizon, config.n_obs_steps, config.n_action_steps) == (16, 2, 8)
    assert config.suite is None and config.task is None
    assert dataset_config(f"lerobot:{root / 'action6'}").action_dim == 6


def test_fit_dataset_trains_a_policy_of_the_datas_sizes(data, tmp_path, no_simulator, monkeypatch):
    root, expert = data
    out, spec = tmp_path / "run", f"lerobot:{root / 'state30'}"
    opened, open_episodes = [], policylens.data.open_episodes
    monkeypatch.setattr(policylens.data, "open_episodes", lambda s: opened.append(s) or open_episodes(s))
    monkeypatch.setattr(policylens.models.diffusion._dataset, "open_episodes", policylens.data.open_episodes)
    args = ["train", "diffusion", "--dataset", spec, "--fit-dataset", "--out", str(out), "--n-emb", "48"]
    result = runner.invoke(app, [*args, "--n-layer", "3", "--steps", "40", "--batch-size", "16"])
    assert result.exit_code == 0, result.output
    assert opened == [spec]  # sized and checked from one opening of the dataset
    run = json.loads((out / "run.json").read_text())["settings"]
    assert run["data"]["dataset"] == spec and run["data"]["fit_dataset"] and run["data"]["episodes"] == 2
    trained = TinyDiffusionPolicy.from_pretrained(out)
    assert (trained.config.obs_dim, trained.config.action_dim, trained.config.n_emb) == (30, 7, 48)
    assert "suite" not in trained.config.to_dict()
    narrow = [{"obs": ep["obs"][:, :30], "action": ep["action"]} for ep in expert]
    before, after = _loss_before_and_after(trained, narrow)
    assert after < 0.5 * before, (before, after)
    obs = torch.from_numpy(narrow[0]["obs"][None, :2]).float()
    assert trained.predict_action(obs, generator=torch.Generator().manual_seed(0)).shape == (1, 16, 7)


def test_two_torchrun_ranks_train_on_a_dataset_as_one_process(data, tmp_path):
    root, _ = data
    spec, env = f"lerobot:{root / 'lerobot'}", {**os.environ, "OMP_NUM_THREADS": "1", "POLICYLENS_DIST_TIMEOUT": "60"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    runs = {
        "ranks": [*torchrun, str(WORKER), spec, str(tmp_path / "ranks")],
        "one": [sys.executable, str(WORKER), spec, str(tmp_path / "one")],
    }
    for cmd in runs.values():
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
        assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
        assert run.stdout.count("trained on") == 1 and run.stdout.count("torch threads: 1") == 1, run.stdout
    for name in ("train_state", "model"):  # the weights trained, then the EMA checkpoint rank 0 wrote
        one, ranks = (load_file(str(tmp_path / n / f"{name}.safetensors")) for n in ("one", "ranks"))
        floats = [k for k in one if one[k].is_floating_point()]
        assert one.keys() == ranks.keys() and any(k.startswith("model.") for k in floats)
        assert max(float((one[k].double() - ranks[k].double()).abs().max()) for k in floats) < TOL, name
    torch.manual_seed(0)  # the initial weights: training moved them well past TOL
    initial = TinyDiffusionPolicy(DiffusionPolicyConfig(**REACH_CONFIG)).model.state_dict()
    assert max(float((one[f"model.{k}"] - v).abs().max()) for k, v in initial.items()) > 10 * TOL
