"""Check policylens's LeRobot v3.0 reader and writer against the real ``lerobot`` package.

``lerobot`` cannot be a dependency of policylens (it pins torch and transformers), so it lives in its
own virtual environment and this script calls that interpreter in subprocesses::

    python -m venv /tmp/lerobot_venv && /tmp/lerobot_venv/bin/pip install lerobot==0.4.4
    python scripts/lerobot_interop.py [--out WORKDIR] [--lerobot-python /tmp/lerobot_venv/bin/python]

Forward: policylens writes a small simulated dataset; ``lerobot.datasets.lerobot_dataset.LeRobotDataset``
(``video_backend="pyav"``) loads it and dumps every frame (actions, state, indices, timestamps, task strings,
decoded video frames, segmentation masks, metadata); policylens's ``open_dataset`` reads the same dataset and
the two are compared. Reverse: real ``lerobot`` writes a tiny dataset (``LeRobotDataset.create``,
``add_frame``, ``save_episode``, ``finalize``; one video camera, state, action) which policylens reads and
compares with what lerobot wrote and with what lerobot reads back. Numbers and strings must match exactly
(timestamps to 1e-6 s); decoded video only to a small per-frame tolerance on channel means. Dumps are ``.npz``
files loaded with ``allow_pickle=False``. Stats: policylens's ``meta/stats.json`` must hold the same stat names
(min, max, mean, std, count, q01..q99) for every feature, and ``meta/episodes`` the same per-episode
``stats/<feature>/<stat>`` columns with the same types as lerobot writes; lerobot's QUANTILES normalization (pi05's
default) must run on policylens's stats, and lerobot's ``delete_episodes`` must rebuild a full ``stats.json`` from
the per-episode columns. Exits 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DEFAULT_PY = "/tmp/lerobot_venv/bin/python"
VENV_HINT = "python -m venv /tmp/lerobot_venv && /tmp/lerobot_venv/bin/pip install lerobot==0.4.4"
FPS, SIZE = 10, 64
THEIR_EPISODES = [(12, "pick up the red cube"), (9, "push the blue block left")]
DECODE_TOL = 1.0  # max |channel mean| difference per frame, 0..255, between two decodes of one file
SOURCE_TOL = 6.0  # same, decoded frame vs the frame handed to the lossy encoder


# ---- run inside the lerobot venv (numpy + lerobot only) -------------------------------------------------


def lerobot_read(root: Path, dump: Path) -> None:
    """Load ``root`` with the real LeRobotDataset and save every frame's values."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset("local/interop", root=root, video_backend="pyav")
    items = [ds[i] for i in range(len(ds))]
    out = {"task": np.array([it["task"] for it in items])}
    for key in items[0]:
        if key == "task":
            continue
        vals = np.stack([it[key].numpy() for it in items])
        if key in ds.meta.camera_keys:  # float (C, H, W) on [0, 1] -> uint8 (H, W, C)
            vals = np.round(vals.transpose(0, 2, 3, 1) * 255).clip(0, 255).astype(np.uint8)
        out[key] = vals
    out["meta.episodes"] = np.array([ds.meta.total_episodes, ds.meta.total_frames, ds.meta.fps])
    out["meta.stats.action.mean"] = np.asarray(ds.meta.stats["action"]["mean"], dtype=np.float64)
    np.savez(dump, **out)


def lerobot_stats(root: Path, dump: Path) -> None:
    """lerobot's own uses of the stats: QUANTILES normalization and ``delete_episodes`` (episode 0)."""
    import torch
    from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
    from lerobot.datasets.dataset_tools import delete_episodes
    from lerobot.datasets.lerobot_dataset import LeRobotDataset
    from lerobot.processor import NormalizerProcessorStep
    from lerobot.processor.converters import create_transition
    from lerobot.processor.core import TransitionKey

    ds = LeRobotDataset("local/interop", root=root, video_backend="pyav")
    shape = {k: tuple(ds.meta.features[k]["shape"]) for k in ("observation.state", "action")}
    features = {
        "observation.state": PolicyFeature(FeatureType.STATE, shape["observation.state"]),
        "action": PolicyFeature(FeatureType.ACTION, shape["action"]),
    }
    quantiles = {FeatureType.STATE: NormalizationMode.QUANTILES, FeatureType.ACTION: NormalizationMode.QUANTILES}
    norm = NormalizerProcessorStep.from_lerobot_dataset(ds, features, quantiles)
    items = [ds[i] for i in range(len(ds))]
    state, action = (torch.stack([it[k] for it in items]) for k in ("observation.state", "action"))
    out = norm(create_transition(observation={"observation.state": state}, action=action))
    deleted = root.parent / f"{root.name}_deleted"
    delete_episodes(ds, [0], output_dir=deleted, repo_id="local/interop_deleted")
    np.savez(
        dump,
        **{
            "action": action.numpy(),
            "observation.state": state.numpy(),
            "normalized.action": out[TransitionKey.ACTION].numpy(),
            "normalized.observation.state": out[TransitionKey.OBSERVATION]["observation.state"].numpy(),
            "deleted.root": np.array(str(deleted)),
        },
    )


