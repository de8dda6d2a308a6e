"""``run_ablation``: what the policy really uses — a modality-ablation battery over episodes (open
loop) and in the simulator (closed loop), resumable.

Every camera and the instruction are ablated in turn (:mod:`._ablate_conditions`; ``removed``
through the policy's own missing-camera path, :mod:`._ablate_removal`). Open loop
(:mod:`._ablate_open`): at each keyframe of each episode, how far the action chunk moves against the
policy's own sampling noise, and the decoder layers' attention mass on padding, the sink token, the
instruction and each camera. Closed loop (:mod:`._ablate_closed`): success in the simulator, paired
with the unablated rollouts on the same layouts. The summary (:mod:`._ablate_summary`) gives every
number an interval over episodes and writes a finding only where an interval supports it.

Output (``OUT``; it may be an attention run's folder: nothing of that run is touched)::

    ablation/run.json                       the settings; a rerun with other settings is refused
    ablation/episodes/{index:06d}.json      one episode's open-loop results, written when it finishes
    ablation/closed_loop/{condition}.json   one condition's rollouts (success, length per episode)
    ablation.json                           the summary: conditions, tables with intervals, findings
    ablation.png                            closed-loop success / open-loop change per condition

A rerun with the same settings skips what is written and does the rest; ``overwrite=True``
replaces a run with other settings (only ``ablation/``'s files; the summary is rewritten anyway).

Under torchrun (``runs.distributed``, gloo: the policy runs on each process's CPU) rank 0 claims
``ablation/`` while the others wait; the parts — the open-loop episodes, then the closed-loop
conditions — are split in contiguous blocks (``runs.shard``), each rank writes its parts' files, and
once all have finished every rank reads every part and rank 0 writes the summary and the plot: the
same files as one process.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from ..runs import RunKind, clear_run_dir, distributed, shard, weights_hash
from ._ablate_closed import check_rollout, rollout_condition
from ._ablate_conditions import INSTRUCTION_TARGET, Condition, other_object_instruction, parse_conditions
from ._ablate_open import measure_episode
from ._ablate_removal import removal_unavailable
from ._ablate_summary import plot_ablation, summarize_ablation
from ._pipeline import _claim

__all__ = ["ABLATION_FORMAT", "AblationConfig", "AblationInterrupted", "run_ablation"]

ABLATION_FORMAT = 1
ABLATION_RUN = RunKind("ablation", ("run.json", "episodes", "closed_loop"), flat=True, indent=2)


class AblationInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run_ablation`; what is finished stays in ``out`` for a rerun to resume."""

    def __init__(self, done: int, total: int, out: Path) -> None:
        self.done, self.total, self.out = done, total, out
        super().__init__(f"{done} of {total} parts done in {out}; rerun the same command to resume")


