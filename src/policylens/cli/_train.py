"""``policylens train``: train the reference policies on simulated expert episodes.

An output directory belongs to one run (``run.json``): rerunning the same command resumes it
(with a larger ``--steps`` it trains on), other settings are refused before any episode is made,
``--overwrite`` replaces it. Ctrl-C / SIGTERM saves the state first; exit 130 / 143.
"""

from __future__ import annotations

from typing import Annotated

import typer

from . import _metaworld
from ._app import new_app
from ._common import CAMERA_MAP_HELP, EPISODES_FORMS, NOISE_HELP, OVERWRITE_HELP, SUITE_HELP, Suite, interrupted
from ._errors import CommandError
from ._threads import apply_threads, threads_option

DIFFUSION_THREADS_HELP = (
    "CPU threads for torch [default: 1, the fastest for this small model on a shared machine; also POLICYLENS_THREADS]."
)

app = new_app("Train the reference policies on simulated expert episodes.")


@app.command("vla")
def vla(
    out: str = typer.Option("runs/tiny_vla_reach", help="Output directory (the same run resumes there)."),
    task: str | None = typer.Option(None, help="Simulated task [default: reach, without --dataset]."),
    dataset: str | None = typer.Option(None, help=f"Train on episodes from disk instead: {EPISODES_FORMS}."),
    camera_map: str | None = typer.Option(None, help=CAMERA_MAP_HELP),
    episodes: int | None = typer.Option(
        None, min=1, help="Episodes [default: 200 simulated expert episodes; all of --dataset]."
    ),
    steps: int = typer.Option(3000, min=1, help="Optimiser steps in total (raise it to train a finished run on)."),
    batch_size: int = typer.Option(16, min=1, help="Samples per optimiser step."),
    seed: int = typer.Option(0, help="Seed of the episode layouts, the weights and the batches."),
    image_size: int = typer.Option(224, help="Camera image size (a multiple of the patch size 14)."),
    lr: float = typer.Option(3e-4, help="Peak learning rate (cosine decay after warm-up)."),
    use_state: bool = typer.Option(True, help="Feed the proprio state token (--no-use-state: images + text only)."),
    action_noise: float = typer.Option(0.02, min=0.0, help=NOISE_HELP),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    every_target: bool = typer.Option(
        False, "--every-target", help="Record each layout once per object, naming each in turn (language contrast)."
    ),
    init: str = typer.Option(
        None, help="Start from this TinyVLA checkpoint (its config and normalisation kept): fine-tuning."
    ),
    threads: int | None = threads_option(),
) -> None:
    """Train TinyVLA (two cameras, 224×224, flow matching) on expert episodes of TASK or on --dataset."""
    from policylens.data import dataset_training_episodes, training_samples
    from policylens.models import TinyVLA, TinyVLAConfig, TrainingInterrupted, VLATrainConfig, check_vla_run, train_vla
    from policylens.runs import trained_steps
    from policylens.sim.pybullet import make_training_episodes

    typer.echo(f"torch threads: {apply_threads(threads)}")
    if dataset and (task or every_target):
        raise CommandError(f"--dataset {dataset} with --task / --every-target: those record simulated episodes")
    if init:
        model = _init_vla(init, image_size, use_state)
    else:
        model = TinyVLA(TinyVLAConfig(image_size=image_size, use_state=use_state))
    config = VLATrainConfig(steps=steps, batch_size=batch_size, seed=seed, lr=lr, fit_normalization=init is None)
    if dataset:
        eps = dataset_training_episodes(model, dataset, camera_map, episodes)  # checked before any training
        data = {"dataset": dataset, "camera_map": camera_map}
        episodes = len(eps)
    else:
        task, episodes = task or "reach", episodes or 200
        data = {"task": task, "action_noise": action_noise}
    if every_target:
        data["every_target"] = True
    if init:
        data["init"] = str(init)
    if not overwrite:  # refuse another run's directory before spending minutes on rendering
        check_vla_run(out, model, config, episodes=episodes, data=data)
    if not dataset:
        raw = make_training_episodes(
            task,
            episodes,
            seed=seed,
            render=True,
            image_size=image_size,
            cameras=model.config.cameras,
            action_noise=action_noise,
            every_target=every_target,
        )
        eps = training_samples(raw)
    try:
        losses = train_vla(model, eps, config, out_dir=out, run_settings=data, overwrite=overwrite)
    except TrainingInterrupted as exc:
        raise interrupted(exc) from None
    if not losses:
        typer.echo(f"nothing to train: {out} already holds {trained_steps(out)} steps; raise --steps to go on")
        return
    typer.echo(f"trained {len(losses)} steps; final loss {losses[-1]:.4f}; checkpoint in {out}")


