"""Faithfulness evidence for docs/attention.md: does masking the reference VLA's high-attention
area change its action more than equal-area controls and the noise floor, and does a model with
randomised weights (Adebayo et al.'s sanity check) lose that?

For the first keyframe of every episode under ``--episodes`` (the VLA's own rollouts, from
``policylens sim generate --policy tiny_vla``), for each ``--layers`` prefix map: the action change
(scale-invariant MSE of the motion) when the high / low / shifted / random-blob areas (equal area,
``--area`` of the frame) or the whole view are filled with the frame's mean colour, with identical
flow noise, and the noise floor (other noise, nothing masked). Rows: mean over episodes with 95%
bootstrap intervals resampling episodes; high vs random and high vs noise floor as paired sign-flip
tests, Holm-corrected across layers and models; deletion curves (patches removed most- vs
least-attended first, area under the change). Writes ``RUN/faithfulness.json`` for the report.

    python scripts/attention_evidence.py --episodes runs/vla_rollouts --run runs/attn
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from policylens.attention import (
    bootstrap_ci,
    deletion_curve,
    extract_attention,
    faithfulness,
    holm,
    paired_bootstrap_diff,
)
from policylens.data import open_episodes
from policylens.models import TinyVLA, load_model


def keyframes(model, episodes) -> dict:
    """The first frame of every episode, as faithfulness() takes them."""
    cams = list(model.config.cameras)
    images = {c: np.stack([np.asarray(ep.frame(c, 0)) for ep in episodes]) for c in cams}
    state = np.stack([np.asarray(ep.proprio[0], dtype=np.float32) for ep in episodes])
    return {"images": images, "instructions": [ep.instruction for ep in episodes], "state": state}


def randomised(model: TinyVLA) -> TinyVLA:
    """The same architecture with fresh random weights (normalisation statistics kept)."""
    torch.manual_seed(1234)
    twin = TinyVLA(model.config).eval()
    for name in ("state_mean", "state_std", "action_mean", "action_std"):
        getattr(twin, name).copy_(getattr(model, name))
    return twin


def measure(model, frames: dict, layer: int, area: float, n_random: int, batch: int) -> dict[str, np.ndarray]:
    """Per keyframe (B,) scale-invariant MSE per condition, batch by batch."""
    out: dict[str, list] = {}
    n = len(frames["instructions"])
    for start in range(0, n, batch):
        part = {
            "images": {c: v[start : start + batch] for c, v in frames["images"].items()},
            "instructions": frames["instructions"][start : start + batch],
            "state": frames["state"][start : start + batch],
        }
        res = faithfulness(model, part, layer, fills=("mean",), n_random=n_random, area_frac=area)
        images = {c: torch.from_numpy(v) for c, v in part["images"].items()}
        inputs = model.make_batch(images, part["instructions"], torch.from_numpy(part["state"]))
        maps = extract_attention(model, inputs, [layer], ["prefix"])[("prefix", layer)].maps
        grids = {c: m.mean(1).numpy() for c, m in maps.items()}  # (B, rows, cols), mean over heads
        for order in ("most", "least"):
            curve = deletion_curve(model, part, grids, order=order, steps=8)
            out.setdefault(f"deletion AUC, {order}-attended first", []).append(curve.auc)
        for (_view, _fill, cond), change in res.changes.items():
            if not cond.startswith("random_"):
                out.setdefault(cond, []).append(change["si_mse"])
        out.setdefault("noise floor", []).append(res.noise_floor["si_mse"])
    return {k: np.concatenate(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", required=True)
    ap.add_argument("--run", required=True, help="attention run folder: faithfulness.json is written there")
    ap.add_argument("--layers", default="1,3")
    ap.add_argument("--area", type=float, default=0.1)
    ap.add_argument("--n-random", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(2)
    trained = load_model("tiny_vla").eval()
    episodes = open_episodes(args.episodes)
    frames = keyframes(trained, episodes)
    rows, tests = [], []
    for label, model in (("trained", trained), ("random weights", randomised(trained))):
        for layer in (int(v) for v in args.layers.split(",")):
            per = measure(model, frames, layer, args.area, args.n_random, args.batch)
            for cond, values in per.items():
                est, low, high = bootstrap_ci(list(values[:, None]), rng=0)
                rows.append(
                    {
                        "model": label,
                        "layer": layer,
                        "phase": "prefix",
                        "condition": cond,
                        "si_mse": est,
                        "si_mse_low": low,
                        "si_mse_high": high,
                        "n_episodes": len(values),
                        "n_frames": len(values),
                    }
                )
            pairs = [("high", o) for o in ("random", "noise floor", "low")]
            pairs.append(("deletion AUC, most-attended first", "deletion AUC, least-attended first"))
            for first, other in pairs:
                d = paired_bootstrap_diff(list(per[first][:, None]), list(per[other][:, None]), rng=0)
                tests.append(
                    {
                        "model": label,
                        "layer": layer,
                        "comparison": f"{first} - {other}",
                        "diff": d[0],
                        "low": d[1],
                        "high": d[2],
                        "p": d[3],
                        "n_episodes": len(per[first]),
                    }
                )
    for t, p in zip(tests, holm([t["p"] for t in tests]), strict=True):
        t["p_holm"] = float(p)
    Path(args.run, "faithfulness.json").write_text(json.dumps({"rows": rows, "note": "tests: " + json.dumps(tests)}))
    print("| model | layer | condition | scale-invariant MSE [95% CI] | n episodes |\n|---|---|---|---|---|")
    for r in rows:
        ci = f"{r['si_mse']:.4f} [{r['si_mse_low']:.4f}, {r['si_mse_high']:.4f}]"
        print(f"| {r['model']} | {r['layer']} | {r['condition']} | {ci} | {r['n_episodes']} |")
    print("\n| model | layer | comparison | difference [95% CI] | p | p (Holm) |\n|---|---|---|---|---|---|")
    for t in tests:
        ci = f"{t['diff']:+.4f} [{t['low']:+.4f}, {t['high']:+.4f}]"
        print(f"| {t['model']} | {t['layer']} | {t['comparison']} | {ci} | {t['p']:.3g} | {t['p_holm']:.3g} |")


if __name__ == "__main__":
    main()
