"""``Retainer``: the drop-in retention step for any training loop.

Given a task batch and an anchor batch, it runs two separate backward passes (the action loss,
then the retention loss), keeps their gradients in two buffers (accumulated over micro-steps:
projection does not commute with sums), and on the updating micro-step combines them —
A-GEM projection + λ·g_ret for CRaFT — into ``.grad``, ready for clipping and
``optimizer.step()``. Under DDP both passes run under ``no_sync`` and the two buffers are
all-reduced before the projection; L_ret is all-reduced before the λ update. Under fp16 AMP
the buffers are unscaled before projecting and rescaled into ``.grad`` (a non-finite step keeps
its non-finite gradients, so ``GradScaler.step`` skips it, and its λ update is skipped).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ._dual import DualAscent
from ._loss import RETENTION_LOSSES, retention_loss
from ._projection import agem_project, grad_dot, pcgrad_combine

__all__ = ["METHODS", "Retainer", "RetentionConfig"]

METHODS = ("plain", "fixed", "pcgrad", "agem", "craft")


@dataclass
class RetentionConfig:
    """``method``: ``plain`` (action loss only), ``fixed`` (g_act + λ·g_ret, λ constant),
    ``pcgrad`` (PCGrad on {L_act, λ·L_ret}), ``agem`` (projection, λ constant) or ``craft``
    (projection + dual ascent on λ). ``epsilon``: the retention budget; ``lam``: λ at the start
    (the weight, for ``fixed`` / ``pcgrad`` / ``agem``); ``lam_lr``: η_λ; ``dual_every``: update λ
    every N optimiser steps; ``delta``: δ in the projection; ``loss``: ``mse`` or ``cosine``;
    ``per_group``: project each optimiser parameter group on its own (default: globally);
    ``accumulation``: micro-steps per optimiser step (losses are divided by it)."""

    epsilon: float = 0.05
    method: str = "craft"
    lam: float = 0.0
    lam_lr: float = 1.0
    dual_every: int = 1
    delta: float = 1e-12
    loss: str = "mse"
    per_group: bool = False
    accumulation: int = 1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"RetentionConfig.method={self.method!r}; use one of {list(METHODS)}")
        if self.loss not in RETENTION_LOSSES:
            raise ValueError(f"RetentionConfig.loss={self.loss!r}; use one of {list(RETENTION_LOSSES)}")
        if self.accumulation < 1:
            raise ValueError(f"RetentionConfig.accumulation={self.accumulation}; use >= 1 micro-steps")


def _ddp(model: nn.Module) -> bool:
    return isinstance(model, nn.parallel.DistributedDataParallel)


class Retainer:
    """``model``: the trained module (or its DDP wrapper); ``task_loss(model, batch) -> Tensor``;
    ``student(batch, indices=...) -> {"target_features": Tensor}`` with the graph kept (e.g.
    :func:`policylens.anchors.student_extractor`); ``params``: the trainable parameters
    (default: those of ``model`` that require grad; a frozen backbone or LoRA subset works);
    ``groups``: parameter lists projected separately when ``config.per_group`` (e.g. the
    optimiser's ``param_groups``); ``scaler``: a ``torch.amp.GradScaler`` for fp16."""

    def __init__(
        self,
        model: nn.Module,
        task_loss: Callable[[nn.Module, dict], Tensor],
        student: Callable[..., dict[str, Tensor]],
        config: RetentionConfig,
        params: Sequence[nn.Parameter] | None = None,
        groups: Sequence[Sequence[nn.Parameter]] | None = None,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        self.model, self.task_loss, self.student, self.config, self.scaler = model, task_loss, student, config, scaler
        self.params = list(params) if params is not None else [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("Retainer: no trainable parameters (all have requires_grad=False)")
        index = {id(p): i for i, p in enumerate(self.params)}
        self.groups = [[index[id(p)] for p in g if id(p) in index] for g in groups] if config.per_group else None
        if config.per_group and not groups:
            raise ValueError("Retainer: per_group=True needs groups= (e.g. [g['params'] for g in opt.param_groups])")
        fixed = config.method != "craft"
        self.dual = DualAscent(config.epsilon, config.lam_lr, config.lam, config.dual_every, fixed=fixed)
        self._act: list[Tensor | None] = [None] * len(self.params)
        self._ret: list[Tensor | None] = [None] * len(self.params)
        self._losses: list[Tensor] = []
        self._micro = 0

    # ----- the two passes ---------------------------------------------------------------
    def _take_grads(self, buffer: list[Tensor | None]) -> None:
        for i, p in enumerate(self.params):
            if p.grad is not None:
                buffer[i] = p.grad if buffer[i] is None else buffer[i].add_(p.grad)
                p.grad = None

    def _backward(self, loss: Tensor) -> None:
        scaled = loss / self.config.accumulation
        (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()

    def retention(self, anchor_batch: dict) -> Tensor:
        """L_ret of the current student on ``anchor_batch`` (model inputs, ``target_features``,
        ``sample_index``), with the graph kept."""
        inputs = {k: v for k, v in anchor_batch.items() if k not in ("target_features", "sample_index")}
        feats = self.student(inputs, indices=anchor_batch.get("sample_index"))["target_features"]
        return retention_loss(feats, anchor_batch["target_features"], self.config.loss)

    def backward(self, task_batch: dict, anchor_batch: dict | None = None, update: bool = True) -> dict[str, Tensor]:
        """One micro-step: the action-loss pass and (unless ``plain``) the retention pass, each with
        its own backward. On an ``update`` micro-step the combined gradient is left in ``.grad``;
        returns device scalars (``loss_act``, ``loss_ret``, ``lam``, ``cos_act_ret``, ``projected``)."""
        if self._micro == 0:
            self._act, self._ret, self._losses = [None] * len(self.params), [None] * len(self.params), []
            for p in self.params:
                p.grad = None
        sync = self.model.no_sync() if _ddp(self.model) else nullcontext()
        with sync:
            l_act = self.task_loss(self.model, task_batch)
            self._backward(l_act)
            self._take_grads(self._act)
            l_ret = torch.zeros((), device=l_act.device)
            if self.config.method != "plain":
                if anchor_batch is None:
                    raise ValueError(f"Retainer.backward: method={self.config.method!r} needs an anchor batch")
                l_ret = self.retention(anchor_batch)
                self._backward(l_ret)
                self._take_grads(self._ret)
        self._losses.append(torch.stack([l_act.detach().float(), l_ret.detach().float()]))
        self._micro += 1
        if not update:
            return {"loss_act": l_act.detach(), "loss_ret": l_ret.detach()}
        self._micro = 0
        return self._combine()

    # ----- the update -------------------------------------------------------------------
    def _all_reduce(self, losses: Tensor) -> Tensor:
        if not (_ddp(self.model) and dist.is_initialized()):
            return losses
        world = dist.get_world_size()
        for g in (*self._act, *self._ret):
            if g is not None:
                dist.all_reduce(g)
                g.div_(world)
        dist.all_reduce(losses)
        return losses / world

    def _combine(self) -> dict[str, Tensor]:
        losses = self._all_reduce(torch.stack(self._losses).mean(0))
        act, ret = self._act, self._ret
        if self.scaler is not None:  # unscale first: the projection sees true gradients
            inv = 1.0 / self.scaler.get_scale()
            act = [None if g is None else g * inv for g in act]
            ret = [None if g is None else g * inv for g in ret]
        present = [g for g in (*act, *ret) if g is not None]
        finite = torch.stack([torch.isfinite(g).all() for g in present]).all()
        lam = self.dual.value(present[0].device)
        norms = (grad_dot(act, act) * grad_dot(ret, ret)).sqrt()
        method = self.config.method
        if method in ("agem", "craft"):  # ⟨g_act, g_ret⟩ before projection comes back with it
            act, projected, dot = agem_project(act, ret, self.config.delta, self.groups)
        else:
            projected, dot = torch.zeros((), device=lam.device), grad_dot(act, ret)
        if method == "pcgrad":
            combined = pcgrad_combine(act, [None if g is None else lam * g for g in ret], self.config.delta)
        elif method == "plain":
            combined = act
        else:
            combined = [
                a if r is None else r * lam if a is None else a + lam * r for a, r in zip(act, ret, strict=True)
            ]
        scale = self.scaler.get_scale() if self.scaler is not None else None
        for p, g in zip(self.params, combined, strict=True):
            p.grad = None if g is None else (g * scale if scale is not None else g).to(p.dtype)
        if method != "plain":
            self.dual.update(losses[1], finite)
        return {
            "loss_act": losses[0],
            "loss_ret": losses[1],
            "lam": lam,
            "cos_act_ret": dot / norms.clamp(min=1e-30),
            "projected": projected,
            "finite": finite.float(),
        }

    def alignment(self, before: Sequence[Tensor]) -> Tensor:
        """cos(Δθ, g_ret) of the last optimiser step, given the parameters ``before`` it: below 0
        the step lowered L_ret to first order, above 0 it raised it (AdamW's preconditioner can
        turn a projected gradient into a step that does)."""
        delta = [p.detach() - b for p, b in zip(self.params, before, strict=True)]
        ret = self._ret
        return grad_dot(delta, ret) / (grad_dot(delta, delta) * grad_dot(ret, ret)).sqrt().clamp(min=1e-30)

    def state_dict(self) -> dict:
        return {"config": vars(self.config).copy(), "dual": self.dual.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.dual.load_state_dict(state["dual"])
