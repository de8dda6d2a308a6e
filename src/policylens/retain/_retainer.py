"""``Retainer``: the drop-in retention step for any training loop.

Given a task batch and an anchor batch, it runs two separate backward passes (the action loss,
then the retention loss), keeps their gradients in two buffers (accumulated over micro-steps:
projection does not commute with sums), and on the updating micro-step combines them into
``.grad``, ready for clipping and ``optimizer.step()``. CRaFT's combination is g_act projected off
g_ret (``projection="conflict"``) + λ·g_ret; ``projection="active"`` instead projects the whole
step g_act + λ·g_ret off g_ret, and only while L_ret > ε: a primal-dual method that reaches the
constrained optimum. Under DDP both passes run under ``no_sync`` and the two buffers are
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
from ._methods import METHOD_TYPES, METHODS, PROJECTIONS, make_method
from ._projection import grad_dot

__all__ = ["METHODS", "PROJECTIONS", "Retainer", "RetentionConfig"]


@dataclass
class RetentionConfig:
    """``method``: ``plain`` (action loss only), ``fixed`` (g_act + λ·g_ret, λ constant),
    ``pcgrad`` (PCGrad on {L_act, λ·L_ret}), ``agem`` (projection, λ constant) or ``craft``
    (projection + dual ascent on λ). ``projection`` (``agem`` / ``craft``): ``conflict`` (CRaFT's
    rule: g_act projected off g_ret whenever ⟨g_act, g_ret⟩ < 0, then + λ·g_ret) or ``active``
    (the step g_act + λ·g_ret projected off g_ret where it would raise L_ret, only while L_ret > ε;
    with ``craft`` it solves min L_act s.t. L_ret ≤ ε). ``epsilon``: the retention budget;
    ``lam``: λ at the start (the weight, for ``fixed`` / ``pcgrad`` / ``agem``); ``lam_lr``: η_λ;
    ``dual_every``: update λ every N optimiser steps; ``delta``: δ in the projection; ``loss``:
    ``mse`` or ``cosine``; ``per_group``: project each optimiser parameter group on its own
    (default: globally); ``accumulation``: micro-steps per optimiser step (losses are divided
    by it)."""

    epsilon: float = 0.05
    method: str = "craft"
    lam: float = 0.0
    lam_lr: float = 1.0
    dual_every: int = 1
    delta: float = 1e-12
    loss: str = "mse"
    per_group: bool = False
    accumulation: int = 1
    projection: str = "conflict"

    def __post_init__(self) -> None:
        for name, choices in (("method", METHODS), ("projection", PROJECTIONS), ("loss", RETENTION_LOSSES)):
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(f"RetentionConfig.{name}={value!r} is unknown; use one of {list(choices)}")
        for name in ("epsilon", "lam", "lam_lr", "delta"):
            value = getattr(self, name)
            if not value >= 0:  # NaN fails too
                raise ValueError(f"RetentionConfig.{name}={value!r}; use a number >= 0")
        for name, what in (("accumulation", "micro-steps"), ("dual_every", "optimiser steps")):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"RetentionConfig.{name}={value!r}; use a whole number >= 1 ({what})")


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
        if config.per_group and not groups:
            raise ValueError("Retainer: per_group=True needs groups= (e.g. [g['params'] for g in opt.param_groups])")
        self.groups = [[index[id(p)] for p in g if id(p) in index] for g in groups] if config.per_group else None
        self.method = make_method(config)
        fixed = not self.method.dual
        self.dual = DualAscent(config.epsilon, config.lam_lr, config.lam, config.dual_every, fixed=fixed)
        self._act: list[Tensor | None] = [None] * len(self.params)
        self._ret: list[Tensor | None] = [None] * len(self.params)
        self._losses: list[Tensor] = []
        self._micro = 0
        self._retain = True

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

    def backward(
        self, task_batch: dict, anchor_batch: dict | None = None, update: bool = True, retain: bool = True
    ) -> dict[str, Tensor]:
        """One micro-step: the action-loss pass and (unless ``plain``) the retention pass, each with
        its own backward. On an ``update`` micro-step the combined gradient is left in ``.grad``;
        returns device scalars (``loss_act``, ``loss_ret``, ``lam``, ``cos_act_ret``, ``projected``).
        ``retain=False``: a plain step (L_act alone, g_act as it is, λ untouched; ``loss_ret`` and
        ``cos_act_ret`` NaN), for retention every k steps; every micro-step of an optimiser step
        must agree."""
        if self._micro == 0:
            self._retain = retain
        elif retain != self._retain:
            raise ValueError(
                f"Retainer.backward: retain={retain} on micro-step {self._micro}, but this optimiser step began "
                f"with retain={self._retain}; pass the same value on every micro-step of a step"
            )
        if not retain:
            return self._plain_backward(task_batch, update)
        if self.method.needs_retention and anchor_batch is None:
            alone = " or ".join(f"method={n!r}" for n, t in METHOD_TYPES.items() if not t.needs_retention)
            raise ValueError(
                f"Retainer.backward: method={self.config.method!r} needs anchor_batch= (e.g. anchors.sample(n, rng)); "
                f"only {alone} runs without one"
            )
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
            if self.method.needs_retention:
                l_ret = self.retention(anchor_batch)
                self._backward(l_ret)
                self._take_grads(self._ret)
        self._losses.append(torch.stack([l_act.detach().float(), l_ret.detach().float()]))
        self._micro += 1
        if not update:
            return {"loss_act": l_act.detach(), "loss_ret": l_ret.detach()}
        self._micro = 0
        return self._combine()

    def _plain_backward(self, task_batch: dict, update: bool) -> dict[str, Tensor]:
        """A step without the retention pass: g_act accumulated, then handed out as it is."""
        if self._micro == 0:
            self._act, self._ret, self._losses = [None] * len(self.params), [None] * len(self.params), []
            for p in self.params:
                p.grad = None
        with self.model.no_sync() if _ddp(self.model) else nullcontext():
            l_act = self.task_loss(self.model, task_batch)
            self._backward(l_act)
            self._take_grads(self._act)
        nan = torch.full((), float("nan"), device=l_act.device)
        self._losses.append(torch.stack([l_act.detach().float(), nan]))
        self._micro += 1
        if not update:
            return {"loss_act": l_act.detach(), "loss_ret": nan}
        self._micro = 0
        losses = self._all_reduce(torch.stack(self._losses).mean(0))
        present = [g for g in self._act if g is not None]
        if not present:
            raise ValueError("Retainer: no trainable parameter got a gradient; does task_loss use params=?")
        finite = torch.stack([torch.isfinite(g).all() for g in present]).all()
        for p, g in zip(self.params, self._act, strict=True):
            p.grad = None if g is None else g.to(p.dtype)  # scaled as the scaler left it
        lam = self.dual.value(present[0].device)
        zero = torch.zeros((), device=lam.device)
        return {"loss_act": losses[0], "loss_ret": losses[1], "lam": lam, "cos_act_ret": losses[1],
                "projected": zero, "finite": finite.float()}  # fmt: skip

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
        losses = self._all_reduce(torch.stack(self._losses).mean(0))  # (L_act, L_ret) means of the step
        act, ret = self._act, self._ret
        if self.scaler is not None:  # unscale first: the projection sees true gradients
            inv = 1.0 / self.scaler.get_scale()
            act = [None if g is None else g * inv for g in act]
            ret = [None if g is None else g * inv for g in ret]
        present = [g for g in (*act, *ret) if g is not None]
        if not present:
            raise ValueError("Retainer: no trainable parameter got a gradient; do task_loss and student use params=?")
        finite = torch.stack([torch.isfinite(g).all() for g in present]).all()
        lam = self.dual.value(present[0].device)
        dot = grad_dot(act, ret)  # ⟨g_act, g_ret⟩ before any projection
        norms = (grad_dot(act, act) * grad_dot(ret, ret)).sqrt()
        combined, method_stats = self.method.combine(act, ret, lam, losses, self.groups)
        scale = self.scaler.get_scale() if self.scaler is not None else None
        for p, g in zip(self.params, combined, strict=True):
            p.grad = None if g is None else (g * scale if scale is not None else g).to(p.dtype)
        if self.method.needs_retention:
            self.dual.update(losses[1], finite)
        stats = {
            "loss_act": losses[0],
            "loss_ret": losses[1],
            "lam": lam,
            "cos_act_ret": dot / norms.clamp(min=1e-30),
            "projected": torch.zeros((), device=lam.device),
            "finite": finite.float(),
        }
        stats.update(method_stats)
        return stats

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
