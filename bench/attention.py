"""Benchmark the attention job on the reference VLA: extraction cost and bytes kept per keyframe
against plain inference and the usual way, and the pipeline's keyframes per second.

Two sizes side by side, each with its ratios to plain from the same run: the shipped ``tiny_vla``
(2 cameras at 112 px: a 160-token prefix) and the same architecture at 224 px, patch 14 (2 x 256
image tokens + 32 text tokens: a PaliGemma-size prefix; random weights, only the time matters).
Rows, medians of interleaved rounds (a batch of keyframes from simulated reach frames):

- plain ``sample_actions`` (SDPA, nothing captured);
- policylens ``extract_attention``: 3 layers, prefix (text -> image) and suffix (action ->
  image, every flow step), query rows sliced before the copy, float16;
- the usual way: decoder and expert switched to eager with ``output_attentions=True`` in every
  layer, all maps kept (float32).

Then ``run_attention`` end to end over simulated DROID episodes, with and without rendering
(overlays, per-head images, videos), in keyframes per second.

    python bench/attention.py             # ~3 min on 2 CPU cores
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
from policylens.models import TinyVLA, TinyVLAConfig, load_model
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


WAYS = (
    "plain sample_actions (SDPA)",
    "policylens extract_attention (3 layers, both phases)",
    "usual way: all layers eager + output_attentions",
)


def time_ways(model, keyframes: int, rounds: int, layers: list[int], clock=time.perf_counter) -> tuple[dict, dict]:
    """Per way: the times of ``rounds`` interleaved rounds (after a warm-up) and the bytes kept."""
    batch = frames_batch(model, keyframes, seed=3)
    usual = usual_way(model)
    fns = dict(zip(WAYS, (
        lambda: model.sample_actions(batch, generator=torch.Generator().manual_seed(0)),
        lambda: extract_attention(model, batch, layers),
        lambda: usual(batch),
    ), strict=True))  # fmt: skip
    times = {k: [] for k in fns}
    with torch.no_grad():
        for fn in fns.values():
            fn()  # warm-up
        for _ in range(rounds):
            for name, fn in fns.items():
                start = clock()
                fn()
                times[name].append(clock() - start)
        kept = dict(zip(WAYS, (0, ours_bytes(model, batch, layers), usual(batch)), strict=True))
    return times, kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keyframes", type=int, default=8, help="keyframes per batch (tiny_vla; the 224 px model: half)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--episodes", type=int, default=4, help="episodes for the pipeline rows (0: none)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="pipeline output folder (default: a temporary one)")
    ap.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time, or this process's CPU time (with --threads 1: what others' load on a shared machine "
        "does not inflate)",
    )
    ap.add_argument("--smoke", action="store_true", help="tiny sizes that run in seconds (a check, not a figure)")
    args = ap.parse_args()
    if args.smoke:
        args.keyframes, args.rounds, args.episodes = 2, 1, 1
    torch.set_num_threads(args.threads)
    model = load_model("tiny_vla").eval()
    torch.manual_seed(0)
    big = TinyVLA(TinyVLAConfig(image_size=56 if args.smoke else 224, patch_size=14)).eval()
    layers = [1, 2, 3]
    sizes = {}
    for label, m, n in (
        (f"tiny_vla, {model.config.image_size} px", model, args.keyframes),
        (f"random, {big.config.image_size} px", big, max(1, args.keyframes // 2)),
    ):
        clock = time.process_time if args.clock == "cpu" else time.perf_counter
        sizes[label] = (m, n, *time_ways(m, n, args.rounds, layers, clock))
    print(
        f"attention extraction (layers {layers}, prefix text -> image + suffix action -> image at every one of "
        f"{model.config.flow_steps} flow steps), {torch.get_num_threads()} threads, {args.clock} time, medians of "
        f"{args.rounds} interleaved rounds; ratios to plain from the same run"
    )
    head = "".join(f" | {lbl + ' (prefix ' + str(m.config.prefix_len) + ', B=' + str(n) + ')':>44s}"
                   for lbl, (m, n, _, _) in sizes.items())  # fmt: skip
    print(f"{'way':54s}{head}")
    print(f"{'':54s}" + " | ms/keyframe  × plain  KB kept/keyframe" * len(sizes))
    for name in WAYS:
        cells = []
        for _, n, times, kept in sizes.values():
            med, base = statistics.median(times[name]), statistics.median(times[WAYS[0]])
            cells.append(f" | {1e3 * med / n:11.1f} {med / base:8.2f} {kept[name] / 1024 / n:17.1f}")
        print(f"{name:54s}{''.join(cells)}")
    for label, (_, _, times, kept) in sizes.items():
        over = {w: statistics.median(times[w]) / statistics.median(times[WAYS[0]]) - 1 for w in WAYS[1:]}
        print(
            f"{label}: bytes kept usual / ours = {kept[WAYS[2]] / kept[WAYS[1]]:.1f}×; overhead over plain: ours "
            f"{100 * over[WAYS[1]]:+.0f}%, usual {100 * over[WAYS[2]]:+.0f}%"
        )
    if not args.episodes:
        return

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
