"""``policylens train``: train the reference policies on simulated expert episodes or episodes on disk.

An output directory belongs to one run (``run.json``): rerunning the same command resumes it
(with a larger ``--steps`` it trains on), other settings are refused before any episode is made,
``--overwrite`` replaces it. Ctrl-C / SIGTERM saves the state first; exit 130 / 143.

Under ``torchrun`` each command joins the process group (``runs.distributed()``): every rank makes
the same episodes from the seed (or opens the same ``--dataset``), trains on the rank's device on its
slice of each global ``--batch-size``, and rank 0 alone writes and prints.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from . import _metaworld
from ._app import new_app
from ._common import CAMERA_MAP_HELP, EPISODES_FORMS, NOISE_HELP, OVERWRITE_HELP, SUITE_HELP, Suite, interrupted
from ._diffusion_dataset import check_dataset_options, check_fit_dataset, train_dataset
from ._errors import CommandError
from ._own_policy import load_trainable_policy, train_own_policy
from ._threads import apply_threads, threads_option

POLICY_DIR_HELP = (
    "Fine-tune this LeRobot SmolVLA / pi0 / pi0.5 checkpoint or transformers PI0 / PI05 directory instead of "
    "TinyVLA: plain fine-tuning with its own training loss on --dataset (retain train --method plain); "
    "writes OUT/policy."
)
DIFFUSION_THREADS_HELP = (
    "CPU threads for torch [default: 1, the fastest for this small model on a shared machine; also POLICYLENS_THREADS]."
)

app = new_app("Train the reference policies on simulated expert episodes or on episodes from disk.")


def check_world_split(**options: int) -> None:
    """Each global batch option must split evenly over torchrun's ranks (before any work)."""
    from policylens.runs import env_world

    world = env_world()[1]
    for name, value in options.items():
        if value % world:
            raise CommandError(
                f"--{name.replace('_', '-')} {value}: the global batch must split evenly over the {world} ranks; "
                f"use a multiple of {world} (each rank trains on {name.replace('_', '-')} / {world})"
            )


def _quiet(*_args, **_kwargs) -> None:
    """What ranks other than 0 print."""


def rank_output(d) -> Callable[..., None]:
    """How this rank prints: ``typer.echo`` on rank 0, nothing on the others."""
    return typer.echo if d.main else _quiet


def stopped(exc: BaseException) -> typer.Exit:
    """Rank 0 (or the only process) says why training stopped; every rank exits 128 + the signal."""
    from policylens.runs import env_world

    return interrupted(exc) if env_world()[0] == 0 else typer.Exit(128 + getattr(exc, "signum", 2))


