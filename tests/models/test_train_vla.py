"""TinyVLA training: a smoke run on synthetic episodes, resume from saved state, signals, run settings,
the step seam."""

import json
import os
import signal

import numpy as np
import pytest
import torch

from policylens.models import TinyVLA, TinyVLAConfig, VLATrainConfig, load_policy, load_train_state, train_vla
from policylens.models._train_vla import vla_step
from policylens.runs import TrainingInterrupted
from zoo import vla_episodes

CFG = {"image_size": 28, "vision_layers": 1, "layers": 1, "max_text_tokens": 8, "chunk_size": 3}


def test_smoke_training_writes_checkpoint_and_normalization(tmp_path):
    torch.manual_seed(0)
    model = TinyVLA(TinyVLAConfig(**CFG))
    eps = vla_episodes()
    losses = train_vla(model, eps, VLATrainConfig(steps=3, batch_size=4, save_every=2), tmp_path)
    assert len(losses) == 3
    assert all(np.isfinite(losses))
    all_actions = np.concatenate([e["action"] for e in eps])
    np.testing.assert_allclose(model.action_mean.numpy(), all_actions.mean(0), rtol=1e-5)
    loaded = load_policy(tmp_path)
    torch.testing.assert_close(loaded.action_mean, model.action_mean)
    assert json.loads((tmp_path / "train_state.json").read_text())["step"] == 3  # saved at the end too
    assert list((tmp_path / "tb").iterdir())
    assert json.loads((tmp_path / "run.json").read_text())["settings"]["train"]["lr"] == 3e-4


def test_resume_continues_from_saved_step(tmp_path):
    torch.manual_seed(0)
    model = TinyVLA(TinyVLAConfig(**CFG))
    train_vla(model, vla_episodes(), VLATrainConfig(steps=2, batch_size=2, save_every=1), tmp_path)
    resumed = TinyVLA(TinyVLAConfig(**CFG))
    losses = train_vla(resumed, vla_episodes(), VLATrainConfig(steps=5, batch_size=2, save_every=1), tmp_path)
    assert len(losses) == 3  # steps 2, 3, 4 only
    assert json.loads((tmp_path / "train_state.json").read_text())["step"] == 5


def test_missing_episode_field_is_named(tmp_path):
    eps = vla_episodes()
    del eps[1]["instruction"]
    with pytest.raises(KeyError, match="episode 1 lacks field 'instruction'"):
        train_vla(TinyVLA(TinyVLAConfig(**CFG)), eps, VLATrainConfig(steps=1), tmp_path)


def test_short_run_resumes_and_a_finished_one_trains_nothing_more(tmp_path):
    """A run shorter than save_every keeps its state: the rerun starts where it ended."""
    train_vla(TinyVLA(TinyVLAConfig(**CFG)), vla_episodes(), VLATrainConfig(steps=2, batch_size=2), tmp_path)
    assert json.loads((tmp_path / "train_state.json").read_text())["step"] == 2
    again = TinyVLA(TinyVLAConfig(**CFG))
    assert train_vla(again, vla_episodes(), VLATrainConfig(steps=2, batch_size=2), tmp_path) == []
    torch.testing.assert_close(again.state_dict(), load_policy(tmp_path).state_dict())


def test_sigint_saves_state_then_the_rerun_resumes(tmp_path):
    calls = []

    def step_then_interrupt(model, batch, optimizer):
        calls.append(len(batch["action"]))
        out = vla_step(model, batch, optimizer)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)  # arrives mid-step; the loop finishes the step, saves, stops
        return out

    model = TinyVLA(TinyVLAConfig(**CFG))
    config = VLATrainConfig(steps=6, batch_size=2, save_every=100)
    with pytest.raises(TrainingInterrupted, match=r"SIGINT at step 2: state saved in .*rerun the same command"):
        train_vla(model, vla_episodes(), config, tmp_path, step=step_then_interrupt)
    assert calls == [2, 2]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    saved = TinyVLA(TinyVLAConfig(**CFG))
    opt = torch.optim.AdamW(saved.parameters())
    assert load_train_state(tmp_path, saved, opt) == 2
    torch.testing.assert_close(saved.state_dict(), model.state_dict())  # the state after step 2
    losses = train_vla(TinyVLA(TinyVLAConfig(**CFG)), vla_episodes(), config, tmp_path)
    assert len(losses) == 4  # steps 2..5
    assert json.loads((tmp_path / "train_state.json").read_text())["step"] == 6


def test_other_settings_are_refused_unless_overwrite(tmp_path):
    train_vla(TinyVLA(TinyVLAConfig(**CFG)), vla_episodes(), VLATrainConfig(steps=1, batch_size=2), tmp_path)
    with pytest.raises(FileExistsError, match=r"train.lr 0.0003 there, 0.001 now; train.seed 0 there, 1 now"):
        train_vla(
            TinyVLA(TinyVLAConfig(**CFG)),
            vla_episodes(),
            VLATrainConfig(steps=1, batch_size=2, lr=1e-3, seed=1),
            tmp_path,
        )
    with pytest.raises(FileExistsError, match=r"data.episodes 2 there, 3 now"):
        train_vla(TinyVLA(TinyVLAConfig(**CFG)), vla_episodes(3), VLATrainConfig(steps=1, batch_size=2), tmp_path)
    with pytest.raises(FileExistsError, match=r"model.use_state True there, False now"):
        train_vla(
            TinyVLA(TinyVLAConfig(**CFG, use_state=False)),
            vla_episodes(),
            VLATrainConfig(steps=1, batch_size=2),
            tmp_path,
        )
    losses = train_vla(
        TinyVLA(TinyVLAConfig(**CFG)),
        vla_episodes(),
        VLATrainConfig(steps=2, batch_size=2, lr=1e-3),
        tmp_path,
        overwrite=True,
    )
    assert len(losses) == 2  # started over
    assert json.loads((tmp_path / "run.json").read_text())["settings"]["train"]["lr"] == 1e-3


