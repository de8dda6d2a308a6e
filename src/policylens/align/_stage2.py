"""Stage 2 of the alignment job: the same small action head on each feature source, in closed loop.

:func:`train_action_head` records scripted-expert episodes of a simulated task with the camera (and,
for ``points``, the depth) the stage-1 stores were extracted from, caches each frame's source inputs
(:meth:`FeatureSource.inputs`: encoder patch grids, or fixed-size clouds) per episode under
``OUT/inputs/`` (a killed run keeps its finished episodes), passes them once through the frozen
source (:meth:`FeatureSource.tokens`, kept in memory as float16), and trains :class:`ActionHead` on
those tokens to predict the expert's next ``horizon`` actions (edge-repeated past the
end) from the tokens, the normalised proprio state and the instruction's multi-hot — never the
privileged object positions. The loop (resume, TensorBoard, checkpoints, signals) is stage 1's:
an interrupted and resumed run equals the uninterrupted one.
The last ``held_out`` share of episodes gives a held-out loss. Under torchrun each rank records its
block of the episodes (all ranks then read them all), trains on its shard of every global batch in
DDP, its mean loss weighed by its share (``_loop``), and rank 0 writes the head and its files.

:func:`evaluate_action_head` rolls the head out in the simulator on evaluation layouts (disjoint
from training ones), encoding every frame online exactly as in training, executing the first
``execute`` actions of each chunk; success with its Wilson 95% interval. :func:`rollout_heads` does
it for several heads side by side and writes each result into its head's directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..runs import (
    Dist,
    claim_run_dir,
    distributed,
    read_checkpoint,
    read_checkpoint_config,
    read_safetensors,
    save_checkpoint,
    shard,
)
from ..sim import ChunkedPolicy
from ..sim.pybullet import EvalResult, SimEnv, evaluate_policy, get_task, layout_seed, record_episode
from ._dataset import ResumableBatchSampler, _Batches, _keep
from ._head import ActionHead, HeadShape
from ._loop import Amp, _loop, first_on_main, group_device, rank_device, scaled, unwrap
from ._sources import SOURCES, WORDS, FeatureSource, instruction_code
from ._train import RETRAIN
from ._train_config import LoopConfig

__all__ = [
    "HEAD_FORMAT",
    "HeadConfig",
    "HeadPolicy",
    "evaluate_action_head",
    "load_action_head",
    "rollout_heads",
    "train_action_head",
]

HEAD_FORMAT = "policylens-align-head-1"
_HEAD_HINT = "pass the --out of a finished `policylens align head` (rerun it to finish a killed run)"


@dataclass
class HeadConfig(LoopConfig):
    """Stage-2 settings: the ``source`` (:data:`SOURCES`), the simulated ``task`` and its expert
    ``episodes`` (``action_noise``: DART noise in metres while the clean action is recorded), the head's
    ``width`` / ``horizon``, actions ``execute``\\ d per chunk in rollouts, the ``held_out`` share."""

    steps: int = 3000
    batch_size: int = 64
    source: str = "rgb"
    task: str = "reach"
    episodes: int = 200
    action_noise: float = 0.02
    width: int = 128
    horizon: int = 8
    execute: int = 4
    held_out: float = 0.1
    eval_every: int = 500
    save_every: int = 500

    def _choices(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return (("source", SOURCES), *super()._choices())

    def __post_init__(self) -> None:
        super().__post_init__()
        get_task(self.task)
        if self.execute > self.horizon:
            raise ValueError(f"HeadConfig.execute={self.execute} exceeds horizon={self.horizon}; lower --execute")
        if not 0 < self.held_out < 1:
            raise ValueError(f"HeadConfig.held_out={self.held_out}; expected 0 < held_out < 1")


class _HeadModel(nn.Module):
    """ActionHead + the normalisation statistics it was trained with (buffers, saved with the weights)."""

    def __init__(self, shape: HeadShape) -> None:
        super().__init__()
        self.head = ActionHead(shape)
        for name, dim in (("proprio", shape.cond_dim - len(WORDS)), ("action", shape.action_dim)):
            self.register_buffer(f"{name}_mean", torch.zeros(dim))
            self.register_buffer(f"{name}_std", torch.ones(dim))

    def cond(self, proprio: Tensor, words: Tensor) -> Tensor:
        return torch.cat([(proprio - self.proprio_mean) / self.proprio_std, words], -1)

    def forward(self, tokens: Tensor, valid: Tensor, proprio: Tensor, words: Tensor) -> Tensor:
        """Normalised action chunk (B, horizon, 7)."""
        return self.head(tokens, valid, self.cond(proprio, words))

    def actions(self, normalised: Tensor) -> Tensor:
        return normalised * self.action_std + self.action_mean


def _chunks(actions: np.ndarray, horizon: int) -> np.ndarray:
    """(T, 7) -> (T, horizon, 7): the next ``horizon`` actions of every step, the last one repeated."""
    idx = np.minimum(np.arange(len(actions))[:, None] + np.arange(horizon)[None], len(actions) - 1)
    return actions[idx]


def _episode_inputs(source: FeatureSource, env: SimEnv, i: int, cfg: HeadConfig, seed: int) -> dict[str, Tensor]:
    rec = record_episode(env, layout_seed(cfg.seed, i), render=True, action_noise=cfg.action_noise)
    cam = source.camera
    frames = rec["images"][cam]
    clouds = None
    if source.needs_depth:
        k, poses = rec["intrinsics"][cam], rec["extrinsics"][cam]
        clouds = [
            source.cloud(rec["depth"][cam][t], frames[t], k, poses[t], np.random.default_rng([seed, i, t]))
            for t in range(len(frames))
        ]
    out = {f"in.{k}": v for k, v in source.inputs(frames, clouds).items()}
    out["proprio"] = torch.from_numpy(np.asarray(rec["proprio"], np.float32))
    out["words"] = torch.from_numpy(np.tile(instruction_code(rec["instruction"]), (len(frames), 1)))
    out["chunk"] = torch.from_numpy(_chunks(np.asarray(rec["actions"], np.float32), cfg.horizon))
    return out


def _collect(source: FeatureSource, cfg: HeadConfig, out: Path, d: Dist | None = None) -> list[dict[str, Tensor]]:
    """Every episode's cached inputs (recorded now, or read back from ``out/inputs``); under torchrun each
    rank records its block of the missing ones, then every rank reads them all."""
    d = d or Dist()
    folder = out / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    size = source.frame_size
    if size[0] != size[1]:
        raise ValueError(f"the stage-1 stores hold {size[0]}x{size[1]} frames; the simulator renders square frames")
    seed = int(source.point_info.get("seed", 0))
    path = lambda i: folder / f"episode_{i:05d}.safetensors"  # noqa: E731
    mine = [i for i in shard(range(cfg.episodes), d.rank, d.world) if not path(i).is_file()]
    if mine:
        with SimEnv(cfg.task, seed=cfg.seed, image_size=size[0], render=True, cameras=(source.camera,)) as env:
            for i in tqdm(mine, desc=f"stage-2 inputs {cfg.source}", disable=not (cfg.progress and d.main)):
                tmp = path(i).with_suffix(".tmp")
                save_file({k: v.contiguous() for k, v in _episode_inputs(source, env, i, cfg, seed).items()}, str(tmp))
                os.replace(tmp, path(i))
    d.barrier()
    fix = f"delete it; the next run writes it again ({folder})"
    return [read_safetensors(path(i), fix=fix) for i in range(cfg.episodes)]


class _Frames(torch.utils.data.Dataset):
    """Every frame of ``episodes`` with its tokens, computed once through the frozen source (float16)."""

    def __init__(self, episodes: list[dict[str, Tensor]], source: FeatureSource, chunk: int = 256) -> None:
        data = {k: torch.cat([e[k] for e in episodes]) for k in episodes[0]}
        inputs = {k[3:]: data.pop(k) for k in list(data) if k.startswith("in.")}
        starts = range(0, len(data["chunk"]), chunk)
        parts = [source.tokens({k: v[i : i + chunk] for k, v in inputs.items()}) for i in starts]
        data["tokens"] = torch.cat([t.half().cpu() for t, _ in parts])
        data["valid"] = torch.cat([v.cpu() for _, v in parts])
        self.data = data

    def __len__(self) -> int:
        return len(self.data["chunk"])

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {k: v[i] for k, v in self.data.items()}

    def get_batch(self, ids: list[int]) -> dict[str, Tensor]:
        return {k: v[ids] for k, v in self.data.items()}


def _loss(model: nn.Module, batch: dict) -> Tensor:
    """The mean squared error of the normalised chunk; ``model`` is the head or its DDP wrapper."""
    head = unwrap(model)
    dev = head.action_mean.device
    b = {k: v.to(dev) for k, v in batch.items() if isinstance(v, Tensor)}
    target = (b["chunk"] - head.action_mean) / head.action_std
    return F.mse_loss(model(b["tokens"].float(), b["valid"], b["proprio"], b["words"]), target)


def train_action_head(
    aligned: str | os.PathLike,
    out: str | os.PathLike,
    config: HeadConfig | None = None,
    *,
    student: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> dict:
    """Stage 2 for one source (module docstring); writes ``out/config.json`` + ``model.safetensors``. Returns
    the loop's result, the held-out loss, the frame counts and this process's ``rank`` of ``world``."""
    cfg, out = config or HeadConfig(), Path(out)
    with distributed(group_device(cfg.device)) as d:
        device = rank_device(cfg.device, d)
        if cfg.batch_size < d.world:
            raise ValueError(
                f"HeadConfig.batch_size={cfg.batch_size} with {d.world} torchrun ranks: each rank reads a share of "
                f"every batch; pass --batch-size >= {d.world} (the global batch)"
            )
        settings = {"aligned": str(aligned), "student": str(student), "config": cfg.settings()}
        first_on_main(d, lambda: claim_run_dir(out, settings, overwrite=overwrite))
        source = FeatureSource(cfg.source, aligned, student, device)
        episodes = _collect(source, cfg, out, d)
        n_held = max(1, round(cfg.held_out * len(episodes)))
        if len(episodes) - n_held < 1:
            raise ValueError(f"HeadConfig.episodes={cfg.episodes}: too few to hold {n_held} out; record more")
        train, held = _Frames(episodes[:-n_held], source), _Frames(episodes[-n_held:], source)
        shape = HeadShape(source.token_dim(), 7 + len(WORDS), cfg.width, horizon=cfg.horizon)
        torch.manual_seed(cfg.seed)
        model = _HeadModel(shape)
        for name in ("proprio", "action"):
            x = train.data["proprio" if name == "proprio" else "chunk"]
            x = x.reshape(-1, getattr(model, f"{name}_mean").numel())
            getattr(model, f"{name}_mean").copy_(x.mean(0))
            getattr(model, f"{name}_std").copy_(x.std(0).clamp_min(1e-3))
        model.to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        amp = Amp(cfg.amp, device)
        gen = torch.Generator().manual_seed(cfg.seed)
        sampler = torch.utils.data.RandomSampler(train, replacement=True, num_samples=10**9, generator=gen)
        batches = ResumableBatchSampler(sampler, cfg.batch_size, False, d.rank, d.world)
        loader = torch.utils.data.DataLoader(_Batches(train), sampler=batches, batch_size=None, collate_fn=_keep)

        def step(m, batch, o, a):
            unwrap(m).train()
            with a.autocast():
                loss = scaled(_loss(m, batch), batch)
            return {"loss": float(loss.detach()), "skipped": float(not a.step(loss, o))}

        held_batch = next(iter(torch.utils.data.DataLoader(held, batch_size=512, shuffle=False)))

        @torch.no_grad()
        def evaluate() -> dict[str, float]:
            model.eval()
            return {"eval/loss": float(_loss(model, held_batch))}

        res = _loop(out, model, opt, amp, step, loader, cfg, evaluate, f"stage-2 head {cfg.source}", d)
        meta = {
            "format": HEAD_FORMAT,
            "aligned": str(aligned),
            "student": None if student is None else str(student),
            "shape": asdict(shape),
            "config": asdict(cfg),
            "frames": {"train": len(train), "held_out": len(held)},
        }
        result = {"step": res["step"], "held_out_loss": evaluate()["eval/loss"], "frames": meta["frames"]}
        if d.main:
            save_checkpoint(model, out, meta)
            (out / "train.json").write_text(json.dumps(result, indent=1) + "\n")
        d.barrier()  # every rank returns once the outputs are written
    return {**res, **result, "out": out, "rank": d.rank, "world": d.world}


class HeadPolicy:
    """A trained head as a chunk predictor for the simulator (``predict_chunk(obs) -> (horizon, 7)``)."""

    def __init__(self, path: str | os.PathLike, device="cpu") -> None:
        meta, state = read_checkpoint(
            path,
            format=HEAD_FORMAT,
            what=f"head={str(path)!r}",
            hint=_HEAD_HINT,
            fix=RETRAIN,
        )
        self.cfg = HeadConfig(**{**meta["config"], "progress": False})
        self.source = FeatureSource(self.cfg.source, meta["aligned"], meta["student"], device)
        self.model = _HeadModel(HeadShape(**meta["shape"]))
        self.model.load_state_dict(state)
        self.model.to(device).eval().requires_grad_(False)
        self.seed, self.episode, self.t, self.env = int(self.source.point_info.get("seed", 0)), -1, 0, None

    def bind(self, env) -> None:
        self.env = env

    def reset(self) -> None:
        self.episode, self.t = self.episode + 1, 0

    @torch.no_grad()
    def predict_chunk(self, obs: dict) -> np.ndarray:
        cam = self.source.camera
        frame, clouds = obs["images"][cam][None], None
        if self.source.needs_depth:
            if self.env is None:
                raise RuntimeError("HeadPolicy on points needs the camera calibration: bind(env) first")
            cal = self.env.calibration()[cam]
            rng = np.random.default_rng([self.seed, 10**6 + self.episode, self.t])
            clouds = [self.source.cloud(obs["depth"][cam], frame[0], cal["intrinsics"], cal["extrinsics"], rng)]
        tokens, valid = self.source.tokens(self.source.inputs(frame, clouds))
        tokens = tokens.half().float()  # as the training tokens were kept
        dev = self.model.action_mean.device
        proprio = torch.as_tensor(obs["proprio"], dtype=torch.float32, device=dev)[None]
        words = torch.from_numpy(instruction_code(obs["instruction"]))[None].to(dev)
        self.t += self.cfg.execute
        return self.model.actions(self.model(tokens, valid, proprio, words))[0].cpu().numpy()


def load_action_head(path: str | os.PathLike, device="cpu") -> ChunkedPolicy:
    """The head at ``path`` as a simulator policy: chunks of ``horizon``, the first ``execute`` run."""
    head = HeadPolicy(path, device)
    return ChunkedPolicy(head, k=head.cfg.execute)


def evaluate_action_head(
    path: str | os.PathLike, episodes: int = 50, seed: int = 0, progress: bool = True, device="cpu"
) -> EvalResult:
    """Closed-loop success of the head at ``path`` on evaluation layouts of its task."""
    policy = load_action_head(path, device)
    head: HeadPolicy = policy.inner
    return evaluate_policy(
        policy,
        head.cfg.task,
        episodes=episodes,
        seed=seed,
        image_size=head.source.frame_size[0],
        render=True,
        cameras=(head.source.camera,),
        progress=progress,
    )


def rollout_heads(
    paths: list[str | os.PathLike],
    *,
    episodes: int = 50,
    seed: int = 0,
    device="cpu",
    progress: bool = True,
) -> list[dict]:
    """:func:`evaluate_action_head` for each head in ``paths``, in order; each result is also written to
    ``rollout_seed{seed}.json`` in its head's directory (episodes, successes, 95% interval, seed).

    Every head's ``config.json`` is read before the first rollout (a wrong path fails at once). Returns
    one row per head: ``path``, ``source``, the :class:`EvalResult` (``result``) and the written
    ``file`` with what it holds (``written``).
    """
    if not paths:
        raise ValueError("rollout_heads: paths is empty; pass the --out of at least one `policylens align head`")
    if episodes < 1:
        raise ValueError(f"rollout_heads: episodes={episodes}; expected at least 1 rollout per head")
    sources = [
        read_checkpoint_config(p, format=HEAD_FORMAT, what=f"head={str(p)!r}", hint=_HEAD_HINT)["config"]["source"]
        for p in paths
    ]
    rows = []
    for path, source in zip(paths, sources, strict=True):
        res = evaluate_action_head(path, episodes=episodes, seed=seed, progress=progress, device=device)
        lo, hi = res.interval
        written = {"episodes": res.n, "successes": res.successes, "interval": [lo, hi], "seed": seed}
        file = Path(path) / f"rollout_seed{seed}.json"
        file.write_text(json.dumps(written, indent=1) + "\n")
        rows.append({"path": str(path), "source": source, "result": res, "file": file, "written": written})
    return rows
