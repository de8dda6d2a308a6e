"""``run_attention``: attention maps of a policy over every keyframe of every episode, as
images, videos and arrays, resumable.

Output (``OUT``)::

    run.json                                    the settings; a rerun with other settings is refused
    {outcome}/{date}/{episode}/
      {frame:05d}/{phase}_L{l}_max.jpg          the layer's most active head, cameras side by side
      {frame:05d}/L{l}_{phase}_heads/head_{h:02d}.jpg
      L{l:02d}_{phase}_max.webm                 the max images over keyframes (VP9)
      L{l:02d}_{phase}_head{h:02d}.mp4          one video per head (H.264)
      attention.zarr/                           float16 maps {phase}_L{l}/{camera} (keyframes, heads, rows,
                                                cols) and mass/{phase}_L{l}/{span} (keyframes, heads)
      overlap.json                              per keyframe: object-overlap metrics (target, distractors,
                                                equal-area random blobs, the object the arm went to)
      done.json                                 written last: frames, keyframes, layers, heads, weights hash
    overlap.json                                the run's overlap per layer / phase / camera / object /
                                                outcome, with 95% bootstrap intervals over episodes

A rerun skips episodes with ``done.json``; a half-written one (no marker) is removed and redone.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ._extract import PHASES, extract_attention
from ._objects import frame_rows, nearest_object, summarize_overlap
from ._render import most_active_head, overlay, save_image
from ._video import write_video

__all__ = ["AttentionRunConfig", "episode_dir", "run_attention"]


@dataclass(frozen=True)
class AttentionRunConfig:
    """What ``run_attention`` computes and draws; recorded in ``run.json``."""

    layers: tuple[int, ...] = (1, 2, 3)
    every: int = 8
    keyframes: tuple[int, ...] | None = None
    phases: tuple[str, ...] = ("prefix", "suffix")
    step: str = "mean"
    heads: bool = True
    videos: bool = True
    render: bool = True
    cmap: str = "jet"
    mode: str = "minmax"
    batch_size: int = 8
    seed: int = 0
    overlap: bool = True
    n_random: int = 10
    camera_map: dict = field(default_factory=dict)  # dataset camera -> policy camera
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"AttentionRunConfig.every={self.every}; keyframes every k >= 1 frames")
        bad = [p for p in self.phases if p not in PHASES]
        if bad:
            raise ValueError(f"AttentionRunConfig.phases: {bad} not in {sorted(PHASES)}")


def episode_dir(out: Path, ep, index: int) -> Path:
    """``OUT/{outcome}/{date}/{episode}`` for one episode."""
    outcome = {True: "success", False: "failure"}.get(ep.success, "unknown")
    droid = ep.layout.startswith("droid")  # DROID folders are <outcome>/<date>/<time>/; LeRobot has none
    date = str(ep.metadata.get("date") or (ep.path.parent.name if droid else "undated"))[:10]
    return out / outcome / date / (ep.path.name if droid else f"episode_{index:06d}")


def _side_by_side(images: list[np.ndarray]) -> np.ndarray:
    h = min(i.shape[0] for i in images)
    rows = [i if i.shape[0] == h else i[:h] for i in images]
    gap = np.full((h, 2, 3), 128, np.uint8)
    return np.concatenate([x for r in rows for x in (r, gap)][:-1], axis=1)


def _check_run(out: Path, settings: dict) -> None:
    settings = json.loads(json.dumps(settings))  # tuples -> lists, as they come back from the file
    run = out / "run.json"
    if run.is_file():
        old = json.loads(run.read_text())
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(
                f"{out} holds an attention run with other settings ({', '.join(diff)} differ); "
                "use a new --out, or the same settings to resume"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        run.write_text(json.dumps(settings, indent=2) + "\n")


def _draw(folder: Path, t: int, key: tuple, frames: dict, frame_maps: dict, best: int, cfg, videos: dict) -> None:
    """The keyframe's images: the most active head, and every head; frames kept for the videos."""
    phase, layer = key
    kw = {"cmap": cfg.cmap, "mode": cfg.mode}
    img = _side_by_side([overlay(frames[c], frame_maps[c][best], **kw) for c in frames])
    save_image(img, folder / f"{t:05d}" / f"{phase}_L{layer}_max.jpg")
    videos.setdefault(f"L{layer:02d}_{phase}_max.webm", []).append(img)
    if cfg.heads:
        for h in range(len(next(iter(frame_maps.values())))):
            tile = _side_by_side([overlay(frames[c], frame_maps[c][h], **kw) for c in frames])
            save_image(tile, folder / f"{t:05d}" / f"L{layer}_{phase}_heads" / f"head_{h:02d}.jpg")
            videos.setdefault(f"L{layer:02d}_{phase}_head{h:02d}.mp4", []).append(tile)


