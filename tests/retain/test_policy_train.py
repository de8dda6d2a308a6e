"""``policy_train`` on a researcher's own policies (the LeRobot SmolVLA stand-in, transformers' pi0 /
pi0.5): ``training_loss`` equals a float64 reference built from the policy's velocity and the dataset's
normalisation; L_ret is 0 at step 0; a few steps lower L_act on a fixed batch; a resumed run is the
uninterrupted one; 2 torchrun ranks are one process within TOL; replay by fraction puts round(F·B)
replay rows in every batch."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import _own_policies as op
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import policylens.retain._train as rt
from policylens.data import dataset_training_episodes
from policylens.models import mixed_rows
from policylens.retain import PolicyTrainConfig, RetentionConfig, check_trainable, policy_train
from policylens.runs import TrainingInterrupted

TOL = 1e-4  # 2 ranks vs 1 after 3 steps: float rounding; measured 1.6e-6 on the shared 2-core CPU


@pytest.fixture(scope="module")
def data(tmp_path_factory, request):
    root = tmp_path_factory.mktemp("own_policy")
    op.reach_dataset(root / "reach")
    op.reach_dataset(root / "tray", task="put_in_tray", seed=3)
    mp = pytest.MonkeyPatch()
    op.bridge_cache(op.smolvla(), f"lerobot:{root / 'reach'}", root / "bridge", op.SMOLVLA_MAP, mp)
    return root


def _fixed(model, eps, n=2, seed=5):
    """A batch of the first ``n`` steps with fixed noise / time, and the raw actions."""
    ep, chunk = eps[0], model.config.chunk_size
    idx = [np.minimum(np.arange(t, t + chunk), len(ep["action"]) - 1) for t in range(n)]
    raw = np.stack([ep["action"][i] for i in idx]).astype(np.float64)  # (n, H, A)
    images = {c: torch.as_tensor(np.stack([ep["images"][c][t] for t in range(n)])) for c in model.config.cameras}
    batch = model.make_batch(images, [ep["instruction"]] * n, torch.as_tensor(ep["state"][:n]),
                             actions=torch.as_tensor(raw).float())  # fmt: skip
    batch.update(model.training_noise(n, torch.Generator().manual_seed(seed), np.random.default_rng(seed)))
    return batch, raw


def test_smolvla_training_loss_is_the_flow_loss_on_normalised_actions(data):
    model = op.smolvla()
    eps = dataset_training_episodes(model, f"lerobot:{data / 'reach'}", op.SMOLVLA_MAP)
    batch, raw = _fixed(model, eps)
    seen = []
    hook = model.policy.model.action_out_proj.register_forward_hook(lambda _m, _a, out: seen.append(out))
    with torch.no_grad():
        loss = model.training_loss(batch)
    hook.remove()
    actions = (raw - op.ACTION_MEAN) / op.ACTION_STD  # the pre-processor's normalisation, in float64
    noise, v = batch["noise"].double(), seen[0].double()
    want = ((noise - actions - v) ** 2).mean()
    assert abs(float(loss) - float(want)) < 1e-5 * float(want)
    t = batch["time"].double()
    assert float(t.min()) >= 0.001 and float(t.max()) <= 1.0


@pytest.mark.parametrize("variant", ["pi0", "pi05"])
def test_native_pi_training_loss_is_its_flow_loss_on_processor_normalised_actions(data, variant):
    model = op.native_pi(variant)
    eps = dataset_training_episodes(model, f"lerobot:{data / 'reach'}", op.PI_MAP)
    batch, raw = _fixed(model, eps)
    with torch.no_grad():
        loss = model.training_loss(batch)
        actions = np.zeros((*raw.shape[:2], model.noise_shape[1]))  # padded to max_action_dim
        actions[..., :7] = (raw - op.ACTION_MEAN) / (op.ACTION_STD + 1e-8)
        actions = torch.as_tensor(actions)
        t, noise = batch["time"].double()[:, None, None], batch["noise"].double()
        x_t = t * noise + (1 - t) * actions
        v = model.model(**model._inputs(batch), noise=x_t.float(), timestep=batch["time"]).logits.double()
    want = ((noise - actions - v) ** 2).mean()
    assert abs(float(loss) - float(want)) < 1e-5 * float(want)


def test_retention_starts_at_zero_and_training_lowers_the_task_loss(data, tmp_path):
    model = op.smolvla()
    eps = dataset_training_episodes(model, f"lerobot:{data / 'reach'}", op.SMOLVLA_MAP)
    batch, _ = _fixed(model, eps, n=4)
    with torch.no_grad():
        before = float(model.training_loss(batch))
    config = PolicyTrainConfig(steps=6, batch_size=4, anchor_batch_size=4, lr=3e-3, warmup=1, log_every=1)
    summary = policy_train(model, eps, tmp_path / "run", config, RetentionConfig(), anchors=data / "bridge",
                           progress=False)  # fmt: skip
    series = json.loads((tmp_path / "run" / "train_state.json").read_text())["extra"]["series"]
    assert series["loss_ret"][0] < 1e-10 and summary["steps_run"] == 6
    with torch.no_grad():
        after = float(model.training_loss(batch))
    assert after < 0.9 * before, (before, after)
    reloaded = load_file(str(tmp_path / "run" / "policy" / "model.safetensors"))
    torch.testing.assert_close(reloaded["model.action_out_proj.weight"], model.policy.model.action_out_proj.weight)


def test_native_pi_retention_starts_at_zero(data, tmp_path, monkeypatch):
    model = op.native_pi("pi0")
    cache = op.bridge_cache(model, f"lerobot:{data / 'reach'}", tmp_path / "bridge", op.PI_MAP, monkeypatch)
    eps = dataset_training_episodes(model, f"lerobot:{data / 'reach'}", op.PI_MAP)
    config = PolicyTrainConfig(steps=2, batch_size=2, anchor_batch_size=2)
    policy_train(model, eps, tmp_path / "run", config, anchors=cache, progress=False)
    series = json.loads((tmp_path / "run" / "train_state.json").read_text())["extra"]["series"]
    assert series["loss_ret"][0] < 1e-10 and np.isfinite(series["loss_act"]).all()


def _weights(out: Path) -> dict:
    state = load_file(str(out / "train_state.safetensors"))
    return {k: v for k, v in state.items() if k.startswith("model.")}


def test_a_resumed_run_is_the_uninterrupted_one(data, tmp_path, monkeypatch):
    def run(out, steps):
        model = op.smolvla()
        eps = dataset_training_episodes(model, f"lerobot:{data / 'reach'}", op.SMOLVLA_MAP)
        config = PolicyTrainConfig(steps=steps, batch_size=2, anchor_batch_size=2, lr=1e-3, warmup=1, save_every=2)
        return policy_train(model, eps, out, config, RetentionConfig(epsilon=0.0, lam_lr=1e3),
                            anchors=data / "bridge", progress=False)  # fmt: skip

    whole = run(tmp_path / "whole", 4)
    real, calls = rt._RetentionStep.__call__, []

    def call(self, *args):  # SIGINT during step 2: the loop saves after it and stops
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return real(self, *args)

    monkeypatch.setattr(rt._RetentionStep, "__call__", call)
    with pytest.raises(TrainingInterrupted):
        run(tmp_path / "cut", 4)
    monkeypatch.undo()
    assert json.loads((tmp_path / "cut" / "retain.json").read_text())["steps_run"] == 2
    resumed = run(tmp_path / "cut", 4)
    assert resumed["lambda_history"] == whole["lambda_history"] and resumed["final_loss_act"] == whole["final_loss_act"]
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert run(tmp_path / "cut", 4)["steps_run"] == 4  # a finished run reports itself


def test_two_torchrun_ranks_train_as_one_process(data, tmp_path):
    from _policy_dp_worker import run

    here = Path(__file__).parent
    dataset = f"lerobot:{data / 'reach'}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--log-dir",
           str(tmp_path / "logs"), "--redirects", "3", str(here / "_policy_dp_worker.py"), dataset,
           str(data / "bridge"), str(tmp_path / "two")]  # fmt: skip
    path = os.pathsep.join([str(here), str(here.parent), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "POLICYLENS_DIST_TIMEOUT": "60", "PYTHONPATH": path}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, check=False)
    logs = "".join(p.read_text()[-2000:] for p in (tmp_path / "logs").rglob("stderr.log"))
    assert proc.returncode == 0, proc.stderr[-2000:] + logs
    one = run(dataset, data / "bridge", tmp_path / "one")
    two = json.loads((tmp_path / "two" / "retain.json").read_text())
    assert two["steps_run"] == one["steps_run"] == 3
    np.testing.assert_allclose(two["lambda_history"], one["lambda_history"], rtol=1e-3, atol=1e-6)
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert max(float((a[k].double() - b[k].double()).abs().max()) for k in a) < TOL


def test_replay_fraction_puts_its_share_of_rows_in_every_batch(data, tmp_path):
    rng = np.random.default_rng(0)
    for _ in range(20):
        rows = mixed_rows(rng, n_task=8, n_replay=5, batch_size=8, replay_rows=2)
        assert (rows >= 8).sum() == 2 and rows.max() < 13
    model = op.smolvla()
    eps = dataset_training_episodes(model, f"lerobot:{data / 'reach'}", op.SMOLVLA_MAP)
    replay = dataset_training_episodes(model, f"lerobot:{data / 'tray'}", op.SMOLVLA_MAP)
    assert eps[0]["instruction"] != replay[0]["instruction"]
    seen, make = [], model.make_batch
    model.make_batch = lambda images, text, state, actions=None: (
        seen.append(list(text)) or make(images, text, state, actions=actions)
    )
    config = PolicyTrainConfig(steps=3, batch_size=4, lr=1e-4, replay_fraction=0.25)
    summary = policy_train(model, eps, tmp_path / "run", config, RetentionConfig(method="plain"), replay=replay,
                           progress=False)  # fmt: skip
    batches = seen[1:]  # the first is the check before training
    assert summary["steps_run"] == 3 and len(batches) == 3
    assert all(sum(t == replay[0]["instruction"] for t in texts) == 1 for texts in batches)


def test_bad_inputs_fail_before_training(data, tmp_path):
    with pytest.raises(ValueError, match="has no .*training_loss.*TinyVLA: retain_train"):
        check_trainable(torch.nn.Linear(2, 2), "--policy x")
    model = op.smolvla()
    eps = dataset_training_episodes(model, f"lerobot:{data / 'reach'}", op.SMOLVLA_MAP)
    with pytest.raises(ValueError, match="replay_fraction=0.25 needs replay episodes"):
        policy_train(
            model, eps, tmp_path / "a", PolicyTrainConfig(replay_fraction=0.25), RetentionConfig(method="plain")
        )
    with pytest.raises(ValueError, match="'craft' needs anchors="):
        policy_train(model, eps, tmp_path / "b", PolicyTrainConfig(), RetentionConfig())
    model.preprocessor = op.byte_preprocessor(model.policy)  # drops the actions
    with pytest.raises(ValueError, match="cannot make a training batch.*dropped 'action'"):
        policy_train(model, eps, tmp_path / "c", PolicyTrainConfig(), RetentionConfig(method="plain"))
    assert not (tmp_path / "c").exists()
