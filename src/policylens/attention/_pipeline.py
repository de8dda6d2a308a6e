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
Everything a run can refuse (layers against the policy's layer counts, phases, step, mode,
keyframes, the camera map, every episode's cameras) is checked before ``run.json`` is written, and
a run that fails or is interrupted before it finishes an episode removes its ``run.json`` again, so
a corrected rerun is never refused as "other settings". ``overwrite=True`` replaces the run in OUT.

Under torchrun (``runs.distributed``, gloo: the policy runs on each process's CPU) rank 0 claims OUT
while the others wait, each rank runs its contiguous block of the episodes (``runs.shard``; rank 0
shows the progress bar), and once all have finished rank 0 writes the run's ``overlap.json``; the
outputs are those of one process. ``workers`` > 1 (local processes) is refused under torchrun.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data import EpisodeFeed
from ..runs import Dist, RunDirError, RunKind, claim_run_dir, clear_run_dir, distributed, env_world, shard, weights_hash
from ._extract import PHASES, STEP_MODES, extract_attention
from ._objects import frame_rows, nearest_object, summarize_overlap
from ._render import MODES, most_active_head, overlay, save_image
from ._video import write_video

__all__ = ["RUN_MODES", "AttentionInterrupted", "AttentionRunConfig", "episode_dir", "run_attention"]

# "global" needs one range shared by the maps compared; a run draws its maps one at a time
RUN_MODES = tuple(m for m in MODES if m != "global")
OUTCOMES = ("success", "failure", "unknown")  # the folders episode_dir sorts episodes into
# what run_attention and the report write in OUT (all that overwrite deletes); run.json: the settings, flat, indent 2
_OUTPUTS = ("run.json", "overlap.json", "faithfulness.json", "report.html", "report.md", *OUTCOMES)
ATTENTION_RUN = RunKind("attention", _OUTPUTS, flat=True, indent=2)


class AttentionInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_attention`: ``done`` of ``total`` episodes are finished in ``out``."""

    def __init__(self, done: int, total: int, out: Path) -> None:
        self.done, self.total, self.out = done, total, out
        if done:
            msg = f"{done} of {total} episodes done in {out}; rerun the same command to resume"
        else:
            msg = f"0 of {total} episodes done, nothing kept in {out}; rerun the command to start again"
        super().__init__(msg)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class AttentionRunConfig:
    """What ``run_attention`` computes and draws; recorded in ``run.json``."""

    layers: tuple[int, ...] = (1, 2, 3)
    every: int = 8
    keyframes: tuple[int, ...] | None = None
    phases: tuple[str, ...] = ("prefix", "suffix")
    step: str | int = "mean"  # one of STEP_MODES, or a flow step index
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
        def refuse(name: str, want: str) -> None:
            raise ValueError(f"AttentionRunConfig.{name}={getattr(self, name)!r}: {want}")

        if not self.layers or not all(_is_int(v) for v in self.layers) or len(set(self.layers)) < len(self.layers):
            refuse("layers", "expected layer indices (negative from the end), each once")
        if self.every < 1:
            raise ValueError(f"AttentionRunConfig.every={self.every}; keyframes every k >= 1 frames")
        if self.keyframes is not None and (
            not self.keyframes or not all(_is_int(t) and t >= 0 for t in self.keyframes)
            or len(set(self.keyframes)) < len(self.keyframes)
        ):  # fmt: skip
            refuse("keyframes", "expected frame indices >= 0, each once (or None: every `every` frames)")
        bad = [p for p in self.phases if p not in PHASES]
        if bad or not self.phases or len(set(self.phases)) < len(self.phases):
            refuse("phases", f"expected one or both of {tuple(PHASES)}, each once")
        if not (self.step in STEP_MODES or _is_int(self.step)):
            refuse("step", f"expected one of {STEP_MODES} or a flow step index (negative from the end)")
        if self.mode not in RUN_MODES:
            refuse("mode", f"expected one of {RUN_MODES}")
        if self.batch_size < 1 or self.n_random < 0:
            refuse("batch_size" if self.batch_size < 1 else "n_random", "expected batch_size >= 1, n_random >= 0")
        import matplotlib

        if self.cmap not in matplotlib.colormaps:
            refuse("cmap", "not a matplotlib colour map name (e.g. jet, viridis, inferno)")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in dict(self.camera_map).items()):
            refuse("camera_map", "expected {dataset camera: policy camera} strings")

    def frames_of(self, n: int) -> tuple[int, ...]:
        """The keyframes of an episode of ``n`` frames."""
        frames = self.keyframes or range(0, n, self.every)
        return tuple(t for t in frames if 0 <= t < n)


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


def _check_inputs(model: nn.Module, eps: list, cfg: AttentionRunConfig) -> None:
    """Everything a run can refuse, checked before OUT is touched."""
    from ..tap import resolve_taps, tap_name

    for phase in cfg.phases:
        component = PHASES[phase][0]
        try:
            points = resolve_taps(model, [tap_name(component, li, "attn.probs") for li in cfg.layers])
        except KeyError as exc:
            raise ValueError(f"layers={list(cfg.layers)} ({phase} phase): {exc.args[0]}") from None
        seen: dict[str, int] = {}
        for li, point in zip(cfg.layers, points, strict=True):
            if point.canonical in seen:
                raise ValueError(f"layers={list(cfg.layers)}: {seen[point.canonical]} and {li} are the same "
                                 f"{component} layer; give each layer once")  # fmt: skip
            seen[point.canonical] = li
    n_steps = getattr(model.config, "flow_steps", None)
    if _is_int(cfg.step) and "suffix" in cfg.phases and n_steps and not -n_steps <= cfg.step < n_steps:
        raise ValueError(
            f"step={cfg.step}: the policy samples actions in {n_steps} flow steps; pass 0..{n_steps - 1} "
            f"(or -{n_steps}..-1), or one of {STEP_MODES}"
        )
    EpisodeFeed(model, eps, cfg.camera_map)  # every episode's cameras and state size
    for ep in eps:
        if not cfg.frames_of(len(ep)):
            raise ValueError(
                f"keyframes={list(cfg.keyframes or ())}: episode {ep.path} has {len(ep)} frames and none of them "
                "is a keyframe; pass keyframes below its length (or --every)"
            )


def _finished(out: Path) -> list[Path]:
    """The ``done.json`` markers of the finished episodes in OUT."""
    return sorted(p for o in OUTCOMES for p in (out / o).glob("*/*/done.json"))


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
    feed = EpisodeFeed(model, [ep], cfg.camera_map)
    cams = feed.cameras[0]  # policy camera -> the episode's camera name
    frames = cfg.frames_of(len(ep))
    arrays: dict[str, list] = {}
    videos: dict[str, list] = {}
    scene = ep.metadata.get("scene") if cfg.overlap else None
    overlap: list[dict] = []
    rng = np.random.default_rng(cfg.seed)
    arm = nearest_object(scene, np.asarray(ep.proprio[-1])) if scene else None
    for start in range(0, len(frames), cfg.batch_size):
        chunk = frames[start : start + cfg.batch_size]
        raw = feed.frames(0, chunk)
        batch = feed.batch(0, chunk, frames=raw)
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
        "cameras": list(cams),  # the policy's cameras, left to right in the side-by-side images
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


def _claim(d: Dist, out: Path, settings: dict, overwrite: bool, kind: RunKind = ATTENTION_RUN) -> bool:
    """Rank 0 claims OUT (a run of ``kind``) while the other ranks wait; True: a new run (False: the
    same run, resumed). Rank 0's refusal is raised on every rank."""
    if not d.active:
        return not claim_run_dir(out, settings, overwrite, kind)
    if d.main:
        try:
            claimed = not claim_run_dir(out, settings, overwrite, kind)
        except (ValueError, OSError) as exc:
            d.broadcast(str(exc))
            raise
        d.broadcast(None)
        return claimed
    refused = d.broadcast(None)
    if refused is not None:
        raise RunDirError(refused)
    return False


def run_attention(
    policy,
    episodes: str,
    out: str | Path,
    config: AttentionRunConfig | None = None,
    progress: bool = True,
    workers: int = 1,
    overwrite: bool = False,
) -> list[dict]:
    """Run the attention job of ``policy`` (a name, checkpoint or module) over ``episodes``
    (``droid:PATH``, ``lerobot:PATH`` or a detected PATH) into ``out``; returns each episode's
    ``done.json`` record. Resumable: rerun the same call after a kill; ``overwrite`` replaces a run
    with other settings. ``workers`` > 1 runs episodes in that many processes (``policy`` must
    then be a name or checkpoint path); the outputs are the same as with one. Under torchrun each rank runs
    its block of the episodes and every rank returns all the records (module docstring). Ctrl-C raises
    :class:`AttentionInterrupted`, which says how many episodes are kept."""
    from tqdm import tqdm

    from ..data import open_episodes
    from ..models import load_model

    cfg = config or AttentionRunConfig()
    world = env_world()[1]
    if workers > 1 and world > 1:
        raise ValueError(
            f"run_attention: workers={workers} under torchrun ({world} ranks), which already split the episodes; "
            "pass workers=1 (--workers 1) under torchrun, or run without torchrun"
        )
    if workers > 1 and not isinstance(policy, (str, Path)):
        raise ValueError("run_attention: workers > 1 loads the policy in each process; pass its name or path")
    eps = open_episodes(episodes)
    model = load_model(policy).eval() if isinstance(policy, (str, Path)) else policy.eval()
    for need in ("make_batch", "token_layout", "sample_actions", "image_transform"):
        if not hasattr(model, need):
            raise ValueError(f"run_attention: {type(model).__name__} has no {need}(); the job needs a VLA like TinyVLA")
    _check_inputs(model, eps, cfg)
    out = Path(out)
    weights = weights_hash(model)
    name = str(policy) if isinstance(policy, (str, Path)) else type(policy).__name__
    new_dir = not out.exists()
    settings = {"policy": name, "weights_hash": weights, **asdict(cfg)}
    with distributed(device="cpu") as d:
        claimed = _claim(d, out, settings, overwrite)
        mine = shard(range(len(eps)), d.rank, d.world)  # this rank's episodes (all of them in one process)
        try:
            if workers > 1:
                import multiprocessing as mp
                from concurrent.futures import ProcessPoolExecutor

                threads = max(1, torch.get_num_threads() // workers)
                init = (str(policy), str(episodes), str(out), cfg, weights, threads)
                ctx = mp.get_context("spawn")
                with ProcessPoolExecutor(workers, ctx, initializer=_worker_init, initargs=init) as pool:
                    jobs = pool.map(_worker_episode, mine)
                    done = list(tqdm(jobs, total=len(mine), desc="attention episodes", disable=not progress))
            else:
                desc = "attention episodes" + (f" (rank 0's {len(mine)} of {len(eps)})" if d.active else "")
                with tqdm(mine, desc=desc, disable=not (progress and d.main)) as bar:  # closed on Ctrl-C too
                    done = [_episode(model, eps[i], i, out, cfg, weights) for i in bar]
            done = [r for part in d.all_gather(done) for r in part]  # every rank's, in episode order
            if cfg.overlap and d.main:
                summarize_overlap(out)
            d.barrier()  # every rank returns once the run's files are written
        except BaseException as exc:
            finished = len(_finished(out))
            if claimed and not finished and d.main:  # nothing kept: leave OUT as it was, so a rerun starts afresh
                clear_run_dir(out, ATTENTION_RUN)
                if new_dir and not any(out.iterdir()):
                    out.rmdir()
            if isinstance(exc, KeyboardInterrupt):
                raise AttentionInterrupted(finished, len(eps), out) from exc
            raise
    return done
