"""The loop settings the shipped diffusion recipes train with (reach and MetaWorld, one per run folder).

A run lives in one folder: TensorBoard scalars in OUT/tb, the resumable state and the
checkpoint in OUT. Warm-up is 200 steps, or the whole run when it is shorter. ``policylens
train diffusion`` passes these to :func:`train_reach_policy` / :func:`train_metaworld_policy`;
a script that retrains a shipped policy passes the same. Under torchrun the command passes the rank's
``device`` too.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

__all__ = ["diffusion_loop_kwargs"]

WARMUP_STEPS = 200  # at most; a shorter run warms up throughout


def diffusion_loop_kwargs(
    out: str | Path,
    steps: int,
    *,
    batch_size: int,
    lr: float,
    save_every: int,
    run_settings: Mapping,
    overwrite: bool = False,
    device: str | None = None,
) -> dict:
    """``train_diffusion_policy`` keyword arguments of a recipe run in ``out`` of ``steps`` steps
    (``device``: where it trains, included when given)."""
    if steps < 1:
        raise ValueError(f"diffusion_loop_kwargs: steps={steps}; expected at least 1")
    where = {} if device is None else {"device": str(device)}
    return {
        "log_dir": f"{out}/tb",
        "batch_size": batch_size,
        "lr": lr,
        "warmup_steps": min(WARMUP_STEPS, steps),
        "out_dir": out,
        "save_every": save_every,
        "run_settings": run_settings,
        "overwrite": overwrite,
        **where,
    }
