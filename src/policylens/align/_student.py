"""Stage 3 of the alignment job: :func:`distill_student` trains an RGB-only student (a small MLP
head on one encoder's patch grid) with :class:`Distiller` to the stage-1 model's 2D embedding at
every patch (the fused tokens; for ``spatial_forcing`` their projection), on the stage-1 training
episodes; its held-out evaluation retrieves the stage-1 point features from the student alone.
The loop, AMP, checkpoints and torchrun ranks are stage 1's (``_loop``): each rank distils its shard of
every global batch, its mean loss weighed by its share, and rank 0 writes every file."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor, nn

from ..runs import claim_run_dir, distributed, read_checkpoint, read_checkpoint_config, save_checkpoint
from ._distill import Distiller
from ._loop import Amp, _loop, first_on_main, group_device, rank_device, scaled, unwrap
from ._train import RETRAIN, AlignModel, _grid, _loaders, _within, load_aligned
from ._train_config import DistillConfig

__all__ = ["STUDENT_FORMAT", "distill_student", "load_student", "load_student_meta"]

STUDENT_FORMAT = "policylens-align-student-1"
DISTILLED = "pass the --out of a finished `policylens align distill`"  # where a student comes from


class _Student(nn.Module):
    def __init__(self, in_dim: int, hidden: int, dim: int, l1_weight: float) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.distiller = Distiller(dim, {"aligned": dim}, l1_weight=l1_weight)

    def forward(self, grid: Tensor, target: Tensor) -> Tensor:
        """The distillation loss of the student on ``grid`` (B·T, N, C) to ``target`` (B·T, N, De)."""
        return self.distiller(self.head(grid), {"aligned": target})[0]


def _distill_step(model: _Student, batch: dict, optimizer, amp: Amp, teacher: AlignModel) -> dict[str, float]:
    """One stage-3 step; ``model`` is the student, or its DDP wrapper under torchrun."""
    unwrap(model).train()
    device = next(model.parameters()).device
    with torch.no_grad():
        target = teacher.patch_embed(batch, device)  # (B·T, N, De)
    with amp.autocast():
        loss = scaled(model(_grid(batch["features"]["student"].to(device), teacher.grid), target), batch)
    applied = amp.step(loss, optimizer)
    return {"loss": float(loss.detach()), "skipped": float(not applied)}


def distill_student(
    aligned: str | os.PathLike,
    features: str | os.PathLike,
    out: str | os.PathLike,
    config: DistillConfig | None = None,
    *,
    overwrite: bool = False,
) -> dict:
    """Stage 3: a student on the patch grids of ``features`` (one ``align extract`` store with the stage-1
    frames) distilled into the stage-1 model at ``aligned``; outputs, resume, refusal, torchrun ranks and the
    result (``rank`` / ``world`` among it) as in stage 1."""
    cfg, out = config or DistillConfig(), Path(out)
    with distributed(group_device(cfg.device)) as d:
        device = rank_device(cfg.device, d)
        amp = Amp(cfg.amp, device)
        teacher = load_aligned(aligned, device)
        feats = {**teacher.meta["features"], "student": str(features)}
        train, held = _loaders(teacher.meta["points"], feats, teacher.cfg, cfg.batch_size, cfg.num_workers, d)
        probe = next(iter(held))
        dim = int(teacher.patch_embed(probe, device).shape[-1])
        meta = {
            "format": STUDENT_FORMAT,
            "aligned": str(aligned),
            "features": str(features),
            "in_dim": int(probe["features"]["student"].shape[-1]),
            "dim": dim,
            "grid": list(teacher.grid),
            "config": asdict(cfg),
        }
        settings = {"aligned": str(aligned), "features": str(features), "config": cfg.settings()}
        first_on_main(d, lambda: claim_run_dir(out, settings, overwrite))
        torch.manual_seed(cfg.seed)
        model = _Student(meta["in_dim"], cfg.hidden, dim, cfg.l1_weight).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

        def step(m, batch, o, a):
            return _distill_step(m, batch, o, a, teacher)

        evaluate = lambda: _student_eval(model, teacher, [probe], device)  # noqa: E731
        res = _loop(out, model, opt, amp, step, train, cfg, evaluate, "distill student", d)
        if d.main:
            save_checkpoint(model, out, meta)
            result = {
                "step": res["step"],
                "skipped": res["skipped"],
                **_student_eval(model, teacher, held, device, True),
            }
            (out / "eval.json").write_text(json.dumps(result, indent=1) + "\n")
        d.barrier()  # every rank returns once the outputs are written
    return {**res, "out": out, "eval": out / "eval.json", "rank": d.rank, "world": d.world}


@torch.no_grad()
def _student_eval(model: _Student, teacher: AlignModel, batches, device, full: bool = False) -> dict:
    """Held-out distillation loss, and within-frame retrieval of the stage-1 point features from the student."""
    model.eval()
    losses, a, b, keys = [], [], [], []
    for batch in batches:
        s = model.head(_grid(batch["features"]["student"].to(device), teacher.grid))
        losses.append(float(model.distiller(s, {"aligned": teacher.patch_embed(batch, device)})[0]))
        p = teacher.pairs(batch, device)
        a.append(model.distiller.adaptors["aligned"](s)[p["frame"], p["patch"]])
        b.append(teacher.embed(p)[1])
        keys.append(p["keys"])
    model.train()
    r = _within(torch.cat(a), torch.cat(b), torch.cat(keys))
    logs = {"eval/loss": sum(losses) / len(losses), "eval/top1_2d3d": r.retrieval["2d->3d"].topk[1]}
    if not full:
        return logs
    return {"held_out_loss": logs["eval/loss"], "summary": r.summary(), "report": r.to_dict()}


def _where(student: str | os.PathLike) -> dict:
    return {"format": STUDENT_FORMAT, "what": f"student={str(student)!r}", "hint": DISTILLED}


def load_student_meta(student: str | os.PathLike) -> dict:
    """The ``config.json`` of a stage-3 student (its format checked, its weights beside it)."""
    return read_checkpoint_config(student, **_where(student))


def load_student(student: str | os.PathLike, device="cpu"):
    """The stage-3 student written by ``distill_student`` (frozen, eval mode)."""
    meta, state = read_checkpoint(student, **_where(student), fix=RETRAIN)
    cfg = meta["config"]
    model = _Student(meta["in_dim"], cfg["hidden"], meta["dim"], cfg["l1_weight"])
    model.load_state_dict(state)
    return model.to(device).eval().requires_grad_(False)
