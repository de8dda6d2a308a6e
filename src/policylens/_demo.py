"""The demo job: tap the reference policy on simulated inputs and report what was captured, then
build an anchor cache, draw attention, run retention steps and time a BAC speed-up (``_demo_jobs``),
ending with the time each stage took, the total and where the outputs are.

Sizes are the smallest that still show each job: two reach episodes (only their first frames
rendered for the taps), one attention layer, three retention steps, five timed BAC calls.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from .models import TinyVLA, load_model
from .tap import capture, pool

__all__ = ["DemoResult", "run_demo"]

DEFAULT_TAPS = ("vision.layers.-1.out", "llm.layers.-2.out", "llm.layers.-1.attn.probs", "expert.layers.-1.out")


@dataclass
class DemoResult:
    """What the demo captured: per tap, shape, dtype, calls and a pooled summary."""

    rows: list[dict]
    actions: torch.Tensor
    span_counts: dict[str, list[int]]
    out: Path | None = None
    cache: dict | None = None
    bac: dict | None = None
    retain: dict | None = None
    attention: dict | None = None
    threads: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # stage -> wall seconds, in run order


@contextmanager
def _stage(seconds: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = time.perf_counter() - start


def _fmt(values) -> str:
    return "[" + ", ".join(f"{float(v):+.3f}" for v in values) + "]"


def episode_batch(model: TinyVLA, n: int, seed: int) -> tuple[dict[str, torch.Tensor], list[np.ndarray], list[str]]:
    """The first observation of ``n`` freshly simulated reach episodes as model inputs, and the
    scripted expert's first action of each (only the first frame of each episode is rendered)."""
    from .sim.pybullet import make_training_episodes

    eps = make_training_episodes(
        "reach",
        n,
        seed=seed,
        render=True,
        render_stride=1_000_000,
        image_size=model.config.image_size,
        cameras=model.config.cameras,
        progress=False,
    )
    images = {c: torch.as_tensor(np.stack([e["images"][c][0] for e in eps])) for c in model.config.cameras}
    state = torch.as_tensor(np.stack([e["proprio"][0] for e in eps]))
    batch = model.make_batch(images, [e["instruction"] for e in eps], state)
    return batch, [e["action"][0] for e in eps], [e["instruction"] for e in eps]


def run_demo(
    policy: str = "tiny_vla",
    batch_size: int = 2,
    seed: int = 0,
    console: Console | None = None,
    out: str | Path | None = None,
    jobs: bool = True,
    threads: int | None = None,
) -> DemoResult:
    """Tap the reference VLA on the first frames of ``batch_size`` simulated reach episodes
    and print what was captured; with ``jobs``, also build an anchor cache over simulated DROID
    episodes, draw attention, run retention steps and time a BAC speed-up, writing under ``out``
    (default: a new temporary folder). ``threads``: torch's CPU threads (None: leave them as set);
    the BAC timing runs on one thread either way (see ``demo_bac``)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"run_demo: threads={threads!r}; expected an int >= 1 or None")
    if threads is not None:
        torch.set_num_threads(threads)
    start = time.perf_counter()
    console = console or Console(width=140)
    seconds: dict[str, float] = {}
    console.print(f"torch threads: {torch.get_num_threads()}")
    torch.manual_seed(seed)
    with _stage(seconds, "load policy"):
        model = load_model(policy)
    if not isinstance(model, TinyVLA):
        raise TypeError(f"run_demo: policy {policy!r} is a {type(model).__name__}; the demo runs a TinyVLA")
    with _stage(seconds, "simulate first frames"):
        batch, expert, instructions = episode_batch(model, batch_size, seed)
    layout = model.token_layout(batch)
    with _stage(seconds, "taps"), torch.no_grad(), capture(model, DEFAULT_TAPS, dtype="float32") as cap:
        actions = model.sample_actions(batch, generator=torch.Generator().manual_seed(seed))
    rows = []
    for name in DEFAULT_TAPS:
        calls = cap.calls(name)
        t = calls[-1]
        if name.startswith("llm") and name.endswith(".out"):
            summary = pool(t, layout["prefix"], "mean_image_tokens").norm(dim=-1)
            what = "‖mean image token‖"
        elif name.endswith("probs"):
            image = layout["prefix"]["image"]
            summary = (t.mean(1) * image[:, None, :]).sum(-1).mean(-1)
            what = "attention mass on image tokens"
        else:
            summary = t.float().mean(dim=(1, 2))
            what = "mean activation"
        rows.append(
            {
                "tap": name,
                "shape": tuple(t.shape),
                "dtype": str(t.dtype).removeprefix("torch."),
                "calls": len(calls),
                "summary": [round(float(v), 4) for v in summary.flatten()[:batch_size]],
                "what": what,
            }
        )
    table = Table(title=f"policylens demo: {len(rows)} taps on {type(model).__name__}, batch {batch_size}")
    for col in ("tap", "shape", "dtype", "calls", "per-sample summary"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["tap"], str(r["shape"]), r["dtype"], str(r["calls"]), f"{r['what']}: {r['summary']}")
    console.print(table)
    counts = layout["prefix"].counts()
    console.print("prefix token spans per sample:", {k: v for k, v in counts.items() if k != "pad"})
    for i, text in enumerate(instructions):
        console.print(
            f"episode {i} {text!r}: policy's first action xyz {_fmt(actions[i, 0, :3])}, expert's {_fmt(expert[i][:3])}"
        )
    threads_used = torch.get_num_threads()
    result = DemoResult(rows=rows, actions=actions, span_counts=counts, threads=threads_used, seconds=seconds)
    if jobs:
        from ._demo_jobs import demo_attention, demo_bac, demo_cache, demo_retain

        result.out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="policylens-demo-"))
        result.out.mkdir(parents=True, exist_ok=True)
        with _stage(seconds, "anchor cache"):
            result.cache = demo_cache(policy, result.out, episodes=2, seed=seed, console=console)
        with _stage(seconds, "attention + report"):
            result.attention = demo_attention(policy, result.out, console=console)
        with _stage(seconds, "retention steps"):
            result.retain = demo_retain(policy, result.out, steps=3, seed=seed, console=console)
        with _stage(seconds, "BAC timing"):
            result.bac = demo_bac(result.out, seed=seed, calls=5, console=console)
    total = time.perf_counter() - start
    stages = ", ".join(f"{name} {sec:.1f} s" for name, sec in seconds.items())
    console.print(f"demo took {total:.1f} s after imports ({stages})")
    if result.out is not None:
        listing = "episodes/, anchors/, attention/report.html, bridge/, retain.json, bac.json"
        console.print(f"outputs: {result.out} ({listing})")
    else:
        console.print("outputs: none written (taps only; without --no-jobs the demo also writes its job outputs)")
    return result
