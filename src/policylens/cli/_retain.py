"""``policylens retain``: fine-tune a policy on a new task while keeping its bridge features near
a cached teacher's (CRaFT). The same ``--out`` resumes (model, optimiser and λ)."""

from __future__ import annotations

import json

import typer

from ._app import new_app
from ._train import OVERWRITE_HELP, _interrupted

app = new_app("Retention fine-tuning: learn a new task, keep the teacher's bridge features.")


@app.command("train")
def train(
    anchors: str = typer.Option(..., help="A bridge cache of the teacher (`policylens cache build --kind bridge`)."),
    out: str = typer.Option(..., help="Output directory (the same run resumes there)."),
    policy: str = typer.Option("tiny_vla", help="The policy to fine-tune (built-in name or checkpoint)."),
    task: str = typer.Option("put_in_tray", help="Simulated task B to learn."),
    episodes: int = typer.Option(40, min=1, help="Expert episodes of task B."),
    replay_task: str | None = typer.Option(None, help="Mix in episodes of this task too (experience replay)."),
    replay_episodes: int = typer.Option(0, min=0, help="How many replay episodes."),
    method: str = typer.Option("craft", help="plain | fixed | pcgrad | agem | craft."),
    epsilon: float = typer.Option(0.05, min=0.0, help="Retention budget ε on L_ret."),
    lam: float = typer.Option(0.0, min=0.0, help="λ at the start (the fixed weight for fixed / pcgrad / agem)."),
    lam_lr: float = typer.Option(1.0, min=0.0, help="Dual step size η_λ."),
    loss: str = typer.Option("mse", help="Retention loss: mse | cosine."),
    steps: int = typer.Option(300, min=1, help="Optimiser steps in total."),
    batch_size: int = typer.Option(16, min=1, help="Task samples per step."),
    anchor_batch_size: int = typer.Option(16, min=1, help="Anchor samples per step."),
    lr: float = typer.Option(1e-4, help="Peak learning rate."),
    seed: int = typer.Option(0, help="Seed of the episode layouts, the batches and the anchors drawn."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
) -> None:
    """Fine-tune POLICY on expert episodes of TASK with a retention step; TensorBoard logs in OUT/tb."""
    from policylens.data.sim import make_training_episodes
    from policylens.models import TrainingInterrupted, load_model
    from policylens.retain import RetainTrainConfig, RetentionConfig, retain_train

    retention = RetentionConfig(epsilon=epsilon, method=method, lam=lam, lam_lr=lam_lr, loss=loss)
    config = RetainTrainConfig(
        steps=steps, batch_size=batch_size, anchor_batch_size=anchor_batch_size, lr=lr, seed=seed
    )
    model = load_model(policy)
    cfg = model.config

    def make(name: str, n: int, layout_seed: int) -> list[dict]:
        raw = make_training_episodes(
            name, n, seed=layout_seed, render=True, image_size=cfg.image_size, cameras=cfg.cameras
        )
        return [
            {"images": e["images"], "state": e["proprio"], "action": e["action"], "instruction": e["instruction"]}
            for e in raw
        ]

    eps = make(task, episodes, seed)
    if replay_task and replay_episodes:
        eps += make(replay_task, replay_episodes, seed + 7919)
    data = {
        "policy": policy,
        "task": task,
        "episodes": episodes,
        "replay_task": replay_task,
        "replay_episodes": replay_episodes,
    }
    try:
        summary = retain_train(model, anchors, eps, out, config, retention, run_settings=data, overwrite=overwrite)
    except TrainingInterrupted as exc:
        raise _interrupted(exc) from None
    typer.echo(json.dumps(summary))
    typer.echo(f"checkpoint, retain.json and TensorBoard logs in {out}")