def _init_vla(path: str, image_size: int, use_state: bool):
    """The checkpoint at ``path`` as the starting point; refused if it is not a TinyVLA of these settings."""
    from policylens.models import load_tiny_vla_init

    try:
        return load_tiny_vla_init(path, image_size=image_size, use_state=use_state)
    except (FileNotFoundError, ValueError) as exc:
        raise CommandError(f"--init {path}: {str(exc).removeprefix(f'{path}: ')}") from None


@app.command("diffusion")
def diffusion(
    out: str = typer.Option(
        None,
        help="Output directory (the same run resumes there) [default: runs/diffusion_reach, MetaWorld: "
        "runs/diffusion_metaworld/TASK].",
    ),
    episodes: int = typer.Option(
        None, min=1, help="Expert episodes to generate, state only [default: 1500 reach, MetaWorld 200 successful]."
    ),
    steps: int = typer.Option(
        None,
        min=1,
        help="Optimiser steps in total; raise it to train a finished run on [default: 6000, MetaWorld 12000].",
    ),
    batch_size: int = typer.Option(64, min=1, help="Training windows per optimiser step."),
    lr: float = typer.Option(5e-4, help="Peak learning rate (warm-up, then cosine decay)."),
    seed: int = typer.Option(0, help="Seed of the episode layouts, the weights and the batches."),
    threads: int | None = threads_option(DIFFUSION_THREADS_HELP),
    action_noise: float = typer.Option(
        None,
        min=0.0,
        help=NOISE_HELP + " MetaWorld: in action units (1 = 1 cm per step) [default: 0.02 m, MetaWorld 0.1].",
    ),
    save_every: int = typer.Option(500, min=1, help="Steps between saves of the resumable state."),
    overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    suite: Annotated[Suite, typer.Option(help=SUITE_HELP)] = "pybullet",
    task: str = typer.Option(None, help="MetaWorld task to train on, e.g. pick-place-v3 (pybullet: reach only)."),
    n_emb: int = typer.Option(64, min=8, help="MetaWorld: transformer width (n_head 4 divides it)."),
    n_layer: int = typer.Option(4, min=1, help="MetaWorld: decoder layers."),
) -> None:
    """Train TinyDiffusionPolicy (DDPM, 100 steps) on expert reach or MetaWorld episodes; TensorBoard logs in OUT/tb."""
    from policylens.models import TrainingInterrupted
    from policylens.models.diffusion import diffusion_loop_kwargs
    from policylens.runs import trained_steps
    from policylens.sim import check_reach_run, reach_run_settings, train_reach_policy

    typer.echo(f"torch threads: {apply_threads(threads, default=1)}")
    if suite == "metaworld":
        try:
            policy, out = _metaworld.train(
                out=out,
                task=task,
                episodes=episodes or 200,
                steps=steps or 12000,
                batch_size=batch_size,
                lr=lr,
                seed=seed,
                action_noise=0.1 if action_noise is None else action_noise,
                save_every=save_every,
                overwrite=overwrite,
                n_emb=n_emb,
                n_layer=n_layer,
            )
        except TrainingInterrupted as exc:
            raise interrupted(exc) from None
        policy.save_pretrained(out)
        typer.echo(f"trained {policy.config.task} to step {trained_steps(out)}; checkpoint in {out}")
        return
    if task not in (None, "reach"):
        raise CommandError(
            f"--task {task}: the pybullet diffusion policy trains on reach only; or pass --suite metaworld"
        )
    out, episodes, steps = out or "runs/diffusion_reach", episodes or 1500, steps or 6000
    action_noise = 0.02 if action_noise is None else action_noise
    if not overwrite:
        check_reach_run(out, episodes=episodes, batch_size=batch_size, lr=lr, seed=seed, action_noise=action_noise)
    data = reach_run_settings(action_noise=action_noise)
    try:
        loop = diffusion_loop_kwargs(
            out, steps, batch_size=batch_size, lr=lr, save_every=save_every, run_settings=data, overwrite=overwrite
        )
        policy = train_reach_policy(episodes, steps, seed, action_noise=action_noise, **loop)
    except TrainingInterrupted as exc:
        raise interrupted(exc) from None
    policy.save_pretrained(out)
    typer.echo(f"trained to step {trained_steps(out)}; checkpoint in {out}")
