"""The demo job: tap the reference policy on simulated inputs and report what was captured, then
build an anchor cache and time a BAC speed-up (``_demo_jobs``), ending with where the outputs are."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
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


def _fmt(values) -> str:
    return "[" + ", ".join(f"{float(v):+.3f}" for v in values) + "]"


def episode_batch(model: TinyVLA, n: int, seed: int) -> tuple[dict[str, torch.Tensor], list[np.ndarray], list[str]]:
    """The first observation of ``n`` freshly simulated reach episodes as model inputs, and the
    scripted expert's first action of each."""
    from .data.sim import make_training_episodes

    eps = make_training_episodes(
        "reach",
        n,
        seed=seed,
        render=True,
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
) -> DemoResult:
    """Tap the reference VLA on the first frames of ``batch_size`` simulated reach episodes
    and print what was captured; with ``jobs``, also build an anchor cache over simulated DROID
    episodes and time a BAC speed-up, writing under ``out`` (default: a new temporary folder)."""
    console = console or Console(width=140)
    torch.manual_seed(seed)
    model = load_model(policy)
    if not isinstance(model, TinyVLA):
        raise TypeError(f"run_demo: policy {policy!r} is a {type(model).__name__}; the demo runs a TinyVLA")
    batch, expert, instructions = episode_batch(model, batch_size, seed)
    layout = model.token_layout(batch)
    with torch.no_grad(), capture(model, DEFAULT_TAPS, dtype="float32") as cap:
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
    result = DemoResult(rows=rows, actions=actions, span_counts=counts)
    if jobs:
        from ._demo_jobs import demo_attention, demo_bac, demo_cache, demo_retain

        result.out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="policylens-demo-"))
        result.out.mkdir(parents=True, exist_ok=True)
        result.cache = demo_cache(policy, result.out, episodes=2, seed=seed, console=console)
        result.attention = demo_attention(policy, result.out, console=console)
        result.retain = demo_retain(policy, result.out, steps=3, seed=seed, console=console)
        result.bac = demo_bac(result.out, seed=seed, calls=5, console=console)
        listing = "episodes/, anchors/, attention/report.html, bridge/, retain.json, bac.json"
        console.print(f"outputs: {result.out} ({listing})")
    return result
