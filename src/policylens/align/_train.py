"""Alignment training, stage 1 (fused RGB patches <-> point features); stage 3 is ``_student``.

Stage 1, :func:`train_alignment`: every encoder's patch grid (resampled to the first encoder's grid
when they differ) goes through :class:`MultiEncoderFusion`; each valid point gathers the fused token
of its patch (the first encoder's ``patch_index``) and meets the :class:`PointProjector` output of
the point. Objectives (``OBJECTIVES``): ``infonce`` — symmetric :class:`InfoNCE`, positives keyed
by (episode, step, patch), so points of one patch are positives of each other; ``spatial_forcing``
— the baseline, :class:`SpatialForcing` (cosine of the MLP-projected 2D tokens to frozen 3D
features at the same patches: the store's per-point features, or a frozen random PointNet of
xyz + rgb when it has none).

Stage 3, :func:`distill_student`: an RGB-only student (a small MLP head on one encoder's patch
grid) is trained with :class:`Distiller` to the stage-1 model's 2D embedding at every patch (the
fused tokens; for ``spatial_forcing`` their projection), on the stage-1 training episodes; its
held-out evaluation retrieves the stage-1 point features from the student alone.

The loop (``_loop``) calls a step function (:func:`align_step`, one optimiser step; pass ``step=`` to
change it) inside ``stop_on_signal``; :class:`Amp` does autocast and skips a step whose loss or
gradients are not finite. ``out`` belongs to one run (``claim_run_dir``): the same settings resume
from ``train_state.*`` (model, optimiser, scaler, skipped count, the place in the data order, every
random state: a resumed run is the uninterrupted one), others are refused. Held-out episodes
(``episode_split``) serve only evaluation: a fixed batch every ``eval_every`` steps (TensorBoard),
and at the end ``eval.json`` / ``eval.md`` (``evaluate_alignment`` and ``ridge_baseline`` on raw
features) and ``similarity_hist.png``.

Under torchrun each rank takes a shard of every global batch and the model is wrapped in DDP
(``_loop``); :meth:`AlignModel.pairs` keeps the rows one process would keep (the ``max_rows`` subset is
drawn over the global batch's rows), InfoNCE gathers them across ranks, and rank 0 writes every file.
The fusion's ``moe`` balance loss and the ``spatial_forcing`` BatchNorm (on CPU; SyncBatchNorm on
CUDA) see only the rank's rows, so those two are not bit-equal to one process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from ..runs import Dist, claim_run_dir, distributed, read_checkpoint, save_checkpoint
from ._dataset import make_loader
from ._distill import SpatialForcing
from ._fusion import FusionConfig, MultiEncoderFusion
from ._infonce import InfoNCE
from ._loop import Amp, StepFn, _loop, first_on_main, group_device, rank_device, scaled, unwrap, world
from ._plots import plot_similarity_hist, retrieval_markdown
from ._points import PointProjector
from ._retrieval import evaluate_alignment
from ._ridge import ridge_baseline
from ._train_config import AlignTrainConfig

__all__ = [
    "AlignModel",
    "Amp",
    "align_step",
    "load_aligned",
    "train_alignment",
]

RETRAIN = "train that run again, or point to another run"  # the fix named when a run's weights are damaged

MODEL_FORMAT = "policylens-align-model-1"


def _grid(x: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, T, Hf, Wf, C) -> (B·T, N, C) on the ``size`` grid (bilinear when it differs), float32."""
    x = x.flatten(0, 1).float()
    if tuple(x.shape[1:3]) != tuple(size):
        x = F.interpolate(x.permute(0, 3, 1, 2), size=size, mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    return x.flatten(1, 2)


class AlignModel(nn.Module):
    """Fusion + point side + objective; ``pairs(batch)`` gives the paired rows both ways."""

    def __init__(self, meta: dict) -> None:
        super().__init__()
        cfg = AlignTrainConfig(**meta["config"])
        self.meta, self.cfg, self.names = meta, cfg, list(meta["encoders"])
        self.grid, point_dim = tuple(meta["grid"]), meta["point_dim"]
        self.fusion = MultiEncoderFusion(FusionConfig(tuple(meta["in_dims"]), cfg.dim, cfg.fusion, cfg.top_k))
        if cfg.objective == "infonce":
            self.points = PointProjector(cfg.dim, feat_dim=point_dim, use_rgb=point_dim is None)
            self.loss = InfoNCE(cfg.temperature)
        else:  # the teacher is frozen: raw per-point features, or a fixed random PointNet
            self.points = None if point_dim else PointProjector(cfg.dim, use_rgb=True).requires_grad_(False)
            self.loss = SpatialForcing(cfg.dim, point_dim or cfg.dim)

    def fuse(self, batch: dict):
        return self.fusion([_grid(batch["features"][k], self.grid) for k in self.names])  # tokens (B·T, N, D)

    def point_side(self, batch: dict, device) -> Tensor:
        """(B·T, P, D3): projector output, or the frozen spatial-forcing teacher."""
        if "point_features" in batch and self.meta["point_dim"]:
            f = batch["point_features"].flatten(0, 1).to(device).float()
            return f if self.points is None else self.points(torch.zeros(*f.shape[:2], 3, device=device), feats=f)
        xyz = batch["xyz"].flatten(0, 1).to(device).float()
        rgb = batch["rgb"].flatten(0, 1).to(device).float()
        rgb = rgb / 255.0 if batch["rgb"].dtype == torch.uint8 else rgb
        valid = batch["valid"].flatten(0, 1).to(device).bool()
        valid = valid | ~valid.any(1, keepdim=True)  # a frame without points: no all -inf max-pool
        return self.points(xyz, rgb=rgb, mask=valid)

    def pairs(self, batch: dict, device, max_rows: int | None = None, gen=None, raw: bool = False) -> dict:
        """Rows of valid points: ``a`` fused 2D tokens (M, D), ``b`` 3D features (M, D3), ``keys`` (M, 3)
        (episode, step, patch), ``fusion`` (FusionOutput); with ``raw`` also ``raw_a`` (the encoders'
        features, concatenated) and ``raw_b`` (point features, or xyz + rgb) for the ridge baseline."""
        feats = {k: v.to(device) for k, v in batch["features"].items()}
        out = self.fuse({"features": feats})
        idx = batch["patch_index"][self.names[0]].flatten(0, 1).to(device)  # (B·T, P)
        ok = batch["patch_valid"][self.names[0]].flatten(0, 1).to(device)
        b = self.point_side(batch, device)  # (B·T, P, D3)
        p = idx.shape[1]
        ep = batch["episode"][:, None, None].expand(-1, batch["step"].shape[1], p).flatten(0, 1).to(device)
        st = batch["step"][..., None].expand(-1, -1, p).flatten(0, 1).to(device)
        rows = ok.nonzero()  # (M, 2): frame, point
        share = None
        if "share" in batch and world() > 1:  # a rank's shard of a global batch
            rows, share = self._rank_rows(rows, batch["share"] == 0, max_rows, gen)
        elif max_rows is not None and len(rows) > max_rows:
            rows = rows[torch.randperm(len(rows), generator=gen)[:max_rows].sort().values.to(device)]
        fi, pi = rows.unbind(1)
        patch = idx[fi, pi]
        res = {"a": out.tokens[fi, patch], "b": b[fi, pi], "fusion": out, "frame": fi, "patch": patch, "share": share}
        res["keys"] = torch.stack([ep[fi, pi], st[fi, pi], patch], -1)  # (M, 3)
        if raw:
            res["raw_a"] = torch.cat([_grid(feats[k], self.grid) for k in self.names], -1)[fi, patch]
            if "point_features" in batch:
                res["raw_b"] = batch["point_features"].flatten(0, 1).to(device).float()[fi, pi]
            else:
                pts = torch.cat([batch["xyz"].float(), batch["rgb"].float()], -1).flatten(0, 1).to(device)
                res["raw_b"] = pts[fi, pi]
        return res

    def _rank_rows(self, rows: Tensor, stand_in: bool, max_rows: int | None, gen) -> tuple[Tensor, float]:
        """This rank's rows of those one process keeps from the global batch (its shard's rows lie at
        its offset there), and their share of them; a stand-in keeps none (InfoNCE: gathered rows would
        change the global batch) or, for spatial forcing, its own rows with share 0."""
        mine = 0 if stand_in else len(rows)
        counts = torch.tensor([mine], device=rows.device)
        every = [torch.zeros_like(counts) for _ in range(world())]
        dist.all_gather(every, counts)
        counts = [int(c) for c in every]
        start, total = sum(counts[: dist.get_rank()]), sum(counts)
        if max_rows is not None and total > max_rows:  # the subset one process draws, from the same generator
            pick = torch.randperm(total, generator=gen)[:max_rows].sort().values
            local = pick[(pick >= start) & (pick < start + mine)] - start
            kept, total = rows[local.to(rows.device)], max_rows
        else:
            kept = rows[:mine]
        if stand_in:
            return (rows[:0] if isinstance(self.loss, InfoNCE) else rows[: max_rows or len(rows)]), 0.0
        return kept, len(kept) / max(total, 1)

    def objective(self, pairs: dict) -> Tensor:
        if isinstance(self.loss, InfoNCE):  # the loss of the rank's rows within the gathered batch
            return self.loss(pairs["a"], pairs["b"], pairs["keys"])
        loss = self.loss(pairs["a"], pairs["b"])  # a mean over the rank's rows
        return loss if pairs.get("share") is None else loss * (world() * pairs["share"])

    def forward(self, batch: dict) -> dict:
        """The step's loss (objective + balance) and its ``pairs``; through DDP under torchrun."""
        device = next(self.parameters()).device
        pairs = self.pairs(batch, device, self.cfg.max_rows, getattr(self, "row_gen", None))
        balance = scaled(self.cfg.balance_weight * pairs["fusion"].balance_loss, batch)
        return {"loss": self.objective(pairs) + balance, "pairs": pairs}

    def patch_embed(self, batch: dict, device) -> Tensor:
        """(B·T, N, De): the 2D embedding at every patch (no points), the stage-3 target."""
        tokens = self.fuse({"features": {k: batch["features"][k].to(device) for k in self.names}}).tokens
        return self.loss.project(tokens) if isinstance(self.loss, SpatialForcing) else tokens

    def embed(self, pairs: dict) -> tuple[Tensor, Tensor]:
        """The aligned rows (2D, 3D) that retrieval compares."""
        a = self.loss.project(pairs["a"]) if isinstance(self.loss, SpatialForcing) else pairs["a"]
        return a.float(), pairs["b"].float()


def align_step(model: AlignModel, batch: dict, optimizer: torch.optim.Optimizer, amp: Amp) -> dict[str, float]:
    """One stage-1 optimisation step; returns the scalars to log (``loss``, ``skipped``, temperature, gates).
    ``model`` is the AlignModel, or its DDP wrapper under torchrun."""
    unwrap(model).train()
    with amp.autocast():
        res = model(batch)
    loss, pairs = res["loss"], res["pairs"]
    applied = amp.step(loss, optimizer)
    logs = {"loss": float(loss.detach()), "skipped": float(not applied), "rows": float(len(pairs["a"]))}
    if isinstance(unwrap(model).loss, InfoNCE):
        logs["temperature"] = unwrap(model).loss.temperature
    return {**logs, **pairs["fusion"].stats.to_log()}


def _feature_map(feature_stores) -> dict[str, str]:
    from ._dataset import _align_info

    if isinstance(feature_stores, Mapping):
        out = {str(k): str(v) for k, v in feature_stores.items()}
    else:
        names = [_align_info(p)["encoder"] for p in feature_stores]
        if len(set(names)) != len(names):
            raise ValueError(f"feature_stores: encoders {names} repeat; pass {{name: path}} to name each store")
        out = {n: str(p) for n, p in zip(names, feature_stores, strict=True)}
    if not out:
        raise ValueError("feature_stores: pass at least one store from `policylens align extract`")
    return out


def _rows(model: AlignModel, batch: dict, device) -> tuple[Tensor, Tensor, Tensor]:
    p = model.pairs(batch, device)
    a, b = model.embed(p)
    return a, b, p["keys"]


def _frames(keys: Tensor) -> Tensor:
    return torch.unique(keys[:, :2], dim=0, return_inverse=True)[1]


def _within(a: Tensor, b: Tensor, keys: Tensor):
    return evaluate_alignment(a, b, pool="within-frame", frames=_frames(keys), keys=keys)


@torch.no_grad()
def _probe(model: AlignModel, batch: dict, device) -> dict[str, float]:
    """Retrieval on the fixed held-out batch, logged every ``eval_every`` steps."""
    model.eval()
    r = _within(*_rows(model, batch, device))
    model.train()
    return {"eval/top1_2d3d": r.retrieval["2d->3d"].topk[1], "eval/top1_3d2d": r.retrieval["3d->2d"].topk[1]}


def _loaders(points, feats: dict, cfg: AlignTrainConfig, batch_size: int, workers: int, d: Dist | None = None):
    """The training loader (this rank's shard of every batch under torchrun) and the held-out one."""
    d = d or Dist()
    if batch_size < d.world:
        raise ValueError(
            f"batch_size={batch_size} with {d.world} torchrun ranks: each rank reads a share of every batch; "
            f"pass --batch-size >= {d.world} (the global batch)"
        )
    kw = {"held_out": cfg.held_out, "window": cfg.window, "seed": cfg.seed, "batch_size": batch_size}
    train = make_loader(points, feats, split="train", num_workers=workers, rank=d.rank, world=d.world, **kw)
    held = make_loader(points, feats, split="held_out", shuffle=False, **kw)
    return train, held


def train_alignment(
    point_store: str | os.PathLike,
    feature_stores: Mapping[str, str | os.PathLike] | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    config: AlignTrainConfig | None = None,
    *,
    step: StepFn | None = None,
    overwrite: bool = False,
) -> dict:
    """Stage 1 on ``point_store`` (``align ingest``) and ``feature_stores`` (``align extract``; a list, named by
    encoder, or {name: path}); everything goes under ``out`` (module docstring). Returns the step reached,
    skipped steps, this call's losses (means over the ranks), the output paths, and this process's ``rank`` of
    ``world`` (torchrun: every rank trains its shard of each batch; rank 0 writes every file)."""
    cfg, out = config or AlignTrainConfig(), Path(out)
    feats = _feature_map(feature_stores)
    with distributed(group_device(cfg.device)) as d:
        device = rank_device(cfg.device, d)
        amp = Amp(cfg.amp, device)
        train, held = _loaders(point_store, feats, cfg, cfg.batch_size, cfg.num_workers, d)
        probe = next(iter(held))
        names = list(feats)
        meta = {
            "format": MODEL_FORMAT,
            "config": asdict(cfg),
            "encoders": names,
            "in_dims": [int(probe["features"][k].shape[-1]) for k in names],
            "grid": list(probe["features"][names[0]].shape[2:4]),
            "point_dim": int(probe["point_features"].shape[-1]) if "point_features" in probe else None,
            "points": str(point_store),
            "features": feats,
            "train_episodes": train.dataset.ds.episodes,
            "held_out_episodes": held.dataset.ds.episodes,
        }
        settings = {"points": str(point_store), "features": feats, "config": cfg.settings()}
        first_on_main(d, lambda: claim_run_dir(out, settings, overwrite))
        torch.manual_seed(cfg.seed)
        model = AlignModel(meta).to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        evaluate = lambda: _probe(model, probe, device)  # noqa: E731
        res = _loop(out, model, opt, amp, step or align_step, train, cfg, evaluate, f"align {cfg.objective}", d)
        if d.main:
            save_checkpoint(model, out, meta)
            train.sampler.split(0, 1)  # the evaluation reads whole batches
            _final_eval(model, train, held, device, cfg, out, {**meta, "step": res["step"], "skipped": res["skipped"]})
        d.barrier()  # every rank returns once the outputs are written
    paths = {"out": out, "eval": out / "eval.json", "hist": out / "similarity_hist.png"}
    return {**res, **paths, "rank": d.rank, "world": d.world}


@torch.no_grad()
def _collect(model: AlignModel, loader, device, limit: int | None = None) -> dict[str, Tensor]:
    model.eval()
    parts: list[dict] = []
    for batch in loader:
        p = model.pairs(batch, device, raw=True)
        a, b = model.embed(p)
        parts.append({"a": a, "b": b, "keys": p["keys"], "raw_a": p["raw_a"], "raw_b": p["raw_b"]})
        if limit is not None and sum(len(x["a"]) for x in parts) >= limit:
            break
    return {k: torch.cat([x[k] for x in parts]).cpu() for k in parts[0]}


def _final_eval(model: AlignModel, train, held, device, cfg: AlignTrainConfig, out: Path, info: dict) -> None:
    """eval.json / eval.md (aligned vs ridge on raw features, held-out episodes) and similarity_hist.png."""
    ev, tr = _collect(model, held, device), _collect(model, train, device, cfg.eval_rows)
    frames = _frames(ev["keys"])
    kw = {"pool": "within-frame", "frames": frames, "keys": ev["keys"]}
    aligned = evaluate_alignment(ev["a"], ev["b"], **kw)
    cross = evaluate_alignment(ev["a"], ev["b"], pool="cross-batch", batch_size=256, keys=ev["keys"])
    eps = tr["keys"][:, 0]
    ridge = ridge_baseline(
        tr["raw_a"], tr["raw_b"], ev["raw_a"], ev["raw_b"], episodes=eps if eps.unique().numel() > 1 else None, **kw
    )
    reports = {f"aligned {cfg.objective}": aligned, **ridge.reports}
    result = {
        **{k: info[k] for k in ("step", "skipped", "train_episodes", "held_out_episodes", "encoders")},
        "objective": cfg.objective,
        "rows": {"held_out": len(ev["a"]), "ridge_train": len(tr["a"])},
        "ridge_lambda": {"2d->3d": ridge.a_to_b.lam, "3d->2d": ridge.b_to_a.lam},
        "summary": {k: r.summary() for k, r in {**reports, "aligned cross-batch": cross}.items()},
        "reports": {k: r.to_dict() for k, r in {**reports, "aligned cross-batch": cross}.items()},
    }
    (out / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "eval.md").write_text(retrieval_markdown({**reports, "aligned cross-batch": cross}))
    plot_similarity_hist(aligned, out / "similarity_hist.png", f"{cfg.objective}, held-out episodes")


def load_aligned(aligned: str | os.PathLike, device: str | torch.device = "cpu") -> AlignModel:
    """The stage-1 model written by :func:`train_alignment` to ``aligned`` (config.json + model.safetensors)."""
    meta, state = read_checkpoint(
        aligned,
        format=MODEL_FORMAT,
        what=f"aligned={str(aligned)!r}",
        hint="pass the --out of a finished `policylens align train` (rerun it to finish a killed run)",
        fix=RETRAIN,
    )
    model = AlignModel(meta)
    model.load_state_dict(state)
    return model.to(device).eval().requires_grad_(False)