def _image(ep: int, t: int) -> np.ndarray:
    """A frame that changes a lot from step to step (a frame offset shows up in the channel means)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    img = np.stack([x * 4, y * 4, np.full_like(x, 40 + 50 * ep)], -1).astype(np.float64)
    img[(abs(y - 8 - 4 * t) < 8) & (abs(x - 32) < 12)] = (255, 255, 255) if t % 2 else (0, 0, 0)
    return img.clip(0, 255).astype(np.uint8)


def lerobot_write(root: Path, dump: Path) -> None:
    """Write a tiny dataset with the real LeRobotDataset and save what was handed to it."""
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    features = {
        "observation.images.front": {
            "dtype": "video",
            "shape": (SIZE, SIZE, 3),
            "names": ["height", "width", "channels"],
        },
        "observation.state": {"dtype": "float32", "shape": (6,), "names": [f"s{i}" for i in range(6)]},
        "action": {"dtype": "float32", "shape": (4,), "names": [f"a{i}" for i in range(4)]},
    }
    ds = LeRobotDataset.create("local/interop", fps=FPS, features=features, root=root, robot_type="sim_arm")
    rng = np.random.default_rng(0)
    cols: dict[str, list] = {k: [] for k in ("action", "observation.state", "observation.images.front", "task")}
    for ep, (length, task) in enumerate(THEIR_EPISODES):
        for t in range(length):
            frame = {
                "observation.state": rng.standard_normal(6).astype(np.float32),
                "action": rng.standard_normal(4).astype(np.float32),
                "observation.images.front": _image(ep, t),
                "task": task,
            }
            for key in cols:
                cols[key].append(frame[key])
            ds.add_frame(frame)
        ds.save_episode()
    ds.finalize()
    out = {k: np.stack(v) for k, v in cols.items()}
    lengths = [n for n, _ in THEIR_EPISODES]
    out["episode_index"] = np.repeat(np.arange(len(lengths)), lengths)
    out["frame_index"] = np.concatenate([np.arange(n) for n in lengths])
    out["index"] = np.arange(sum(lengths))
    np.savez(dump, **out)


# ---- run with the project's python (policylens) ---------------------------------------------------------


def policylens_read(root: Path) -> dict[str, np.ndarray]:
    """What policylens's ``open_dataset`` gives, laid out per frame like the lerobot dump."""
    from policylens.data.lerobot import open_dataset

    ds = open_dataset(root)
    cols: dict[str, list] = {}

    def add(key: str, value) -> None:
        cols.setdefault(key, []).append(np.asarray(value))

    for ep in ds:
        row, n = ep.metadata["episode"], len(ep)
        add("action", ep.actions)
        add("observation.state", ep.state)
        if "observation.proprio" in ds.info["features"]:
            add("observation.proprio", ep.proprio)
        add("episode_index", np.full(n, row["episode_index"]))
        add("frame_index", np.arange(n))
        add("index", row["dataset_from_index"] + np.arange(n))
        add("timestamp", np.arange(n) / ds.fps)
        add("task", [ep.instruction] * n)
        for cam, src in ep.cameras.items():
            add(f"observation.images.{cam}", [src[t] for t in range(n)])
        for cam, src in ep.masks.items():
            add(f"observation.segmentation.{cam}", [src[t][..., None] for t in range(n)])
    out = {k: np.concatenate(v) for k, v in cols.items()}
    out["meta.episodes"] = np.array([len(ds), len(out["action"]), ds.fps])
    out["meta.stats.action.mean"] = out["action"].astype(np.float64).mean(0)
    return out


