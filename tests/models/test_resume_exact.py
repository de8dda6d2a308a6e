"""An interrupted and resumed run equals the uninterrupted one, bit for bit: ``train_vla`` (with its own
step, a step that draws from numpy's and Python's global generators, and one with its own generator
passed as ``generators=``) and the diffusion trainer (batch generator, dropout). Each run stops on
SIGINT at step 5 (saves there) or crashes at step 5 after the save_every=3 checkpoint (resumes from
step 3), then resumes to step 7."""

import json
import os
import random
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from policylens.models import TinyVLA, TinyVLAConfig, VLATrainConfig, train_vla
from policylens.models._train_vla import vla_step
from policylens.models.diffusion import DiffusionPolicyConfig, train_diffusion_policy
from policylens.models.diffusion._train import diffusion_step
from policylens.runs import TrainingInterrupted
from zoo import vla_episodes

STEPS, STOP, SAVE_EVERY = 7, 5, 3
VLA = {"image_size": 28, "vision_layers": 1, "layers": 1, "max_text_tokens": 8, "chunk_size": 3}
DP = DiffusionPolicyConfig(obs_dim=3, action_dim=2, horizon=8, n_obs_steps=2, n_action_steps=4, n_layer=1, n_emb=16)
DP_KW = {"batch_size": 8, "lr": 1e-3, "warmup_steps": 2, "seed": 0, "progress": False, "save_every": SAVE_EVERY}


class Crash(Exception):
    """A failure without a save (the process dies): the rerun starts from the last save_every checkpoint."""


def stopping(step, how):
    """``step`` that, on its STOP-th call, sends SIGINT (the loop saves after the step) or crashes after it."""
    calls = []

    def wrapped(*args):
        out = step(*args)
        calls.append(1)
        if len(calls) == STOP and how == "sigint":
            os.kill(os.getpid(), signal.SIGINT)
        if len(calls) == STOP and how == "crash":
            raise Crash
        return out

    return wrapped


def saved_step(out):
    return json.loads((out / "train_state.json").read_text())["step"]


def assert_equal_weights(a: dict, b: dict):
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different


def global_draws_step(model, batch, optimizer):
    """A custom step (as retain's): its loss weight comes from numpy's and Python's global generators."""
    weight = 1.0 + float(np.random.rand()) + random.random()
    loss = weight * model.loss(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return {"loss": loss.detach()}


def own_generator_step():
    """A custom step (as retain's anchor batches) with its own numpy generator, passed as ``generators``."""
    rng = np.random.default_rng(5)

    def step(model, batch, optimizer):
        keep = rng.permutation(len(batch["action"]))[:1]  # a random half of the batch
        return vla_step(model, {k: v[keep] for k, v in batch.items()}, optimizer)

    step.generators = {"half": rng}
    return step


def run_vla(out, step, steps=STEPS):
    torch.manual_seed(0)  # the same initial weights; a resumed run overwrites them from the state
    model = TinyVLA(TinyVLAConfig(**VLA))
    config = VLATrainConfig(steps=steps, batch_size=2, warmup=2, save_every=SAVE_EVERY)
    gens = getattr(step, "generators", None)
    losses = train_vla(model, vla_episodes(t=6), config, out, step=step, generators=gens)
    return model, losses


STEP_FNS = {
    "vla_step": lambda: vla_step,
    "global_draws": lambda: global_draws_step,
    "own_generator": own_generator_step,
}


@pytest.mark.parametrize("make_step", STEP_FNS.values(), ids=STEP_FNS.keys())
@pytest.mark.parametrize("how", ["sigint", "crash"])
def test_train_vla_interrupted_and_resumed_equals_uninterrupted(tmp_path, make_step, how):
    np.random.seed(0), random.seed(0)  # the step's global generators, seeded as its script would
    whole, whole_losses = run_vla(tmp_path / "whole", make_step())
    np.random.seed(0), random.seed(0)
    step = make_step()
    cut = stopping(step, how)
    cut.generators = getattr(step, "generators", None)
    with pytest.raises(TrainingInterrupted if how == "sigint" else Crash):
        run_vla(tmp_path / "cut", cut)
    resumed_from = saved_step(tmp_path / "cut")
    assert resumed_from == (STOP if how == "sigint" else SAVE_EVERY)
    np.random.seed(2), random.seed(2)  # the rerun's process seeds its own way; the state restores them
    resumed, losses = run_vla(tmp_path / "cut", make_step())
    assert saved_step(tmp_path / "cut") == STEPS
    assert losses == whole_losses[resumed_from:]
    assert_equal_weights(resumed.state_dict(), whole.state_dict())
    assert_equal_weights(
        load_file(str(tmp_path / "cut" / "train_state.safetensors")),
        load_file(str(tmp_path / "whole" / "train_state.safetensors")),
    )  # optimiser moments and random states too


def dp_episodes(n=3, t=12):
    rng = np.random.default_rng(0)
    return [{"obs": rng.normal(size=(t, 3)), "action": rng.normal(size=(t, 2))} for _ in range(n)]


@pytest.mark.parametrize("how", ["sigint", "crash"])
def test_diffusion_interrupted_and_resumed_equals_uninterrupted(tmp_path, how):
    assert DP.p_drop_attn > 0  # dropout draws from torch's global generator
    whole = train_diffusion_policy(dp_episodes(), DP, steps=STEPS, out_dir=tmp_path / "whole", **DP_KW)
    with pytest.raises(TrainingInterrupted if how == "sigint" else Crash):
        train_diffusion_policy(
            dp_episodes(), DP, steps=STEPS, out_dir=tmp_path / "cut", step=stopping(diffusion_step, how), **DP_KW
        )
    assert saved_step(tmp_path / "cut") == (STOP if how == "sigint" else SAVE_EVERY)
    resumed = train_diffusion_policy(dp_episodes(), DP, steps=STEPS, out_dir=tmp_path / "cut", **DP_KW)
    assert_equal_weights(resumed.state_dict(), whole.state_dict())  # the EMA policy
    assert_equal_weights(
        load_file(str(tmp_path / "cut" / "train_state.safetensors")),
        load_file(str(tmp_path / "whole" / "train_state.safetensors")),
    )  # the trained policy, optimiser and random states


def test_a_step_generator_may_not_take_the_loops_name(tmp_path):
    with pytest.raises(ValueError, match=r"\['batches'\] name the loop's own generators"):
        train_diffusion_policy(
            dp_episodes(), DP, steps=1, out_dir=tmp_path, generators={"batches": torch.Generator()}, **DP_KW
        )
