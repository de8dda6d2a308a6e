"""The ``--suite metaworld`` side of ``policylens sim`` and ``policylens train diffusion``.

Each function is a few lines around ``policylens.sim.metaworld`` (or the diffusion trainer); a
missing extra becomes one line naming ``pip install -e ".[metaworld]"``.
"""

from __future__ import annotations

from pathlib import Path

import typer

from ._common import wrote
from ._errors import CommandError

__all__ = ["evaluate", "generate", "require", "tasks_of", "train"]


def require() -> None:
    """Import MetaWorld or stop with the install command."""
    from policylens.sim.metaworld import MetaWorldUnavailable, require_metaworld

    try:
        require_metaworld()
    except MetaWorldUnavailable as exc:
        raise CommandError(str(exc)) from None


def tasks_of(task: str | None) -> list[str]:
    """``--task a,b,c`` -> checked task names (an unknown one lists the known tasks)."""
    from policylens.sim.metaworld import check_task

    if not task:
        raise CommandError("--task is required with --suite metaworld: e.g. --task pick-place-v3 (or a,b,c for eval)")
    names = [t.strip() for t in task.split(",") if t.strip()]
    return [check_task(t, param="--task") for t in names]


def generate(
    out: Path,
    *,
    task: str | None,
    episodes: int,
    fmt: str,
    seed: int,
    image_size: int,
    cameras: str,
    if_exists: str,
    kept: int = 0,
) -> None:
    from policylens.sim.metaworld import generate_episodes

    require()
    names = tasks_of(task)
    if len(names) != 1:
        raise CommandError(f"--task {task}: sim generate writes one task per dataset; pass one task")
    cams = tuple(c.strip() for c in cameras.split(",") if c.strip())
    paths = generate_episodes(
        names[0], episodes, out, seed=seed, fmt=fmt, cameras=cams, image_size=image_size, if_exists=if_exists
    )
    what = f"cameras {', '.join(cams)} at {image_size} px" if cams else "state only"
    done = wrote(if_exists, episodes, kept)
    typer.echo(f"{done} MetaWorld {names[0]} episodes ({what}) as {fmt} under {out} ({len(paths)} paths)")


def evaluate(
    policy: str, task: str | None, *, episodes: int, seed: int, batch: int | None, max_steps: int | None
) -> None:
    from policylens.sim import load_agent
    from policylens.sim.metaworld import DEFAULT_BATCH, evaluate_tasks, results_table

    require()
    names = tasks_of(task)
    agents = {t: load_agent(policy, "metaworld", t, seed=seed) for t in names}  # all checked before any rollout
    results, seconds = evaluate_tasks(agents, episodes, seed, batch=batch or DEFAULT_BATCH, max_steps=max_steps)
    if len(names) == 1:
        typer.echo(f"{policy} on {names[0]}: {results[names[0]]}")
    typer.echo(results_table(results, seconds))


def train(
    *,
    out: str | None,
    task: str | None,
    episodes: int,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    action_noise: float,
    save_every: int,
    overwrite: bool,
    n_emb: int,
    n_layer: int,
    device=None,
    progress: bool = True,
):
    """Train a reference diffusion policy on ``task``'s expert episodes on ``device`` (under torchrun every
    rank records the same episodes from the seed; ``progress``: rank 0's bars); returns (policy, out dir)."""
    from policylens.models.diffusion import diffusion_loop_kwargs, metaworld_config
    from policylens.sim import check_metaworld_run, metaworld_run_settings, train_metaworld_policy

    require()
    names = tasks_of(task)
    if len(names) != 1:
        raise CommandError(f"--task {task}: train one policy per task; pass one task")
    out = out or f"runs/diffusion_metaworld/{names[0]}"
    config = metaworld_config(names[0], n_emb=n_emb, n_layer=n_layer)
    if not overwrite:  # before minutes of episodes
        check_metaworld_run(
            out, config, episodes=episodes, batch_size=batch_size, lr=lr, seed=seed, action_noise=action_noise
        )
    data = metaworld_run_settings(names[0], action_noise=action_noise)
    loop = diffusion_loop_kwargs(
        out, steps, batch_size=batch_size, lr=lr, save_every=save_every, run_settings=data, overwrite=overwrite,
        device=device,
    )  # fmt: skip
    policy = train_metaworld_policy(
        names[0], episodes, steps, seed=seed, action_noise=action_noise, config=config, progress=progress, **loop
    )
    return policy, out
