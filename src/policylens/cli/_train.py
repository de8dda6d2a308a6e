"""``policylens train``: train the reference policies on simulated expert episodes."""

from __future__ import annotations

import typer

NOISE_HELP = "DART noise std (m) added to the executed expert xyz; the recorded labels stay clean."
app = typer.Typer(help="Train the reference policies on simulated expert episodes.", no_args_is_help=True)


@app.command("vla")
def vla(
    out: str = typer.Option("runs/tiny_vla_reach", help="Output directory (resumes if it holds a train state)."),
    task: str = typer.Option("reach", help="Simulated task."),
    episodes: int = typer.Option(200, min=1, help="Expert episodes to generate."),
    steps: int = typer.Option(3000, min=1, help="Optimiser steps."),
    batch_size: int = typer.Option(16, min=1),
    seed: int = typer.Option(0),
    image_size: int = typer.Option(224, help="Camera image size (a multiple of the patch size 14)."),
    lr: float = typer.Option(3e-4, help="Peak learning rate (cosine decay after warm-up)."),
    use_state: bool = typer.Option(True, help="Feed the proprio state token (--no-use-state: images + text only)."),
    action_noise: float = typer.Option(0.02, min=0.0, help=NOISE_HELP),
) -> None:
    """Train TinyVLA (two cameras, 224×224, flow matching) on expert episodes of TASK."""
    from policylens.data.sim import make_training_episodes
    from policylens.models import TinyVLA, TinyVLAConfig, VLATrainConfig, train_vla

    model = TinyVLA(TinyVLAConfig(image_size=image_size, use_state=use_state))
    raw = make_training_episodes(
        task,
        episodes,
        seed=seed,
        render=True,
        image_size=image_size,
        cameras=model.config.cameras,
        action_noise=action_noise,
    )
    eps = [
        {"images": e["images"], "state": e["proprio"], "action": e["action"], "instruction": e["instruction"]}
        for e in raw
    ]
    losses = train_vla(model, eps, VLATrainConfig(steps=steps, batch_size=batch_size, seed=seed, lr=lr), out)
    typer.echo(f"trained {len(losses)} steps; final loss {losses[-1]:.4f}; checkpoint in {out}")


@app.command("diffusion")
def diffusion(
    out: str = typer.Option("runs/diffusion_reach", help="Output directory for config.json + model.safetensors."),
    episodes: int = typer.Option(1500, min=1, help="Expert reach episodes to generate (state only)."),
    steps: int = typer.Option(6000, min=1, help="Optimiser steps."),
    batch_size: int = typer.Option(64, min=1),
    lr: float = typer.Option(5e-4),
    seed: int = typer.Option(0),
    threads: int = typer.Option(1, min=1, help="torch threads (1 is fastest on a shared 2-core machine)."),
    action_noise: float = typer.Option(0.02, min=0.0, help=NOISE_HELP),
) -> None:
    """Train TinyDiffusionPolicy (DDPM, 100 steps) on expert reach episodes; TensorBoard logs in OUT/tb."""
    import torch

    from policylens.models.diffusion import train_reach_policy

    torch.set_num_threads(threads)
    policy = train_reach_policy(
        episodes,
        steps,
        seed,
        log_dir=f"{out}/tb",
        action_noise=action_noise,
        batch_size=batch_size,
        lr=lr,
        warmup_steps=min(200, steps),
    )
    policy.save_pretrained(out)
    typer.echo(f"trained {steps} steps; checkpoint in {out}")