@app.command("vla")
def vla(
    ctx: typer.Context,
    out: str = typer.Option("runs/tiny_vla_reach", help="Output directory (the same run resumes there)."),
    policy: str | None = typer.Option(None, help=POLICY_DIR_HELP),
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
    lr: float | None = typer.Option(
        None, help="Peak learning rate (cosine decay after warm-up) [default: 3e-4; --policy DIR: 1e-5]."
    ),
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
    """Train TinyVLA (two cameras, 224×224, flow matching) on expert episodes of TASK or on --dataset;
    --policy DIR: plain fine-tuning of a LeRobot SmolVLA / pi0 / pi0.5 or transformers PI0 / PI05 on --dataset."""
    from policylens.data import dataset_training_episodes, training_samples
    from policylens.models import TinyVLA, TinyVLAConfig, TrainingInterrupted, VLATrainConfig, check_vla_run, train_vla
    from policylens.runs import distributed, trained_steps
    from policylens.sim.pybullet import make_training_episodes

    if policy is not None:
        _check_policy_options(ctx, policy, dataset)
        own = {"dataset": dataset, "camera_map": camera_map, "episodes": episodes}
        lr = 1e-5 if lr is None else lr  # PolicyTrainConfig's; anchor_batch_size: no anchors, a size that splits
        config = {"steps": steps, "batch_size": batch_size, "seed": seed, "lr": lr, "anchor_batch_size": batch_size}
        return _fine_tune(policy, own, out=out, config=config, overwrite=overwrite, threads=threads)
    lr = 3e-4 if lr is None else lr
    if dataset and (task or every_target):
        raise CommandError(f"--dataset {dataset} with --task / --every-target: those record simulated episodes")
    check_world_split(batch_size=batch_size)
    try:
        with distributed() as d:
            say = rank_output(d)
            say(f"torch threads: {apply_threads(threads)}")
            if init:
                model = _init_vla(init, image_size, use_state)
            else:
                model = TinyVLA(TinyVLAConfig(image_size=image_size, use_state=use_state))
            config = VLATrainConfig(
                steps=steps, batch_size=batch_size, seed=seed, lr=lr, fit_normalization=init is None
            )
            if dataset:  # every rank opens the same dataset
                eps = dataset_training_episodes(model, dataset, camera_map, episodes=episodes)  # checked first
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
            if not dataset:  # every rank records the same episodes from the seed (train_vla compares them)
                raw = make_training_episodes(
                    task,
                    episodes,
                    seed=seed,
                    render=True,
                    image_size=image_size,
                    cameras=model.config.cameras,
                    action_noise=action_noise,
                    every_target=every_target,
                    progress=d.main,
                )
                eps = training_samples(raw)
            model = model.to(d.device)
            losses = train_vla(model, eps, config, out_dir=out, run_settings=data, overwrite=overwrite)
            if not losses:
                say(f"nothing to train: {out} already holds {trained_steps(out)} steps; raise --steps to go on")
                return
            say(f"trained {len(losses)} steps; final loss {losses[-1]:.4f}; checkpoint in {out}")
    except TrainingInterrupted as exc:
        raise stopped(exc) from None


def _check_policy_options(ctx: typer.Context, policy: str, dataset: str | None) -> None:
    """``train vla --policy DIR``: options it cannot honour refused, --dataset and --out required (before loading)."""
    sim_only = ("task", "every_target", "init", "image_size", "use_state", "action_noise")
    sources = {name: ctx.get_parameter_source(name) for name in (*sim_only, "out")}  # typer may vendor click's enum
    given = [name for name, source in sources.items() if getattr(source, "name", "DEFAULT") != "DEFAULT"]
    refused = [f"--{name.replace('_', '-')}" for name in sim_only if name in given]
    if refused:
        raise CommandError(
            f"--policy {policy} with {' / '.join(refused)}: those build or record a TinyVLA run; a policy directory "
            "keeps its own architecture and trains on --dataset episodes (leave them out)"
        )
    if not dataset:
        raise CommandError(f"--policy {policy}: pass the task data with --dataset lerobot:PATH | droid:PATH")
    if "out" not in given:
        raise CommandError(f"--policy {policy}: pass --out DIR for the fine-tuned run (the default is TinyVLA's)")


def _fine_tune(policy: str, own: dict, *, out: str, config: dict, overwrite: bool, threads: int | None) -> None:
    """Plain fine-tuning of a LeRobot / transformers pi directory: ``retain train --method plain``'s path
    (``retain.policy_train`` without anchors) with train vla's options."""
    from policylens.models import TinyVLA, TrainingInterrupted
    from policylens.retain import RetainTrainConfig, RetentionConfig
    from policylens.runs import distributed

    check_world_split(batch_size=config["batch_size"])
    own.update(task=None, replay_task=None, replay_dataset=None, replay_episodes=None, anchors=None,
               replay_fraction=0.0)  # fmt: skip
    try:
        with distributed() as d:
            say = rank_output(d)
            say(f"torch threads: {apply_threads(threads)}")
            model = load_trainable_policy(policy)
            if isinstance(model, TinyVLA):
                raise CommandError(
                    f"--policy {policy} is a TinyVLA: fine-tune it with `policylens train vla --init {policy}` "
                    "(its config and normalisation kept)"
                )
            summary = train_own_policy(model, policy, own, out=out, retention=RetentionConfig(method="plain"),
                                       config=RetainTrainConfig(**config), overwrite=overwrite, d=d,
                                       log=say)  # fmt: skip
            say(f"trained {summary['steps_run']} steps (plain fine-tuning); the policy in {out}/policy")
    except TrainingInterrupted as exc:
        raise stopped(exc) from None


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
        None,
        min=1,
        help="Expert episodes to generate, state only [default: 1500 reach, MetaWorld 200 successful; all of "
        "--dataset].",
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
    n_emb: int = typer.Option(64, min=8, help="MetaWorld, --fit-dataset: transformer width (n_head 4 divides it)."),
    n_layer: int = typer.Option(4, min=1, help="MetaWorld, --fit-dataset: decoder layers."),
    dataset: str | None = typer.Option(
        None,
        help=f"Train on episodes from disk instead (their state and actions; the suite's policy sizes: reach "
        f"33-D state, 7-D actions; MetaWorld 39-D, 4-D): {EPISODES_FORMS}.",
    ),
    camera_map: str | None = typer.Option(
        None, help="Not used here: the diffusion policies read a state vector, no camera (train vla reads cameras)."
    ),
    fit_dataset: bool = typer.Option(
        False,
        "--fit-dataset",
        help="Size the policy from --dataset (its state and action widths; reach's horizon and chunks; --n-emb, "
        "--n-layer) instead of the suite's policy; no simulator task is recorded.",
    ),
) -> None:
    """Train TinyDiffusionPolicy (DDPM, 100 steps) on expert reach or MetaWorld episodes, or on --dataset;
    TensorBoard logs in OUT/tb."""
    from policylens.models import TrainingInterrupted
    from policylens.runs import distributed, trained_steps

    check_world_split(batch_size=batch_size)
    if suite != "metaworld" and task not in (None, "reach"):
        raise CommandError(
            f"--task {task}: the pybullet diffusion policy trains on reach only; or pass --suite metaworld"
        )
    check_dataset_options(dataset, camera_map, action_noise)
    check_fit_dataset(fit_dataset, dataset=dataset, suite=suite, task=task)
    loop = {"batch_size": batch_size, "lr": lr, "seed": seed, "save_every": save_every, "overwrite": overwrite}
    try:
        with distributed() as d:
            say = rank_output(d)
            say(f"torch threads: {apply_threads(threads, default=1)}")
            if dataset:  # every rank opens the same dataset (the trainer compares the windows)
                policy, out = train_dataset(
                    out, dataset, suite=suite, task=task, episodes=episodes, steps=steps, n_emb=n_emb,
                    n_layer=n_layer, fit=fit_dataset, device=d.device, progress=d.main, **loop,
                )  # fmt: skip
                what = f"on {dataset} "
            elif suite == "metaworld":
                policy, out = _metaworld.train(
                    out=out,
                    task=task,
                    episodes=episodes or 200,
                    steps=steps or 12000,
                    action_noise=0.1 if action_noise is None else action_noise,
                    n_emb=n_emb,
                    n_layer=n_layer,
                    device=d.device,
                    progress=d.main,
                    **loop,
                )
                what = f"{policy.config.task} "
            else:
                out = out or "runs/diffusion_reach"
                noise = 0.02 if action_noise is None else action_noise
                policy = _train_reach(
                    out, episodes=episodes or 1500, steps=steps or 6000, action_noise=noise, device=d.device, **loop
                )
                what = ""
            if d.main:
                policy.save_pretrained(out)
            say(f"trained {what}to step {trained_steps(out)}; checkpoint in {out}")
    except TrainingInterrupted as exc:
        raise stopped(exc) from None


def _train_reach(out: str, *, episodes: int, steps: int, action_noise: float, batch_size, lr, seed, save_every,
                 overwrite, device):  # fmt: skip
    """The pybullet reach recipe run in ``out``; returns the policy."""
    from policylens.models.diffusion import diffusion_loop_kwargs
    from policylens.sim import check_reach_run, reach_run_settings, train_reach_policy

    if not overwrite:
        check_reach_run(out, episodes=episodes, batch_size=batch_size, lr=lr, seed=seed, action_noise=action_noise)
    data = reach_run_settings(action_noise=action_noise)
    loop = diffusion_loop_kwargs(
        out, steps, batch_size=batch_size, lr=lr, save_every=save_every, run_settings=data, overwrite=overwrite,
        device=device,
    )  # fmt: skip
    return train_reach_policy(episodes, steps, seed, action_noise=action_noise, **loop)
