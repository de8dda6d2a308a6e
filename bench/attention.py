"""Benchmark the attention job on the reference VLA: extraction cost and bytes kept per keyframe
against plain inference and the usual way, and the pipeline's keyframes per second.

Rows, one run, medians of interleaved rounds (batch of keyframes from simulated reach frames):

- plain ``sample_actions`` (SDPA, nothing captured);
- policylens ``extract_attention``: 3 layers, prefix (text -> image) and suffix (action ->
  image, every flow step), query rows sliced before the copy, float16;
- the usual way: decoder and expert switched to eager with ``output_attentions=True`` in every
  layer, all maps kept (float32).

Then ``run_attention`` end to end over simulated DROID episodes, with and without rendering
(overlays, per-head images, videos), in keyframes per second.

    python bench/attention.py             # ~2 min on 2 CPU cores
    python bench/attention.py --smoke     # seconds: a check, not a figure
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from policylens.attention import AttentionRunConfig, extract_attention, run_attention
from policylens.models import load_model
from policylens.tap import capture


def usual_way(model):
    """An eager copy whose decoder and expert return every layer's attention; returns
    (run(batch) -> bytes kept, the copy)."""
    eager = copy.deepcopy(model)
    kept: list[torch.Tensor] = []
    for gemma in (eager.paligemma.language_model, eager.expert):
        gemma.config._attn_implementation = "eager"
        gemma.register_forward_pre_hook(lambda _m, a, kw: (a, {**kw, "output_attentions": True}), with_kwargs=True)
        gemma.register_forward_hook(lambda _m, _a, out: kept.extend(a.detach().float().cpu() for a in out.attentions))

    def run(batch):
        kept.clear()
        eager.sample_actions(batch, generator=torch.Generator().manual_seed(0))
        return sum(t.numel() * t.element_size() for t in kept)

    return run


def ours_bytes(model, batch, layers) -> int:
    """Bytes the capture keeps for the same maps ``extract_attention`` computes."""
    layout = model.token_layout(batch)
    rows = {"llm": layout["prefix"]["text"].any(0), "expert": layout["suffix"]["action"].any(0)}
    queries = {f"{comp}.layers.{i}.attn.probs": r for comp, r in rows.items() for i in layers}
    with capture(model, list(queries), queries=queries, dtype="float16") as cap:
        model.sample_actions(batch, generator=torch.Generator().manual_seed(0))
    return sum(t.numel() * t.element_size() for n in queries for t in cap.calls(n))


def frames_batch(model, n: int, seed: int):
    from policylens._demo import episode_batch

    return episode_batch(model, n, seed)[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keyframes", type=int, default=8, help="keyframes per batch")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--episodes", type=int, default=4, help="episodes for the pipeline rows")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="pipeline output folder (default: a temporary one)")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes that run in seconds (a check, not a figure)")
    args = ap.parse_args()
    if args.smoke:
        args.keyframes, args.rounds, args.episodes = 2, 1, 1
    torch.set_num_threads(args.threads)
    model = load_model("tiny_vla").eval()
    layers = [1, 2, 3]
    batch = frames_batch(model, args.keyframes, seed=3)
    usual = usual_way(model)
    ways = {
        "plain sample_actions (SDPA)": lambda: model.sample_actions(batch, generator=torch.Generator().manual_seed(0)),
        "policylens extract_attention (3 layers, both phases)": lambda: extract_attention(model, batch, layers),
        "usual way: all layers eager + output_attentions": lambda: usual(batch),
    }
    times = {k: [] for k in ways}
    with torch.no_grad():
        for fn in ways.values():
            fn()  # warm-up
        for _ in range(args.rounds):
            for name, fn in ways.items():
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    kept = {
        "plain sample_actions (SDPA)": 0,
        "policylens extract_attention (3 layers, both phases)": ours_bytes(model, batch, layers),
        "usual way: all layers eager + output_attentions": usual(batch),
    }
    base = statistics.median(times["plain sample_actions (SDPA)"])
    print(
        f"attention extraction, TinyVLA ({model.config.layers} layers, 2 cameras at {model.config.image_size} px, "
        f"{model.config.flow_steps} flow steps), {args.keyframes} keyframes per batch, {torch.get_num_threads()} "
        f"threads, median of {args.rounds} interleaved rounds"
    )
    print(f"{'way':54s} {'ms/keyframe':>12s} {'× plain':>8s} {'KB kept/keyframe':>17s}")
    for name, ts in times.items():
        med = statistics.median(ts)
        kb = kept[name] / 1024 / args.keyframes
        print(f"{name:54s} {1e3 * med / args.keyframes:12.1f} {med / base:8.2f} {kb:17.1f}")
    usual_name = "usual way: all layers eager + output_attentions"
    ours_name = "policylens extract_attention (3 layers, both phases)"
    print(
        f"bytes kept: usual / ours = {kept[usual_name] / kept[ours_name]:.1f}×; "
        f"time: usual / ours = {statistics.median(times[usual_name]) / statistics.median(times[ours_name]):.2f}×"
    )

    from policylens.sim.pybullet import generate_episodes

    root = Path(args.out or tempfile.mkdtemp(prefix="policylens-bench-attention-"))
    generate_episodes("reach", args.episodes, root / "episodes", seed=5, fmt="droid", image_size=112, progress=False)
    print(f"\npipeline over {args.episodes} simulated reach episodes (every 4th frame, layers {layers}):")
    for label, render in (("with rendering (overlays, heads, videos)", True), ("arrays + overlap only", False)):
        cfg = AttentionRunConfig(layers=tuple(layers), every=4, render=render, videos=render)
        start = time.perf_counter()
        done = run_attention(model, f"droid:{root / 'episodes'}", root / f"run_{int(render)}", cfg, progress=False)
        seconds = time.perf_counter() - start
        n = sum(len(d["keyframes"]) for d in done)
        print(f"  {label:42s} {n} keyframes in {seconds:6.1f} s = {n / seconds:5.2f} keyframes/s")
    print(f"outputs: {root}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
