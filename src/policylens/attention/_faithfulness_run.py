"""``run_faithfulness``: the faithfulness tests of a policy over episodes, as a run that the report reads.

For the first keyframe of every episode (through the episode feed, so ``camera_map`` applies) and
each of ``layers``' prefix maps (mean over heads): the action change (scale-invariant MSE of the
motion) when the ``high`` / ``low`` / ``shifted`` / ``random`` areas (equal area, ``area`` of each
frame) or the ``whole`` view are filled with the frame's mean colour, with identical flow noise, the
noise floor (other noise, nothing masked), and the deletion curves (patches removed most- vs
least-attended first, area under the change). Rows: one per (model, layer), each condition's mean
over episodes with its 95% bootstrap interval resampling episodes. Tests: high vs random / noise
floor / low and most- vs least-first deletion as paired sign-flip tests, Holm-corrected over every
test. ``control``: the same architecture with fresh random weights (Adebayo et al.'s sanity check;
TinyVLA only: other policies are not rebuilt). Writes ``OUT/faithfulness.json`` ``{"rows", "tests",
"note"}``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._faithfulness import deletion_curve, faithfulness
from ._stats import bootstrap_ci, holm, paired_bootstrap_diff

__all__ = ["faithfulness_tables", "run_faithfulness"]

CONDITIONS = ("high", "low", "shifted", "random", "whole", "noise floor")
AUC = ("deletion AUC, most-attended first", "deletion AUC, least-attended first")
PAIRS = (("high", "random"), ("high", "noise floor"), ("high", "low"), AUC)


def _keyframes(model: nn.Module, episodes: Sequence, camera_map) -> dict:
    """The first frame of every episode, as :func:`faithfulness` takes them."""
    from ..data import EpisodeFeed

    feed = EpisodeFeed(model, episodes, camera_map)
    frames = [feed.frames(e, [0]) for e in range(len(episodes))]
    images = {c: np.concatenate([f[c] for f in frames]) for c in feed.policy_cameras}
    state = np.concatenate([feed.states(e, [0]) for e in range(len(episodes))])
    return {"images": images, "instructions": [ep.instruction for ep in episodes], "state": state}


def _randomised(model: nn.Module) -> nn.Module | None:
    """The same TinyVLA architecture with fresh random weights (normalisation statistics kept); None
    for other policies."""
    from .. import models

    if type(model).__name__ != "TinyVLA":
        return None
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        twin = models.TinyVLA(model.config).eval()
    for name in ("state_mean", "state_std", "action_mean", "action_std"):
        getattr(twin, name).copy_(getattr(model, name))
    return twin


def _measure(model, frames: dict, layer: int, area: float, n_random: int, batch: int) -> dict[str, np.ndarray]:
    """Per keyframe (B,) scale-invariant MSE per condition and deletion AUCs, batch by batch."""
    from ._extract import extract_attention

    out: dict[str, list] = {}
    for start in range(0, len(frames["instructions"]), batch):
        part = {
            "images": {c: v[start : start + batch] for c, v in frames["images"].items()},
            "instructions": frames["instructions"][start : start + batch],
            "state": frames["state"][start : start + batch],
        }
        res = faithfulness(model, part, layer, fills=("mean",), n_random=n_random, area_frac=area)
        images = {c: torch.from_numpy(v) for c, v in part["images"].items()}
        inputs = model.make_batch(images, part["instructions"], torch.from_numpy(part["state"]))
        maps = extract_attention(model, inputs, [layer], ["prefix"])[("prefix", layer)].maps
        grids = {c: m.float().mean(1).numpy() for c, m in maps.items()}  # (B, rows, cols), mean over heads
        for order, name in zip(("most", "least"), AUC, strict=True):
            out.setdefault(name, []).append(deletion_curve(model, part, grids, order=order, steps=8).auc)
        for (_view, _fill, cond), change in res.changes.items():
            if not cond.startswith("random_"):
                out.setdefault(cond, []).append(change["si_mse"])
        out.setdefault("noise floor", []).append(res.noise_floor["si_mse"])
    return {k: np.concatenate(v) for k, v in out.items()}


def _interval(values: np.ndarray, n_boot: int) -> dict:
    ci = bootstrap_ci(values, n_boot=n_boot, rng=0)
    return {"estimate": ci.estimate, "low": ci.low, "high": ci.high}


def run_faithfulness(
    policy, episodes: str, out: str | Path, layers: Sequence[int] = (1, 3), area: float = 0.1, n_random: int = 5,
    batch: int = 8, camera_map: dict | None = None, control: bool = True, n_boot: int = 2000, progress: bool = True,
) -> dict:  # fmt: skip
    """Run the faithfulness tests (module docstring) of ``policy`` (a name, checkpoint or module) on
    ``episodes`` and write ``OUT/faithfulness.json``; returns its content."""
    from tqdm import tqdm

    from ..data import open_episodes
    from ..models import load_model

    model = load_model(policy).eval() if isinstance(policy, (str, Path)) else policy.eval()
    eps = open_episodes(episodes)
    if len(eps) < 2:
        raise ValueError(f"episodes {episodes!r} hold {len(eps)} episode(s); intervals over episodes need 2 or more")
    if not 0 < area <= 1 or n_random < 1 or batch < 1 or not layers:
        raise ValueError(f"area={area} must be in (0, 1], n_random={n_random} and batch={batch} >= 1, layers non-empty")
    from ..tap import resolve_taps, tap_name

    try:
        resolve_taps(model, [tap_name("llm", int(li), "attn.probs") for li in layers])
    except KeyError as exc:
        raise ValueError(f"layers={list(layers)}: {exc.args[0]}") from None
    frames = _keyframes(model, eps, camera_map or {})
    policies = [("trained", model)]
    twin = _randomised(model) if control else None
    if twin is not None:
        policies.append(("random weights", twin))
    rows, tests = [], []
    jobs = [(label, m, int(layer)) for label, m in policies for layer in layers]
    for label, m, layer in tqdm(jobs, desc="faithfulness", disable=not progress):
        per = _measure(m, frames, layer, area, n_random, batch)
        row = {"model": label, "layer": layer, "phase": "prefix"}
        row |= {k: _interval(per[k], n_boot) for k in (*CONDITIONS, *AUC)}
        rows.append({**row, "n_episodes": len(eps), "n_frames": len(eps)})
        for first, other in PAIRS:
            d = paired_bootstrap_diff(per[first], per[other], n_boot=n_boot, rng=0)
            tests.append({"model": label, "layer": layer, "comparison": f"{first} − {other}",
                          "difference": {"diff": d.diff, "low": d.low, "high": d.high, "p_value": d.p_value},
                          "n_episodes": len(eps), "n_frames": len(eps)})  # fmt: skip
    for t, p in zip(tests, holm([t["difference"]["p_value"] for t in tests]), strict=True):
        t["p (Holm)"] = f"{p:.3g}"
    note = (f"First keyframe of each of {len(eps)} episodes; prefix map (mean over heads); {area:.0%} of each frame "
            "filled with its mean colour, identical flow noise; scale-invariant MSE of the motion, mean over episodes "
            "[95% bootstrap interval resampling episodes].")  # fmt: skip
    if control and twin is None:
        note += f" No randomised-weights control: it is built for TinyVLA only, not {type(model).__name__}."
    result = {"rows": rows, "tests": tests, "note": note, "policy": str(policy) if isinstance(policy, (str, Path))
              else type(policy).__name__}  # fmt: skip
    Path(out).mkdir(parents=True, exist_ok=True)
    Path(out, "faithfulness.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def _fmt(v) -> str:
    if isinstance(v, dict) and "estimate" in v:
        return f"{v['estimate']:.4f} [{v['low']:.4f}, {v['high']:.4f}]"
    if isinstance(v, dict) and "diff" in v:
        return f"{v['diff']:+.4f} [{v['low']:+.4f}, {v['high']:+.4f}], p={v['p_value']:.3g}"
    return str(v)


def faithfulness_tables(result: dict) -> str:
    """Markdown: the rows (one per model and layer, the conditions as columns) and the tests."""
    cols = ["model", "layer", *CONDITIONS, *AUC, "n_episodes"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "—")) for c in cols) + " |" for r in result["rows"]]
    tcols = ["model", "layer", "comparison", "difference", "p (Holm)", "n_episodes"]
    lines += ["", "| " + " | ".join(tcols) + " |", "|" + "---|" * len(tcols)]
    lines += ["| " + " | ".join(_fmt(t.get(c, "—")) for c in tcols) + " |" for t in result["tests"]]
    return "\n".join(lines)