def test_step_seam_plugs_in_another_loss(tmp_path):
    """The loop only draws batches and calls ``step``: a wrapped vla_step reproduces the default run
    exactly, and a step with an extra penalty trains on its own total."""
    config = VLATrainConfig(steps=3, batch_size=2)
    runs = {}
    for name, step in (("default", vla_step), ("wrapped", lambda m, b, o: dict(vla_step(m, b, o)))):
        torch.manual_seed(0)
        model = TinyVLA(TinyVLAConfig(**CFG))
        runs[name] = (train_vla(model, vla_episodes(), config, tmp_path / name, step=step), model)
    assert runs["default"][0] == runs["wrapped"][0]
    torch.testing.assert_close(runs["default"][1].state_dict(), runs["wrapped"][1].state_dict())

    def with_penalty(model, batch, optimizer):
        flow = model.loss(batch)
        penalty = sum(p.square().sum() for p in model.expert.parameters())
        optimizer.zero_grad(set_to_none=True)
        (flow + penalty).backward()
        optimizer.step()
        return {"loss": (flow + penalty).detach(), "flow_matching": flow.detach(), "penalty": penalty.detach()}

    torch.manual_seed(0)
    penalised = train_vla(
        TinyVLA(TinyVLAConfig(**CFG)), vla_episodes(), config, tmp_path / "penalty", step=with_penalty
    )
    assert all(p > d + 1.0 for p, d in zip(penalised, runs["default"][0], strict=True))  # the penalty is in the total


def test_replay_fraction_puts_its_share_of_rows_in_every_batch(tmp_path, monkeypatch):
    """Fraction 0.25 of a batch of 4: one row of every batch from the replay episodes (numbered after the
    task's), three from the task's; the statistics cover both; the run records the fraction and counts."""
    import policylens.models._train_vla as trainer

    task, replay = vla_episodes(3, 5), vla_episodes(2, 4)
    for ep in replay:
        ep["action"] = ep["action"] - 10.0
    picked, make = [], trainer._batch

    def spy(model, episodes, samples, rows):
        picked.append([samples[r][0] for r in rows])  # the episode of each row
        return make(model, episodes, samples, rows)

    monkeypatch.setattr(trainer, "_batch", spy)
    torch.manual_seed(0)
    model = TinyVLA(TinyVLAConfig(**CFG))
    config = VLATrainConfig(steps=12, batch_size=4, replay_fraction=0.25)
    train_vla(model, task, config, tmp_path / "run", replay=replay)
    assert len(picked) == 12
    assert all(sum(e >= 3 for e in episodes) == 1 for episodes in picked), picked
    assert {e for episodes in picked for e in episodes if e < 3} == {0, 1, 2}  # every task episode drawn
    every = np.concatenate([ep["action"] for ep in task + replay])
    np.testing.assert_allclose(model.action_mean.numpy(), every.mean(0), rtol=1e-5)
    settings = json.loads((tmp_path / "run" / "run.json").read_text())["settings"]
    assert settings["train"]["replay_fraction"] == 0.25 and settings["data"]["replay_episodes"] == 2
    assert settings["data"]["steps_in_episodes"] == 3 * 5 + 2 * 4
    train_vla(TinyVLA(TinyVLAConfig(**CFG)), task, VLATrainConfig(steps=1, batch_size=4), tmp_path / "plain")
    plain = json.loads((tmp_path / "plain" / "run.json").read_text())["settings"]
    assert "replay_fraction" not in plain["train"] and "replay_episodes" not in plain["data"]  # earlier runs match


def _train_with_replay(tmp_path, fraction: float, replay: int) -> None:
    config = VLATrainConfig(steps=1, batch_size=4, replay_fraction=fraction)  # a fraction of no rows: refused here
    train_vla(TinyVLA(TinyVLAConfig(**CFG)), vla_episodes(), config, tmp_path, replay=vla_episodes(replay))


@pytest.mark.parametrize(
    ("fraction", "replay", "says"),
    [
        (0.25, 0, "replay_fraction=0.25 needs replay episodes"),
        (0.0, 2, "replay episodes were given with replay_fraction=0"),
        (0.1, 2, "replay_fraction=0.1 of batch_size=4 is 0 rows"),
    ],
)
def test_replay_fraction_and_episodes_come_together(tmp_path, fraction, replay, says):
    with pytest.raises(ValueError, match=says):
        _train_with_replay(tmp_path, fraction, replay)
    assert not (tmp_path / "run.json").exists()
    with pytest.raises(ValueError, match="replay_fraction=1.0; use 0 <= F < 1"):
        VLATrainConfig(replay_fraction=1.0)
