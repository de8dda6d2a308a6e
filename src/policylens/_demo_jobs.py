"""The demo's job steps after the taps: an anchor cache over simulated DROID episodes, attention
overlays of them with the HTML report, a few retention fine-tuning steps against a bridge cache of
them, and a BAC speed-up on the reference diffusion policy. Each writes under the demo's output
folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

__all__ = ["demo_attention", "demo_bac", "demo_cache", "demo_retain"]


def demo_cache(policy: str, out: Path, episodes: int, seed: int, console: Console) -> dict:
    """Write ``episodes`` reach episodes in the DROID layout, then cache the policy's pooled
    ``llm.layers.-2.out`` over every step of them; returns the store's manifest."""
    from .anchors import build_cache
    from .sim.pybullet import generate_episodes
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


def demo_attention(policy: str, out: Path, console: Console) -> dict:
    """Attention maps of the policy over the demo episodes (layer 2, prefix and suffix, a keyframe
    every 8 steps): overlays, float16 arrays, object overlap, then the HTML / Markdown report."""
    from .attention import AttentionRunConfig, run_attention, write_report

    config = AttentionRunConfig(layers=(2,), every=8, heads=False, videos=False)
    done = run_attention(policy, f"droid:{out / 'episodes'}", out / "attention", config, progress=False)
    html, _ = write_report(out / "attention", n_boot=200, n_perm=500, examples=1)
    keyframes = sum(len(d["keyframes"]) for d in done)
    console.print(
        f"attention: layer 2 text -> image and action -> image maps on {keyframes} keyframes of {len(done)} "
        f"episodes -> {out / 'attention'}; report {html}"
    )
    return {"episodes": len(done), "keyframes": keyframes, "report": str(html)}


def demo_retain(policy: str, out: Path, steps: int, seed: int, console: Console) -> dict:
    """Cache the policy's CRaFT bridge features over the first demo episode, then run ``steps``
    CRaFT steps (two backward passes, A-GEM projection, dual ascent on λ) fine-tuning it on that
    episode's own actions; L_ret starts at 0 up to float rounding (other batches than the build's)."""
    from .anchors import build_cache
    from .models import load_model
    from .retain import AnchorSet, Retainer, RetentionConfig

    episode = sorted(p.parent for p in (out / "episodes").rglob("trajectory.h5"))[0]
    build_cache(policy, f"droid:{episode}", str(out / "bridge"), kind="bridge", batch_size=16, progress=False)
    model = load_model(policy)
    anchors = AnchorSet(out / "bridge", model.eval())
    retainer = Retainer(model, lambda m, b: m(**b), anchors.student, RetentionConfig(epsilon=1e-4, lam_lr=100.0))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(seed)
    history = []
    for _ in range(steps):
        task = anchors.batch(rng.integers(0, len(anchors), 4))
        index = task.pop("sample_index")
        del task["target_features"]
        task["action"] = torch.as_tensor(np.stack(_chunks(anchors.source, index, model.config.chunk_size)))
        stats = retainer.backward(task, anchors.batch(rng.integers(0, len(anchors), 4)))
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        history.append({k: float(v) for k, v in stats.items()})
    (out / "retain.json").write_text(json.dumps(history, indent=2) + "\n")
    first, last = history[0], history[-1]
    console.print(
        f"retention (CRaFT) on {policy}: {steps} steps, L_ret {first['loss_ret']:.1e} -> {last['loss_ret']:.1e}, "
        f"λ {first['lam']:.2f} -> {retainer.dual.lam:.2f}, projection fired on "
        f"{sum(h['projected'] > 0 for h in history)}/{steps} steps"
    )
    return {"history": history, "lambda": retainer.dual.lam}


def _chunks(source, sample_index, horizon: int) -> list:
    """The recorded action chunk at each sample's step (the episode's own actions)."""
    out = []
    for i in sample_index:
        ep, t = source.index[int(i)]
        actions = np.asarray(source.episodes[ep].actions)
        out.append(actions[np.minimum(np.arange(t, t + horizon), len(actions) - 1)].astype(np.float32))
    return out


@torch.no_grad()
def demo_bac(out: Path, seed: int, calls: int, console: Console) -> dict:
    """Time the shipped diffusion policy uncached and with BAC's uniform schedule (10 of 100
    denoising steps recompute each branch) on the same observations and noise.

    Timed on one torch thread, as ``policylens accel eval`` times by default: on a shared machine
    more threads slow this small model several-fold and make the ratio meaningless."""
    from .accel import BACConfig, evaluate_mode, random_observations
    from .models import load_model

    policy = load_model("tiny_diffusion_policy")
    obs = random_observations(policy, 1, seed=seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reference = policy.predict_action(obs, generator=torch.Generator().manual_seed(seed))  # uncached
        plain = evaluate_mode(policy, None, obs, calls=calls, seed=seed, reference=reference, warmup=1)
        uniform = BACConfig(mode="uniform", num_updates=10)
        cached = evaluate_mode(policy, uniform, obs, calls=calls, seed=seed, reference=reference, warmup=1)
    finally:
        torch.set_num_threads(threads)
    result = {
        "original_ms": plain["median_ms"],
        "uniform_S10_ms": cached["median_ms"],
        "speedup": plain["median_ms"] / cached["median_ms"],
        "action_mse": cached["mse"],
        "calls": calls,
        "threads": 1,
    }
    (out / "bac.json").write_text(json.dumps(result, indent=2) + "\n")
    console.print(
        f"BAC on tiny_diffusion_policy: {plain['median_ms']:.0f} ms -> {cached['median_ms']:.0f} ms per action chunk "
        f"({result['speedup']:.2f}x, uniform schedule S=10, action MSE {cached['mse']:.1e}, median of {calls} calls "
        "on 1 torch thread)"
    )
    return result