def _write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    import zarr

    group = zarr.open_group(str(path), mode="w")
    for name, value in arrays.items():
        arr = group.create_array(name, shape=value.shape, dtype=value.dtype, chunks=value.shape)
        arr[...] = value


def _episode(model: nn.Module, ep, index: int, out: Path, cfg: AttentionRunConfig, weights: str) -> dict:
    folder = episode_dir(out, ep, index)
    if (folder / "done.json").is_file():
        return json.loads((folder / "done.json").read_text())
    if folder.exists():  # a killed run left it half-written
        shutil.rmtree(folder)
    dataset_name = {policy_cam: data_cam for data_cam, policy_cam in cfg.camera_map.items()}
    cams = {c: ep.find_camera(dataset_name.get(c, c)) for c in model.config.cameras}
    missing = [c for c, n in cams.items() if n is None]
    if missing:
        raise ValueError(
            f"episode {ep.path}: no camera {missing} that the policy reads; it has {list(ep.camera_names)}; "
            "map them with camera_map (--camera-map dataset=policy,...)"
        )
    frames = cfg.keyframes or tuple(range(0, len(ep), cfg.every))
    frames = tuple(t for t in frames if 0 <= t < len(ep))
    arrays: dict[str, list] = {}
    videos: dict[str, list] = {}
    scene = ep.metadata.get("scene") if cfg.overlap else None
    overlap: list[dict] = []
    rng = np.random.default_rng(cfg.seed)
    arm = nearest_object(scene, np.asarray(ep.proprio[-1])) if scene else None
    for start in range(0, len(frames), cfg.batch_size):
        chunk = frames[start : start + cfg.batch_size]
        raw = {c: np.stack([np.asarray(ep.frame(cams[c], t)) for t in chunk]) for c in cams}
        state = torch.as_tensor(np.stack([ep.proprio[t] for t in chunk]), dtype=torch.float32)
        batch = model.make_batch({c: torch.from_numpy(v) for c, v in raw.items()}, [ep.instruction] * len(chunk), state)
        maps = extract_attention(model, batch, cfg.layers, cfg.phases, step=cfg.step, seed=cfg.seed)
        for (phase, layer), m in maps.items():
            key = f"{phase}_L{layer}"
            for c in cams:
                arrays.setdefault(f"{key}/{c}", []).append(m.maps[c].half().numpy())
            for span, v in m.mass.items():
                arrays.setdefault(f"mass/{key}/{span}", []).append(v.half().numpy())
            for b, t in enumerate(chunk):
                heads = {c: m.maps[c][b].numpy() for c in cams}  # (H, rows, cols) per camera
                stacked = np.concatenate([h.reshape(h.shape[0], -1) for h in heads.values()], 1)
                best = most_active_head(stacked[:, None, :])
                frame_maps = {
                    c: [
                        model.image_transform(raw[c][b].shape[:2]).grid_to_frame(torch.from_numpy(h)).numpy()
                        for h in heads[c]
                    ]
                    for c in cams
                }
                for c in cams:
                    seg = ep.mask(cams[c], t) if scene else None
                    if seg is not None:
                        mean_map = np.mean(frame_maps[c], axis=0)  # (H, W) mean over heads
                        for row in frame_rows(mean_map, np.asarray(seg), scene, arm, rng, cfg.n_random):
                            overlap.append({"layer": layer, "phase": phase, "camera": c, "t": t, **row})
                if cfg.render:
                    frames_b = {c: raw[c][b] for c in cams}
                    _draw(folder, t, (phase, layer), frames_b, frame_maps, best, cfg, videos)
    if cfg.videos and cfg.render:
        for name, seq in videos.items():
            write_video(seq, folder / name, fps=2)
    _write_arrays(folder / "attention.zarr", {k: np.concatenate(v) for k, v in arrays.items()})
    if overlap:
        (folder / "overlap.json").write_text(json.dumps(overlap) + "\n")
    done = {
        "episode": str(ep.path),
        "instruction": ep.instruction,
        "success": ep.success,
        "frames": len(ep),
        "keyframes": list(frames),
        "layers": list(cfg.layers),
        "phases": list(cfg.phases),
        "heads": int(m.maps[next(iter(cams))].shape[1]),
        "weights_hash": weights,
        "folder": str(folder),
    }
    (folder / "done.json").write_text(json.dumps(done, indent=2) + "\n")
    return done


