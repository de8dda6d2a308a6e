"""``retain_train``: fine-tune TinyVLA on a new task's episodes through ``train_vla``'s loop, with
a :class:`Retainer` as its step — the anchor cache keeps the teacher's bridge features in
reach. TensorBoard (``OUT/tb``) gets L_act, L_ret, λ, cos(g_act, g_ret), whether the projection
fired, and every ``log_every`` steps cos(Δθ, g_ret)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ._anchors import AnchorSet
from ._retainer import Retainer, RetentionConfig

__all__ = ["RetainTrainConfig", "retain_train", "retention_step"]


@dataclass
class RetainTrainConfig:
    """Optimiser side of a retention run (the retention side is :class:`RetentionConfig`)."""

    steps: int = 300
    batch_size: int = 16
    anchor_batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 1e-4
    warmup: int = 20
    seed: int = 0
    save_every: int = 100
    log_every: int = 10
    clip: float = 1.0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "anchor_batch_size", "save_every", "log_every"):
            if getattr(self, name) <= 0:
                raise ValueError(f"RetainTrainConfig.{name}={getattr(self, name)} must be positive")


def _task_loss(model: nn.Module, batch: dict) -> Tensor:
    return model(**batch)


def retention_step(retainer: Retainer, anchors: AnchorSet, config: RetainTrainConfig):
    """A ``train_vla`` step: anchor batch, the retainer's two passes, clipping, optimiser step."""
    rng = np.random.default_rng(config.seed + 1)
    count = {"steps": 0}

    def step(model: nn.Module, batch: dict, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
        anchor = anchors.sample(config.anchor_batch_size, rng) if retainer.config.method != "plain" else None
        stats = retainer.backward(batch, anchor)
        torch.nn.utils.clip_grad_norm_(retainer.params, config.clip)
        watch = count["steps"] % config.log_every == 0 and retainer.config.method != "plain"
        before = [p.detach().clone() for p in retainer.params] if watch else None
        optimizer.step()
        if before is not None:
            stats["cos_dtheta_ret"] = retainer.alignment(before)
        count["steps"] += 1
        return {"loss": stats.pop("loss_act"), **stats}

    return step


def retain_train(
    policy: str | nn.Module,
    anchors: str | Path,
    episodes: list[dict],
    out: str | Path,
    config: RetainTrainConfig,
    retention: RetentionConfig,
    run_settings: dict | None = None,
    overwrite: bool = False,
) -> dict:
    """Fine-tune ``policy`` (TinyVLA: a name, checkpoint or module) on ``episodes`` (the
    ``train_vla`` format) while retaining the bridge features cached at ``anchors``. Resumable
    (model, optimiser and λ); the final checkpoint and ``retain.json`` (the last λ, its history,
    how often projection fired) in ``out``. Returns that summary."""
    from policylens.models import VLATrainConfig, load_model, train_vla

    torch.manual_seed(config.seed)
    model = load_model(policy) if isinstance(policy, (str, Path)) else policy
    anchor_set = AnchorSet(anchors, model.eval())
    retainer = Retainer(model, _task_loss, anchor_set.student, retention)
    train = VLATrainConfig(
        steps=config.steps,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        warmup=config.warmup,
        seed=config.seed,
        save_every=config.save_every,
        fit_normalization=False,  # the teacher's statistics: its features are the anchor
    )
    settings = {
        **(run_settings or {}),
        "policy": str(policy) if isinstance(policy, (str, Path)) else type(policy).__name__,
        "anchors": str(anchors),
        "retention": asdict(retention),
        "anchor_batch_size": config.anchor_batch_size,
    }
    fired: list[Tensor] = []
    l_ret: list[Tensor] = []
    alignment: list[Tensor] = []  # cos(Δθ, g_ret) every log_every steps
    step = retention_step(retainer, anchor_set, config)

    def counted(model, batch, optimizer):
        stats = step(model, batch, optimizer)
        fired.append(stats["projected"])
        l_ret.append(stats["loss_ret"])
        if "cos_dtheta_ret" in stats:
            alignment.append(stats["cos_dtheta_ret"])
        return stats

    losses = train_vla(
        model, episodes, train, out, run_settings=settings, overwrite=overwrite, step=counted, state=retainer
    )
    tracked = retention.method != "plain"  # plain fine-tuning computes no retention loss
    summary = {
        "steps_run": len(losses),
        "final_loss_act": losses[-1] if losses else None,
        "lambda": retainer.dual.lam,
        "lambda_history": retainer.dual.history,
        "projection_fired": float(torch.stack(fired).float().clamp(max=1).mean()) if fired and tracked else None,
        "final_loss_ret": float(l_ret[-1]) if l_ret and tracked else None,
        "above_epsilon": float((torch.stack(l_ret) > retention.epsilon).float().mean()) if l_ret and tracked else None,
        "cos_dtheta_ret_mean": float(torch.stack(alignment).mean()) if alignment else None,
        "cos_dtheta_ret_positive": float((torch.stack(alignment) > 0).float().mean()) if alignment else None,
        "epsilon": retention.epsilon,
        "method": retention.method,
    }
    (Path(out) / "retain.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