def compare(direction: str, ref: dict, got: dict, pixel_tol: float) -> list[tuple[str, str, bool, str]]:
    """Rows (direction, key, ok, detail) for every key present in both dumps."""
    rows = []
    for key in sorted(set(ref) & set(got)):
        a, b = np.asarray(ref[key]), np.asarray(got[key])
        if a.shape != b.shape:
            rows.append((direction, key, False, f"shape {b.shape}, expected {a.shape}"))
        elif key.startswith("observation.images."):
            diff = np.abs(a.astype(np.float64).mean((1, 2)) - b.astype(np.float64).mean((1, 2))).max()
            mad = np.abs(a.astype(np.float64) - b).mean()
            rows.append(
                (
                    direction,
                    key,
                    bool(diff <= pixel_tol),
                    f"{len(a)} frames, max channel-mean diff {diff:.3f}, MAD {mad:.3f}",
                )
            )
        elif key == "timestamp":
            err = np.abs(a.astype(np.float64) - b).max()
            rows.append((direction, key, bool(err <= 1e-6), f"{len(a)} values, max |diff| {err:.1e} s"))
        elif key == "meta.stats.action.mean":
            rows.append((direction, key, bool(np.allclose(a, b, rtol=1e-5, atol=1e-6)), f"{a.round(4).tolist()}"))
        else:
            same = bool(np.array_equal(a, b))
            detail = f"{a.shape[0]} values equal" if same else f"{int((a != b).sum())} values differ"
            rows.append((direction, key, same, detail))
    return rows


def _kind(feature: dict) -> str:
    return "image" if feature["dtype"] in ("image", "video") else "int" if feature["dtype"] == "int64" else "float"


def stats_metadata(ours: Path, theirs: Path) -> list[tuple[str, str, bool, str]]:
    """``stats.json`` and the per-episode stats columns hold what lerobot writes, typed as lerobot types them."""
    import pyarrow.parquet as pq

    info, stats, schema = {}, {}, {}
    for name, r in (("ours", ours), ("theirs", theirs)):
        info[name] = json.loads((r / "meta/info.json").read_text())["features"]
        stats[name] = json.loads((r / "meta/stats.json").read_text())
        schema[name] = {f.name: f.type for p in (r / "meta/episodes").glob("*/*.parquet") for f in pq.read_schema(p)}
    names = set(stats["theirs"]["action"])
    bad = [f for f, st in stats["ours"].items() if set(st) != names]
    same_keys = all(set(stats[n]) == set(info[n]) for n in stats)  # lerobot: every feature, index columns included
    ok = not bad and same_keys
    note = f"{len(stats['ours'])} features (all of info.json, as lerobot) x {sorted(names)}"
    rows = [("metadata", "meta/stats.json stat names", ok, note if ok else f"differ for {bad or 'feature set'}")]
    types = {_kind(f): {s: schema["theirs"][f"stats/{k}/{s}"] for s in names} for k, f in info["theirs"].items()}
    want = {f"stats/{k}/{s}": types[_kind(f)][s] for k, f in info["ours"].items() for s in names}
    got = {c: t for c, t in schema["ours"].items() if c.startswith("stats/")}
    wrong = sorted(c for c in want.keys() | got.keys() if want.get(c) != got.get(c))
    note = f"{len(got)} columns ({len(info['ours'])} features x {len(names)} stats), arrow types as lerobot's"
    rows.append(("metadata", "meta/episodes stats columns", not wrong, note if not wrong else f"differ: {wrong[:4]}"))
    return rows


def stats_in_lerobot(ours: Path, used: dict[str, np.ndarray]) -> list[tuple[str, str, bool, str]]:
    """Check lerobot's QUANTILES normalization and ``delete_episodes`` results on policylens's dataset."""
    import pyarrow.parquet as pq

    stats = json.loads((ours / "meta/stats.json").read_text())
    errs, wild = [], []
    for key in ("action", "observation.state"):  # lerobot's formula in float32, eps for q99 == q01
        q01, q99 = (np.asarray(stats[key][q], dtype=np.float32) for q in ("q01", "q99"))
        denom = np.where(q99 == q01, np.float32(1e-8), q99 - q01)
        got, want = used[f"normalized.{key}"], 2 * (used[key] - q01) / denom - 1
        errs.append((np.abs(got - want) / np.maximum(1, np.abs(want))).max())
        wild.append(f"{key} {int((np.abs(got).max(0) > 10).sum())}/{got.shape[1]}")
    worst = float(np.max(errs))  # NaN fails
    note = f"lerobot's NormalizerProcessorStep = 2 (x - q01) / (q99 - q01) - 1 (rel. err {worst:.0e}); dims past"
    note += f" +-10: {', '.join(wild)} (constant within each episode: q01 == q99 after lerobot's aggregation)"
    rows = [("lerobot uses", "QUANTILES normalization", bool(worst < 1e-5), note)]
    new = json.loads((Path(str(used["deleted.root"])) / "meta/stats.json").read_text())
    eps = [r for p in sorted((ours / "meta/episodes").glob("*/*.parquet")) for r in pq.read_table(p).to_pylist()]
    kept = [e for e in eps if e["episode_index"] != 0]
    n = sum(e["length"] for e in kept)
    act = np.concatenate([used["action"][e["dataset_from_index"] : e["dataset_to_index"]] for e in kept])
    q01 = sum(np.asarray(e["stats/action/q01"]) * e["length"] for e in kept) / n
    ok = (
        set(new) == set(stats)
        and all(set(v) == set(stats["action"]) for v in new.values())
        and new["action"]["count"] == [n]
        and np.allclose(new["action"]["mean"], act.mean(0), rtol=1e-5, atol=1e-6)
        and np.allclose(new["action"]["q01"], q01, rtol=1e-9, atol=1e-12)
    )
    note = f"episode 0 deleted: stats.json {len(new)} features, action count {new.get('action', {}).get('count')}"
    return [*rows, ("lerobot uses", "delete_episodes stats.json", bool(ok), note + ", mean and q01 of the rest")]