@dataclass(frozen=True)
class AblationConfig:
    """What :func:`run_ablation` ablates and measures; recorded in ``ablation/run.json``."""

    conditions: tuple[str, ...] | None = None  # names, kinds or targets (parse_conditions); None: every one
    layers: tuple[int, ...] | None = None  # decoder layers whose attention is read; None: every layer
    every: int = 8  # a keyframe every N frames
    keyframes: tuple[int, ...] | None = None  # explicit keyframes (override every)
    seed: int = 0  # flow noise of the reference (seed + 1: the noise floor); layouts and noise in closed loop
    origin: str = "auto"  # auto | state | none: how chunks become motions (see resolve_origin)
    batch_size: int = 8  # keyframes per forward
    camera_map: dict = field(default_factory=dict)  # dataset camera -> policy camera
    sim_episodes: int = 0  # closed-loop layouts per condition (0: no closed loop)
    task: str = "reach"
    sim_batch: int = 10  # environments stepped together
    max_steps: int | None = None

    def __post_init__(self) -> None:
        for name, least in (("every", 1), ("batch_size", 1), ("sim_episodes", 0), ("sim_batch", 1)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < least:
                raise ValueError(f"AblationConfig.{name}={v!r}: expected an int >= {least}")
        if self.keyframes is not None and (not self.keyframes or min(self.keyframes) < 0):
            raise ValueError(f"AblationConfig.keyframes={self.keyframes!r}: expected frame indices >= 0")
        if self.origin not in ("auto", "state", "none"):
            raise ValueError(f"AblationConfig.origin={self.origin!r}: expected auto, state or none")

    def frames_of(self, n: int) -> list[int]:
        return [t for t in (self.keyframes or range(0, n, self.every)) if 0 <= t < n]


def _available(model: nn.Module, cond: Condition, cams: list[str]) -> str | None:
    """Why ``cond`` cannot run for ``model`` (None: it can); per-episode reasons are found later."""
    if cond.kind == "removed":
        return removal_unavailable(model, len(cond.cameras(cams)), len(cams))
    return None


def _other_text(eps: list, i: int) -> str | None:
    """Episode ``i``'s instruction naming another object of its scene (simulated episodes record the
    scene), else the next episode's instruction that differs; None when every instruction is the same."""
    ep = eps[i]
    scene = ep.metadata.get("scene") or {}
    objects = scene.get("objects") or []
    if objects and all("colour" in o and "shape" in o for o in objects) and "target" in scene:
        names = [f"{o['colour']} {o['shape']}" for o in objects]
        other = other_object_instruction(ep.instruction, names[int(scene["target"])], names)
        if other is not None:
            return other
    for k in range(1, len(eps)):
        text = eps[(i + k) % len(eps)].instruction
        if text != ep.instruction:
            return text
    return None


def _write(path: Path, value: dict) -> None:
    """Write JSON through a temporary file, so a killed run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value) + "\n")
    os.replace(tmp, path)


def _check(model, cfg, eps) -> None:
    from ..data import EpisodeFeed
    from ..tap import resolve_taps, tap_name

    if eps is None and not cfg.sim_episodes:
        raise ValueError("run_ablation: nothing to do; pass episodes (open loop) and/or sim_episodes > 0 (closed loop)")
    try:
        resolve_taps(model, [tap_name("llm", li, "attn.probs") for li in cfg.layers or ()])
    except KeyError as exc:
        raise ValueError(f"layers={list(cfg.layers or ())}: {exc.args[0]}") from None
    if cfg.sim_episodes:
        from ..sim.pybullet import get_task

        get_task(cfg.task)
        why = check_rollout(model)
        if why:
            raise ValueError(f"sim_episodes={cfg.sim_episodes}: closed loop needs a policy the simulator can roll "
                             f"out: {why}; pass sim_episodes=0 (open loop only)")  # fmt: skip
    if eps is not None:
        if not eps:
            raise ValueError("run_ablation: the episodes hold no episode")
        EpisodeFeed(model, eps, cfg.camera_map)  # every episode's cameras and state size
        short = [i for i, ep in enumerate(eps) if not cfg.frames_of(len(ep))]
        if short:
            raise ValueError(f"keyframes={list(cfg.keyframes or ())}: episode {short[0]} has {len(eps[short[0]])} "
                             "frames and none is a keyframe; pass smaller keyframes (or --every)")  # fmt: skip


def run_ablation(policy, episodes: str | None, out: str | Path, config: AblationConfig | None = None,
                 progress: bool = True, overwrite: bool = False, n_boot: int = 2000) -> dict:  # fmt: skip
    """Ablate ``policy`` (a name, checkpoint or module) over ``episodes`` (``droid:PATH``,
    ``lerobot:PATH``, a PATH, or None for closed loop only) and/or in the simulator; write ``OUT``
    (module docstring) and return the summary (``ablation.json``'s content)."""
    from tqdm import tqdm

    from ..data import EpisodeFeed, open_episodes
    from ..models import load_model

    cfg = config or AblationConfig()
    model = load_model(policy).eval() if isinstance(policy, (str, Path)) else policy.eval()
    for need in ("make_batch", "sample_actions", "token_layout", "config"):
        if not hasattr(model, need):
            raise ValueError(f"run_ablation: {type(model).__name__} has no {need}; the battery needs a VLA policy")
    cams = list(model.config.cameras)
    layers = tuple(cfg.layers if cfg.layers is not None else range(int(model.config.layers)))
    cfg = AblationConfig(**{**asdict(cfg), "layers": layers})
    conds = parse_conditions(cfg.conditions, cams)
    unavailable = {c.name: why for c in conds if (why := _available(model, c, cams))}
    runnable = [c for c in conds if c.name not in unavailable]
    eps = open_episodes(episodes) if episodes is not None else None
    _check(model, cfg, eps)
    out = Path(out)
    root = out / "ablation"
    name = str(policy) if isinstance(policy, (str, Path)) else type(policy).__name__
    settings = {"policy": name, "weights_hash": weights_hash(model), "episodes": episodes, **asdict(cfg)}
    feed = EpisodeFeed(model, eps, cfg.camera_map) if eps is not None else None
    closed_names = ["none", *(c.name for c in runnable)] if cfg.sim_episodes else []
    parts = [("episode", i) for i in range(len(eps or ()))] + [("closed", c) for c in closed_names]
    by_name = {c.name: c for c in runnable}
    with distributed(device="cpu") as d:
        claimed = _claim(d, root, settings, overwrite, ABLATION_RUN)
        mine = shard(parts, d.rank, d.world)  # this rank's parts (all of them in one process)
        try:
            bar = tqdm(mine, desc="ablation parts" + (f" (rank 0's {len(mine)} of {len(parts)})" if d.active else ""),
                       disable=not (progress and d.main))  # fmt: skip
            with bar:
                for kind, what in bar:
                    if kind == "episode":
                        _episode_part(model, feed, eps, what, runnable, layers, cfg, root)
                    else:
                        _closed_part(model, by_name.get(what), what, cfg, root)
            d.barrier()  # every part written
        except BaseException as exc:
            if claimed and d.main and not _written(root):  # nothing kept: a rerun starts afresh
                clear_run_dir(root, ABLATION_RUN)
            if isinstance(exc, KeyboardInterrupt):
                raise AblationInterrupted(_written(root), len(parts), out) from exc
            raise
        records = [json.loads(_episode_path(root, i).read_text()) for i in range(len(eps or ()))]
        closed = {c: json.loads(_closed_path(root, c).read_text()) for c in closed_names}
        ablated = {c.name: c.cameras(cams) for c in runnable}
        summary = summarize_ablation(records, closed, ablated, cams, n_boot=n_boot, seed=cfg.seed)
        conditions = [{"condition": c.name, "available": c.name not in unavailable, "note": unavailable.get(c.name)}
                      for c in conds]  # fmt: skip
        result = {"format": ABLATION_FORMAT, **settings, "cameras": cams, "conditions": conditions, **summary}
        if d.main:
            _write(out / "ablation.json", result)
            plot_ablation(summary, out / "ablation.png")
        d.barrier()  # every rank returns once the summary is written
    return result


def _episode_path(root: Path, i: int) -> Path:
    return root / "episodes" / f"{i:06d}.json"


def _closed_path(root: Path, cname: str) -> Path:
    return root / "closed_loop" / f"{cname.replace(':', '__')}.json"


def _written(root: Path) -> int:
    """Parts whose files are written (episodes and closed-loop conditions)."""
    return sum(len(list((root / sub).glob("*.json"))) for sub in ("episodes", "closed_loop"))


def _episode_part(model, feed, eps, i: int, runnable, layers, cfg: AblationConfig, root: Path) -> None:
    """Episode ``i``'s open-loop record, unless it is written."""
    path = _episode_path(root, i)
    if path.is_file():
        return
    ep, other = eps[i], _other_text(eps, i)
    skip = {c.name: "every episode has the same instruction and no scene" for c in runnable
            if c.kind == "other" and c.target == INSTRUCTION_TARGET and other is None}  # fmt: skip
    if len(ep) < 2:
        skip |= {c.name: "the episode has one frame" for c in runnable if c.kind == "time"}
    run = [c for c in runnable if c.name not in skip]
    rec = measure_episode(model, feed, i, run, layers, cfg.frames_of(len(ep)), seed=cfg.seed,
                          origin=cfg.origin, other_text=other, batch_size=cfg.batch_size)  # fmt: skip
    rec |= {"episode": str(ep.path), "instruction": ep.instruction, "other_instruction": other, "unavailable": skip}
    _write(path, rec)


def _closed_part(model, cond: Condition | None, cname: str, cfg: AblationConfig, root: Path) -> None:
    """Condition ``cname``'s closed-loop rollouts (``none``: unablated), unless they are written."""
    path = _closed_path(root, cname)
    if path.is_file():
        return
    res = rollout_condition(model, cond, cfg.task, cfg.sim_episodes, cfg.seed, cfg.sim_batch, cfg.max_steps,
                            progress=False)  # fmt: skip
    _write(path, {"condition": cname, "task": cfg.task, "seed": cfg.seed, "success": res.episode_success,
                  "length": res.episode_length})  # fmt: skip
