"""Does the map land on the object the words name? Per keyframe, against segmentation masks.

For every keyframe, camera, layer and phase with a segmentation mask and a scene description
(simulated episodes: ``Episode.mask(camera, t)`` labels, ``metadata["scene"]`` with
``target_label`` and ``segmentation_labels``), the head-mean map on the frame is scored with
:func:`overlap_metrics` against:

- ``target``: the object the instruction names;
- ``distractor``: every other object (the mean over them);
- ``random``: ``n_random`` random blobs of the target's area (the chance level of that area);
- ``arm_object``: the object nearest the gripper at the episode's last step (where the arm
  went; in failures, the object the policy reached for instead).

``frame_rows`` gives per-frame rows (one episode's ``overlap.json``); ``summarize_overlap``
aggregates a run with 95% bootstrap intervals over episodes, per outcome, with n on every row.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ._overlap import overlap_metrics, random_blobs
from ._stats import bootstrap_ci

__all__ = ["METRICS", "frame_rows", "nearest_object", "summarize_overlap"]

METRICS = ("mass", "area", "ratio", "concentration", "pointing", "iou_topk", "iou_otsu", "background")
OBJECT_LABEL0 = 10  # simulator labels: objects from 10 on (0 background, 1 table, 2 robot, 3 tray)


def nearest_object(scene: dict, xy: np.ndarray) -> int:
    """Label of the scene object whose table position is nearest ``xy`` (the gripper's)."""
    d = [float(np.hypot(*(np.asarray(o["xy"]) - xy[:2]))) for o in scene["objects"]]
    return OBJECT_LABEL0 + int(np.argmin(d))


def frame_rows(attn: np.ndarray, seg: np.ndarray, scene: dict, arm_label: int | None, rng, n_random: int = 10) -> list:
    """Rows ``{"object", metric: value}`` for one (H, W) map and its (H, W) label image."""
    labels = [int(k) for k in scene["segmentation_labels"] if int(k) >= OBJECT_LABEL0]
    union = np.isin(seg, labels)
    target = int(scene["target_label"])
    rows = []

    def add(kind: str, mask: np.ndarray) -> None:
        if mask.any():
            rows.append({"object": kind, **overlap_metrics(attn, mask, top_k="area", objects_union=union | mask)})

    add("target", seg == target)
    others = [overlap_metrics(attn, seg == k, top_k="area", objects_union=union) for k in labels if k != target]
    others = [o for o in others if o["area"] > 0]
    if others:
        rows.append({"object": "distractor", **{m: float(np.mean([o[m] for o in others])) for m in METRICS}})
    area = int((seg == target).sum())
    if area:
        blobs = random_blobs(seg.shape, area, n_random, rng)
        scores = [overlap_metrics(attn, b, top_k="area", objects_union=union | b) for b in blobs]
        rows.append({"object": "random", **{m: float(np.nanmean([s[m] for s in scores])) for m in METRICS}})
    if arm_label is not None:
        add("arm_object", seg == arm_label)
    return rows


def summarize_overlap(out: str | Path, metrics: tuple[str, ...] = ("mass", "ratio", "pointing", "iou_topk")) -> list:
    """Aggregate every episode's ``overlap.json`` under a run folder into ``OUT/overlap.json``
    rows ``{layer, phase, camera, object, outcome, <metric>, <metric>_low, <metric>_high,
    n_episodes, n_frames}``: the mean over episodes of each episode's mean over frames, with a
    95% bootstrap interval resampling episodes; outcome ``all``, ``success``, ``failure``."""
    out = Path(out)
    per: dict[tuple, dict[str, list]] = {}
    for path in sorted(out.rglob("overlap.json")):
        if path.parent == out:
            continue
        done = json.loads((path.parent / "done.json").read_text())
        outcome = {True: "success", False: "failure"}.get(done.get("success"), "unknown")
        episode: dict[tuple, list] = {}
        for r in json.loads(path.read_text()):
            episode.setdefault((r["layer"], r["phase"], r["camera"], r["object"]), []).append(r)
        for key, frames in episode.items():
            for group in ("all", outcome):
                per.setdefault((*key, group), {}).setdefault(path.parent.name, frames)
    rows = []
    for (layer, phase, camera, obj, group), episodes in sorted(per.items(), key=str):
        row = {"layer": layer, "phase": phase, "camera": camera, "object": obj, "outcome": group}
        for m in metrics:
            values = [np.array([f[m] for f in fr if np.isfinite(f[m])]) for fr in episodes.values()]
            values = [v for v in values if v.size]
            if len(values) >= 2:
                est, low, high = bootstrap_ci(values, rng=0)
            else:
                est = low = high = float(np.mean(values[0])) if values else float("nan")
            row.update({m: est, f"{m}_low": low, f"{m}_high": high})
        row.update({"n_episodes": len(episodes), "n_frames": sum(len(f) for f in episodes.values())})
        rows.append(row)
    (out / "overlap.json").write_text(json.dumps(rows, indent=1) + "\n")
    return rows
