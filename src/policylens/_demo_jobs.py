"""The demo's job steps after the taps: an anchor cache over simulated DROID episodes, and a
BAC speed-up on the reference diffusion policy. Each writes under the demo's output folder."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from rich.console import Console

__all__ = ["demo_bac", "demo_cache"]


def demo_cache(policy: str, out: Path, episodes: int, seed: int, console: Console) -> dict:
    """Write ``episodes`` reach episodes in the DROID layout, then cache the policy's pooled
    ``llm.layers.-2.out`` over every step of them; returns the store's manifest."""
    from .anchors import build_cache
    from .data.sim import generate_episodes
    from .store import verify_store

    droid = out / "episodes"
    generate_episodes("reach", episodes, droid, seed=seed, fmt="droid", image_size=112, progress=False)
    manifest = build_cache(policy, f"droid:{droid}", str(out / "anchors"), batch_size=8, progress=False)
    report = verify_store(out / "anchors")
    console.print(
        f"anchor cache: {manifest['num_samples']} samples ({episodes} DROID episodes) of {manifest['kind']} "
        f"{manifest['meta']['taps']} -> {out / 'anchors'} (verify: {'OK' if report.ok else report.problems})"
    )
    return manifest


@torch.no_grad()
def demo_bac(out: Path, seed: int, calls: int, console: Console) -> dict:
    """Time the shipped diffusion policy uncached and with BAC's uniform schedule (10 of 100
    denoising steps recompute each branch) on the same observations and noise."""
    from .accel import BACConfig, evaluate_mode, random_observations
    from .models import load_model

    policy = load_model("tiny_diffusion_policy")
    obs = random_observations(policy, 1, seed=seed)
    plain = evaluate_mode(policy, None, obs, calls=calls, seed=seed)
    cached = evaluate_mode(policy, BACConfig(mode="uniform", num_updates=10), obs, calls=calls, seed=seed)
    result = {
        "original_ms": plain["median_ms"],
        "uniform_S10_ms": cached["median_ms"],
        "speedup": plain["median_ms"] / cached["median_ms"],
        "action_mse": cached["mse"],
        "calls": calls,
    }
    (out / "bac.json").write_text(json.dumps(result, indent=2) + "\n")
    console.print(
        f"BAC on tiny_diffusion_policy: {plain['median_ms']:.0f} ms -> {cached['median_ms']:.0f} ms per action chunk "
        f"({result['speedup']:.2f}x, uniform schedule S=10, action MSE {cached['mse']:.1e}, median of {calls} calls)"
    )
    return result