def run_lerobot(py: str, role: str, root: Path, dump: Path) -> dict[str, np.ndarray]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [py, __file__, "--role", role, "--root", str(root), "--dump", str(dump)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"lerobot subprocess '{role}' failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    with np.load(dump, allow_pickle=False) as z:
        return dict(z)


def check_lerobot(py: str) -> str:
    if not Path(py).is_file():
        raise SystemExit(f"no Python interpreter at {py}; create the lerobot venv with:\n  {VENV_HINT}")
    proc = subprocess.run([py, "-c", "import lerobot; print(lerobot.__version__)"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{py} cannot import lerobot; install it with:\n  {VENV_HINT}\n{proc.stderr[-1000:]}")
    return proc.stdout.strip()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lerobot-python", default=DEFAULT_PY, help=f"python of a venv with lerobot (default {DEFAULT_PY})")
    p.add_argument("--out", type=Path, help="empty work directory (default: a new temporary one)")
    p.add_argument("--episodes", type=int, default=3, help="policylens episodes to generate (default 3)")
    p.add_argument(
        "--role",
        default="driver",
        choices=["driver", "lerobot-read", "lerobot-write", "lerobot-stats"],
        help=argparse.SUPPRESS,
    )
    p.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--dump", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.role == "lerobot-read":
        return lerobot_read(args.root, args.dump) or 0
    if args.role == "lerobot-write":
        return lerobot_write(args.root, args.dump) or 0
    if args.role == "lerobot-stats":
        return lerobot_stats(args.root, args.dump) or 0

    start = time.perf_counter()
    version = check_lerobot(args.lerobot_python)
    work = args.out or Path(tempfile.mkdtemp(prefix="lerobot_interop_"))
    if work.exists() and any(work.iterdir()):
        raise SystemExit(f"--out {work} is not empty; give an empty or new directory")
    print(f"lerobot {version} at {args.lerobot_python}; work directory {work}")

    from policylens.sim.pybullet import generate_episodes

    ours, theirs = work / "ours", work / "theirs"
    generate_episodes("reach", args.episodes, ours, fmt="lerobot", image_size=SIZE, progress=False)
    rows = compare(
        "policylens -> lerobot",
        run_lerobot(args.lerobot_python, "lerobot-read", ours, work / "ours_by_lerobot.npz"),
        policylens_read(ours),
        DECODE_TOL,
    )
    truth = run_lerobot(args.lerobot_python, "lerobot-write", theirs, work / "theirs_written.npz")
    theirs_pl = policylens_read(theirs)
    rows += compare(
        "lerobot -> policylens",
        run_lerobot(args.lerobot_python, "lerobot-read", theirs, work / "theirs_by_lerobot.npz"),
        theirs_pl,
        DECODE_TOL,
    )
    rows += compare("lerobot input -> policylens", truth, theirs_pl, SOURCE_TOL)
    rows += stats_metadata(ours, theirs)
    rows += stats_in_lerobot(ours, run_lerobot(args.lerobot_python, "lerobot-stats", ours, work / "ours_stats.npz"))

    width = max(len(r[0]) + len(r[1]) for r in rows) + 3
    for direction, key, ok, detail in rows:
        print(f"{'WARN' if ok is None else 'PASS' if ok else 'FAIL'}  {f'{direction}: {key}':<{width}} {detail}")
    failed, warned = sum(r[2] is False for r in rows), sum(r[2] is None for r in rows)
    took = time.perf_counter() - start
    print(
        f"{len(rows) - failed - warned}/{len(rows)} passed, {failed} failed, {warned} warnings in {took:.0f} s ({work})"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