_WORKER: dict = {}


def _worker_init(policy: str, episodes: str, out: str, cfg: AttentionRunConfig, weights: str, threads: int) -> None:
    from ..data import open_episodes
    from ..models import load_model

    torch.set_num_threads(threads)
    _WORKER.update(model=load_model(policy).eval(), eps=open_episodes(episodes), out=Path(out), cfg=cfg, w=weights)


def _worker_episode(i: int) -> dict:
    w = _WORKER
    return _episode(w["model"], w["eps"][i], i, w["out"], w["cfg"], w["w"])


def run_attention(
    policy,
    episodes: str,
    out: str | Path,
    config: AttentionRunConfig | None = None,
    progress: bool = True,
    workers: int = 1,
) -> list[dict]:
    """Run the attention job of ``policy`` (a name, checkpoint or module) over ``episodes``
    (``droid:PATH``, ``lerobot:PATH`` or a detected PATH) into ``out``; returns each episode's
    ``done.json`` record. Resumable: rerun the same call after a kill. ``workers`` > 1 runs
    episodes in that many processes (``policy`` must then be a name or checkpoint path); the
    outputs are the same as with one."""
    from tqdm import tqdm

    from ..data import open_episodes
    from ..models import load_model
    from ..store import hash_state_dict

    cfg = config or AttentionRunConfig()
    model = load_model(policy).eval() if isinstance(policy, (str, Path)) else policy.eval()
    for need in ("make_batch", "token_layout", "sample_actions", "image_transform"):
        if not hasattr(model, need):
            raise ValueError(f"run_attention: {type(model).__name__} has no {need}(); the job needs a VLA like TinyVLA")
    out = Path(out)
    weights = hash_state_dict(model)
    eps = open_episodes(episodes)
    _check_run(
        out,
        {
            "policy": str(policy) if isinstance(policy, (str, Path)) else type(policy).__name__,
            "weights_hash": weights,
            **asdict(cfg),
        },
    )
    if workers > 1:
        if not isinstance(policy, (str, Path)):
            raise ValueError("run_attention: workers > 1 loads the policy in each process; pass its name or path")
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        threads = max(1, torch.get_num_threads() // workers)
        init = (str(policy), str(episodes), str(out), cfg, weights, threads)
        with ProcessPoolExecutor(workers, mp.get_context("spawn"), initializer=_worker_init, initargs=init) as pool:
            jobs = pool.map(_worker_episode, range(len(eps)))
            done = list(tqdm(jobs, total=len(eps), desc="attention episodes", disable=not progress))
    else:
        done = [
            _episode(model, ep, i, out, cfg, weights)
            for i, ep in enumerate(tqdm(eps, desc="attention episodes", disable=not progress))
        ]
    if cfg.overlap:
        summarize_overlap(out)
    return done
