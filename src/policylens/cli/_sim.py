"""`policylens sim`: generate simulated expert episodes and evaluate policies in closed loop.

The choices (``--suite``, ``--format``) and the pybullet task names come from ``_common``, where
they mirror the simulators' own tuples so that ``policylens`` starts without importing pybullet.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from . import _metaworld
from ._app import new_app
from ._common import FORMATS, PYBULLET_TASKS, SUITE_HELP, Suite, interrupted, wrote
from ._errors import CommandError
from ._threads import apply_threads, threads_option

app = new_app("Simulated episodes (pybullet Panda or MetaWorld): generate datasets, evaluate policies.")

Format = Literal[FORMATS]  # on-disk episode formats
TASK_HELP = (
    f"Task name: {' | '.join(PYBULLET_TASKS)} (pybullet; default {PYBULLET_TASKS[0]}), "
    "or a MetaWorld task such as pick-place-v3."
)


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Output directory; must be new or empty unless --overwrite / --append.")],
    task: Annotated[str | None, typer.Option(help=TASK_HELP)] = None,
    episodes: Annotated[int, typer.Option(min=1, help="Number of expert episodes.")] = 10,
    fmt: Annotated[Format, typer.Option("--format", help="Episode format on disk.")] = "droid",
    seed: Annotated[int, typer.Option(help="Run seed (layouts are deterministic under it).")] = 0,
    image_size: Annotated[int, typer.Option(help="Square image size in pixels (even).")] = 224,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete the dataset already in --out first.")] = False,
    append: Annotated[
        bool, typer.Option("--append", help="Add episodes after those in --out, under new folder names (DROID only).")
    ] = False,
    policy: Annotated[
        str, typer.Option(help="'expert', or a checkpoint whose own rollouts (on evaluation layouts) are recorded.")
    ] = "expert",
    suite: Annotated[Suite, typer.Option(help=SUITE_HELP)] = "pybullet",
    cameras: Annotated[
        str, typer.Option(help="MetaWorld only: comma-separated MuJoCo cameras to render (e.g. corner2,gripperPOV).")
    ] = "",
    threads: int | None = threads_option(),
) -> None:
    """Roll out the scripted expert (or --policy, on held-out layouts) and write DROID raw or LeRobot episodes.
    An interrupted run is finished by the same command (only the missing episodes are written)."""
    from policylens.sim.pybullet import GenerationInterrupted, finished_episodes

    if overwrite and append:
        raise CommandError("--overwrite and --append exclude each other; pass one")
    if_exists = "overwrite" if overwrite else "append" if append else "error"
    typer.echo(f"torch threads: {apply_threads(threads)}")
    kept = 0 if overwrite else finished_episodes(out)
    try:
        settings = {"task": task, "episodes": episodes, "fmt": fmt, "seed": seed, "image_size": image_size}
        if suite == "metaworld":
            if policy != "expert":
                raise CommandError(f"--policy {policy}: with --suite metaworld, sim generate records the expert only")
            _metaworld.generate(out, **settings, cameras=cameras, if_exists=if_exists, kept=kept)
        else:
            _generate(out, **settings, if_exists=if_exists, policy=policy, cameras=cameras, kept=kept)
    except GenerationInterrupted as exc:
        raise interrupted(exc) from None
    except KeyboardInterrupt:
        typer.echo(f"interrupted before the first episode; nothing written to {out}", err=True)
        raise typer.Exit(130) from None


def _generate(out, *, task, episodes, fmt, seed, image_size, if_exists, policy, cameras, kept) -> None:
    if cameras:
        raise CommandError("--cameras is for --suite metaworld; the pybullet suite renders its three cameras")
    from policylens.sim.pybullet import generate_episodes

    task = task or PYBULLET_TASKS[0]
    kw = {"image_size": image_size}
    if policy != "expert":  # the policy's own rollouts on held-out layouts, with its cameras and size
        from policylens.sim import load_agent
        from policylens.sim.pybullet import render_settings

        agent = load_agent(policy, "pybullet", task, seed=seed)
        view = render_settings(agent, image_size)
        kw = {"image_size": view["image_size"], "cameras": view["cameras"], "policy": agent}
    paths = generate_episodes(task, episodes, out, seed=seed, fmt=fmt, if_exists=if_exists, **kw)
    typer.echo(f"{wrote(if_exists, episodes, kept)} {task} episodes as {fmt} under {out} ({len(paths)} paths)")


@app.command("eval")
def eval_policy(
    policy: Annotated[
        str,
        typer.Option(
            help="'expert' or a checkpoint for models.load_policy. MetaWorld also takes 'metaworld' (the shipped "
            "policy of each task) and a directory holding one run per task (DIR/TASK)."
        ),
    ] = "expert",
    task: Annotated[
        str | None, typer.Option(help=TASK_HELP + " MetaWorld: several as a,b,c (a table, then the mean).")
    ] = None,
    episodes: Annotated[int, typer.Option(help="Number of closed-loop rollouts.")] = 50,
    seed: Annotated[int, typer.Option(help="Evaluation seed (layouts disjoint from training ones).")] = 0,
    image_size: Annotated[
        int,
        typer.Option(
            help="Square image size in pixels; a checkpoint with an image_size in its config renders at that "
            "size instead (the size it was trained on)."
        ),
    ] = 224,
    render: Annotated[bool, typer.Option(help="Render camera images (state-only policies can skip it).")] = True,
    suite: Annotated[Suite, typer.Option(help=SUITE_HELP)] = "pybullet",
    batch: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Environments stepped together, one policy call per step (default: 1 pybullet, 25 MetaWorld).",
        ),
    ] = None,
    max_steps: Annotated[
        int | None,
        typer.Option(min=1, help="Steps before an episode counts as failed (default: the task's; MetaWorld 500)."),
    ] = None,
    threads: int | None = threads_option(),
) -> None:
    """Run closed-loop rollouts and print the success rate with its 95% Wilson interval."""
    n = apply_threads(threads)
    if suite == "metaworld":
        _metaworld.evaluate(policy, task, episodes=episodes, seed=seed, batch=batch, max_steps=max_steps)
        typer.echo(f"torch threads: {n}")  # after the table, which the output starts with
        return
    typer.echo(f"torch threads: {n}")
    from policylens.sim import load_agent
    from policylens.sim.pybullet import evaluate_policy, render_settings

    task = task or PYBULLET_TASKS[0]
    agent = load_agent(policy, "pybullet", task, seed=seed)
    view = render_settings(agent, image_size, render)
    try:
        result = evaluate_policy(
            agent, task, episodes=episodes, seed=seed, **view, max_steps=max_steps, batch=batch or 1
        )
    except ValueError as exc:  # a policy that reads its environment runs one at a time
        raise CommandError(f"--batch {batch}: {exc}") from None
    typer.echo(f"{policy} on {task}: {result}")
