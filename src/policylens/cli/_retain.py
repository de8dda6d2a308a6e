"""``policylens retain``: fine-tune a policy on a new task while keeping its bridge features near
a cached teacher's (CRaFT). The same ``--out`` resumes (model, optimiser and λ); a finished run
reports itself and keeps its results; another run's ``--out`` is refused.

Task B is the built-in simulator's expert (``--task``) or episodes on disk (``--dataset
lerobot:PATH | droid:PATH``, cameras through ``--camera-map``); experience replay mixes in another
task's episodes (``--replay-task``) or the teacher's own data (``--replay-dataset``). Every input is
checked before the first episode is recorded or read: the choices, the tasks or datasets (cameras,
state and action sizes against the policy), the policy, the anchor cache (a bridge store this
policy can read, one sample through it) and ``--out``.

Under ``torchrun`` every rank records the same simulated episodes from the seed (or opens the same
datasets) and trains on the rank's device on its slices of the global ``--batch-size`` and
``--anchor-batch-size``; rank 0 alone writes and prints.

``--policy DIR`` holding a LeRobot SmolVLA / pi0 / pi0.5 or a transformers PI0 / PI05 goes to
``retain.policy_train`` (the policy's own training loss; task data from ``--dataset``; replay from
``--replay-dataset`` by ``--replay-fraction``; without ``--anchors`` only ``--method plain``).
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

import typer

from ._app import new_app
from ._common import (
    ANCHOR_FEATURES,
    CAMERA_MAP_HELP,
    EPISODES_FORMS,
    METHODS,
    OVERWRITE_HELP,
    PROJECTIONS,
    RETENTION_LOSSES,
)
from ._errors import CommandError
from ._own_policy import check_anchors, load_trainable_policy, train_own_policy
from ._threads import apply_threads, threads_option
from ._train import check_world_split, rank_output, stopped

app = new_app("Retention fine-tuning: learn a new task, keep the teacher's bridge features.")

TASK_STATS_HELP = (
    "Task-data dims far outside the teacher's normalisation (99th percentile of |z| > 10) that the "
    "teacher never used (its std at the floor) take the task data's mean / std, the teacher's "
    "function unchanged; --no-task-stats keeps the teacher's statistics."
)

Method = Literal[METHODS]
Projection = Literal[PROJECTIONS]
Loss = Literal[RETENTION_LOSSES]
AnchorFeatures = Literal[ANCHOR_FEATURES]
# the run settings recorded only when a dataset is used, and their values without one
DISK_DATA_DEFAULTS = {"data.dataset": None, "data.replay_dataset": None, "data.camera_map": None}


def _check_tasks(task: str | None, replay_task: str | None, replay_episodes: int | None, *, dataset, replay_dataset,
                 replay_fraction: float = 0.0):  # fmt: skip
    from policylens.sim.pybullet import TASKS

    if dataset and task:
        raise CommandError(f"--task {task} and --dataset {dataset}: task B comes from one of them; pass one")
    if replay_dataset and replay_task:
        raise CommandError("--replay-task and --replay-dataset: replay comes from one of them; pass one")
    for option, name in (("--task", task), ("--replay-task", replay_task)):
        if name is not None and name not in TASKS:
            raise CommandError(f"{option} {name!r} is unknown; use one of {sorted(TASKS)}")
    if (replay_task and not replay_episodes) or (replay_episodes and not (replay_task or replay_dataset)):
        raise CommandError(
            f"--replay-task {replay_task} with --replay-episodes {replay_episodes or 0}: experience replay from a "
            "simulated task needs both (a task and a count >= 1); --replay-dataset takes all its episodes by default"
        )
    if replay_fraction and not (replay_task or replay_dataset):
        raise CommandError(
            f"--replay-fraction {replay_fraction}: the replay rows come from --replay-task T --replay-episodes N or "
            "--replay-dataset PATH; pass one"
        )


@app.command("train")
def train(
    anchors: str | None = typer.Option(
        None, help="A bridge cache of the teacher (`policylens cache build --kind bridge`); --method plain needs none."
    ),
    out: str = typer.Option(..., help="Output directory (the same run resumes there)."),
    policy: str = typer.Option("tiny_vla", help="The policy to fine-tune (built-in name or checkpoint)."),
    task: str | None = typer.Option(None, help="Simulated task B to learn [default: put_in_tray, without --dataset]."),
    dataset: str | None = typer.Option(None, help=f"Task B from disk instead: {EPISODES_FORMS}."),
    camera_map: str | None = typer.Option(None, help=CAMERA_MAP_HELP),
    episodes: int | None = typer.Option(
        None, min=1, help="Episodes of task B [default: 40 simulated expert episodes; all of --dataset]."
    ),
    replay_task: str | None = typer.Option(None, help="Mix in episodes of this task too (experience replay)."),
    replay_dataset: str | None = typer.Option(
        None, help="Experience replay from disk instead (e.g. the teacher's own data), through --camera-map."
    ),
    replay_episodes: int | None = typer.Option(
        None, min=1, help="How many replay episodes [--replay-task: required; --replay-dataset: all]."
    ),
    replay_fraction: float = typer.Option(
        0.0,
        min=0.0,
        max=0.99,
        help="The share of each batch's rows drawn from the replay episodes [TinyVLA without it: replay episodes "
        "mixed in whole; --policy DIR: required with --replay-dataset].",
    ),
    method: Annotated[
        Method, typer.Option(help="How L_ret enters each step (docs/retention.md compares the methods).")
    ] = "craft",
    projection: Annotated[
        Projection,
        typer.Option(help="Methods that project: g_act off g_ret when they conflict, or the step while L_ret > ε."),
    ] = "conflict",
    epsilon: float = typer.Option(0.05, min=0.0, help="Retention budget ε on L_ret."),
    lam: float = typer.Option(0.0, min=0.0, help="λ at the start (the fixed weight for fixed / pcgrad / agem)."),
    lam_lr: float = typer.Option(1.0, min=0.0, help="Dual step size η_λ."),
    loss: Annotated[Loss, typer.Option(help="Retention loss on the bridge features.")] = "mse",
    steps: int = typer.Option(300, min=1, help="Optimiser steps in total (raise it to train a finished run on)."),
    batch_size: int = typer.Option(16, min=1, help="Task samples per step."),
    anchor_batch_size: int = typer.Option(16, min=1, help="Anchor samples per step."),
    lr: float = typer.Option(1e-4, help="Peak learning rate."),
    seed: int = typer.Option(0, help="Seed of the episode layouts, the batches and the anchors drawn."),
    retain_every: int = typer.Option(
        1, min=1, help="The retention pass (projection, λ's update) on every k-th step only; plain steps between."
    ),
    anchor_features: Annotated[
        AnchorFeatures,
        typer.Option(
            help="all: the bridge; action: the cached action output alone (action distillation with --method fixed; "
            "a cache built with --bridge-action or --bridge-action-only)."
        ),
    ] = "all",
    preload_anchors: bool = typer.Option(
        True, "--preload-anchors/--no-preload-anchors", help="Decode every anchor sample once at the start."
    ),
    task_stats: bool = typer.Option(True, "--task-stats/--no-task-stats", help=TASK_STATS_HELP),
    threads: int | None = threads_option(),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Fine-tune POLICY on expert episodes of TASK with a retention step; TensorBoard logs in OUT/tb."""
    from policylens.models import TinyVLA, TrainingInterrupted
    from policylens.retain import (
        RetainTrainConfig,
        RetentionConfig,
        check_retain_out,
        finished_message,
        retain_train,
    )
    from policylens.runs import distributed

    _check_tasks(task, replay_task, replay_episodes, dataset=dataset, replay_dataset=replay_dataset,
                 replay_fraction=replay_fraction)  # fmt: skip
    check_world_split(batch_size=batch_size, anchor_batch_size=anchor_batch_size)
    asked = {"task": task, "replay_task": replay_task}
    task = None if dataset else (task or "put_in_tray")
    retention = RetentionConfig(
        epsilon=epsilon, method=method, lam=lam, lam_lr=lam_lr, loss=loss, projection=projection
    )
    config = RetainTrainConfig(
        steps=steps, batch_size=batch_size, anchor_batch_size=anchor_batch_size, lr=lr, seed=seed,
        task_stats=task_stats, retain_every=retain_every, anchor_features=anchor_features,
        preload_anchors=preload_anchors, replay_fraction=replay_fraction,
    )  # fmt: skip
    try:
        with distributed() as d:
            say = rank_output(d)
            say(f"torch threads: {apply_threads(threads)}")
            model = load_trainable_policy(policy)
            if not isinstance(model, TinyVLA):
                own = {"dataset": dataset, "replay_dataset": replay_dataset, "camera_map": camera_map,
                       "episodes": episodes, "replay_episodes": replay_episodes, **asked}  # fmt: skip
                own.update(anchors=anchors, replay_fraction=replay_fraction)
                summary = train_own_policy(model, policy, own, out=out, retention=retention, config=config,
                                           overwrite=overwrite, d=d, log=say)  # fmt: skip
                say(json.dumps(summary))
                say(f"policy, retain.json and TensorBoard logs in {out}")
                return
            if anchors is None:
                raise CommandError(
                    f"--policy {policy} (TinyVLA): --anchors is required (a bridge cache of the teacher: "
                    f"`policylens cache build --policy {policy} --kind bridge ...`)"
                )
            check_anchors(anchors, model, config.anchor_features)
            data = {
                "policy": policy,
                "task": task,
                "episodes": episodes if dataset else (episodes or 40),
                "replay_task": replay_task,
                "replay_episodes": replay_episodes or 0,
            }
            if dataset or replay_dataset:  # recorded only when used, so older runs keep their settings
                data.update(dataset=dataset, replay_dataset=replay_dataset, camera_map=camera_map)
            eps, replay = _disk_episodes(
                model, dataset, replay_dataset, camera_map=camera_map, n=episodes, replay_n=replay_episodes
            )
            if not overwrite:  # another run's --out, or a finished run: before minutes of recording
                summary = check_retain_out(out, model, anchors, config=config, retention=retention, run_settings=data,
                                           defaults=DISK_DATA_DEFAULTS)  # fmt: skip
                if summary is not None:
                    say(finished_message(out, summary))
                    say(json.dumps(summary))
                    return
            # every rank records the same episodes from the seed (train_vla compares them)
            if task:
                eps = _episodes(model, task, n=data["episodes"], layout_seed=seed, progress=d.main) + eps
            if replay_task:
                replay += _episodes(model, replay_task, n=replay_episodes, layout_seed=seed + 7919, progress=d.main)
            if not replay_fraction:  # replay episodes mixed in whole, sampled like the task's
                eps, replay = eps + replay, []
            summary = retain_train(
                model.to(d.device),
                anchors,
                eps,
                out=out,
                config=config,
                retention=retention,
                run_settings=data,
                overwrite=overwrite,
                log=say,
                replay=replay,
            )
            say(json.dumps(summary))
            say(f"checkpoint, retain.json and TensorBoard logs in {out}")
    except TrainingInterrupted as exc:
        raise stopped(exc) from None


def _episodes(model, task: str, *, n: int, layout_seed: int, progress: bool = True) -> list[dict]:
    from policylens.data import training_samples
    from policylens.sim.pybullet import make_training_episodes

    cfg = model.config
    raw = make_training_episodes(
        task, n, seed=layout_seed, render=True, image_size=cfg.image_size, cameras=cfg.cameras, progress=progress
    )
    return training_samples(raw)


def _disk_episodes(model, dataset, replay_dataset, *, camera_map, n, replay_n) -> tuple[list[dict], list[dict]]:
    """Task B and replay episodes from disk (none without --dataset / --replay-dataset), checked against
    the policy before training starts."""
    from policylens.data import dataset_training_episodes

    def read(spec, count) -> list[dict]:
        return dataset_training_episodes(model, spec, camera_map, episodes=count) if spec else []

    return read(dataset, n), read(replay_dataset, replay_n)
