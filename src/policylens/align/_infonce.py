"""Symmetric InfoNCE between 2D (query) and 3D (target) features, with a learnable clamped
temperature, multiple positives keyed by (frame, patch) ids, an optional FIFO queue of past targets
and an exact DDP gather.

The loss, exactly. Rows are L2-normalised in float32: ``q_i``, ``t_j`` (i, j < M over the *global*
batch) and queued targets ``u_k`` (k < Q). ``s = exp(logit_scale)`` = 1/τ, ``S_ij = s · q_i·t_j``,
``U_ik = s · q_i·u_k``. Positives ``P(i) = {j : key_j == key_i}`` (all key columns equal; without
keys, ``P(i) = {i}``), so rows sharing a key are positives of each other's targets. A queued target
whose key equals ``key_i`` is left out of row i's denominator (a stale copy of a positive, not a
negative); other queued targets are negatives.

    L_q→t = 1/M Σ_i −1/|P(i)| Σ_{j∈P(i)} log[ exp S_ij / (Σ_k exp S_ik + Σ_{k kept} exp U_ik) ]
    L_t→q = 1/M Σ_j −1/|P(j)| Σ_{i∈P(j)} log[ exp S_ij / Σ_k exp S_kj ]
    L     = (L_q→t + L_t→q) / 2

The queue holds targets only, so it widens the q→t denominators. With one key per row and no queue
this is CLIP's loss.

Temperature (CLIP-style): the parameter is ``logit_scale = log(1/τ)``, clamped in place to
``[log(1/max_temperature), log(1/min_temperature)]`` at every forward (defaults τ ∈ [0.01, 1], i.e.
a logit scale of at most 100 as in CLIP); clamping in place, rather than in the graph, keeps the
gradient alive at the bounds.

DDP: each rank gathers queries, targets and keys from all ranks (gradients flow back to the owning
rank: the backward all-reduces the full gradient and keeps the local slice) and computes the loss
only for its own rows/columns, scaled by ``world / M``. The mean of the rank losses is the global
loss above, and after DDP's gradient averaging the gradients equal those of one process holding the
global batch. The returned value is the rank's share; all-reduce it (mean) for logging.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["InfoNCE", "gather_with_grad"]


class _GatherWithGrad(torch.autograd.Function):
    """All-gather rows of possibly different counts; backward sums the gradient over ranks and
    returns this rank's slice (all-reduce works on every backend, gloo included)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # x (m, ...) -> (M, ...)
        world, rank = dist.get_world_size(), dist.get_rank()
        sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(world)]
        dist.all_gather(sizes, torch.tensor([x.shape[0]], device=x.device))
        counts = [int(c) for c in sizes]
        pad = max(counts)
        padded = torch.zeros((pad, *x.shape[1:]), dtype=x.dtype, device=x.device)
        padded[: x.shape[0]] = x
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        ctx.start, ctx.count = sum(counts[:rank]), counts[rank]
        return torch.cat([p[:c] for p, c in zip(parts, counts, strict=True)])

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.start : ctx.start + ctx.count]


def gather_with_grad(x: Tensor) -> Tensor:
    """Rows of ``x`` from every rank, in rank order; identity outside an initialised process group."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def _as_keys(keys: Tensor | None, m: int, name: str) -> Tensor | None:
    if keys is None:
        return None
    if keys.dtype.is_floating_point or keys.dtype == torch.bool:
        raise TypeError(f"InfoNCE: {name} dtype {keys.dtype}; pass integer ids, e.g. (frame, patch) as int64 [M, 2]")
    keys = keys.reshape(-1, 1) if keys.dim() == 1 else keys
    if keys.dim() != 2 or keys.shape[0] != m:
        raise ValueError(f"InfoNCE: {name} shape {tuple(keys.shape)}; expected [M] or [M, K] with M={m} rows")
    return keys.long()


class InfoNCE(nn.Module):
    """``loss = InfoNCE()(query, target, keys)`` with ``query``/``target`` [M, D] paired rows and
    ``keys`` None, [M] or [M, K] integer ids (e.g. global (frame, patch)); see the module docstring
    for the exact loss. ``queue_size`` > 0 keeps that many past targets (FIFO, detached, float32,
    filled in training mode only, not checkpointed: it refills in a few steps); under DDP every rank
    enqueues the gathered batch, so the queues stay identical. Use global frame ids under DDP so keys
    mean the same on every rank, and pass keys on all ranks or on none. Stale positives in the queue
    are masked only while every queued batch came with keys (after an unkeyed batch, not until
    ``reset_queue()``)."""

    def __init__(
        self,
        temperature: float = 0.07,
        min_temperature: float = 0.01,
        max_temperature: float = 1.0,
        learn_temperature: bool = True,
        queue_size: int = 0,
    ) -> None:
        super().__init__()
        if not 0 < min_temperature <= max_temperature:
            raise ValueError(
                f"InfoNCE: min_temperature={min_temperature}, max_temperature={max_temperature}; "
                "need 0 < min_temperature <= max_temperature"
            )
        if not min_temperature <= temperature <= max_temperature:
            raise ValueError(
                f"InfoNCE: temperature={temperature} outside [{min_temperature}, {max_temperature}]; "
                "pass a temperature inside the range or widen min_temperature/max_temperature"
            )
        if queue_size < 0:
            raise ValueError(f"InfoNCE: queue_size={queue_size}; use 0 (no queue) or a positive count")
        self.min_temperature, self.max_temperature, self.queue_size = min_temperature, max_temperature, queue_size
        scale = torch.tensor(math.log(1.0 / temperature))
        if learn_temperature:
            self.logit_scale = nn.Parameter(scale)
        else:
            self.register_buffer("logit_scale", scale)
        self.queue: Tensor | None = None  # (Q', D) float32, oldest first
        self.queue_keys: Tensor | None = None  # (Q', K) long, or None when enqueued without keys

    @property
    def temperature(self) -> float:
        lo, hi = math.log(1.0 / self.max_temperature), math.log(1.0 / self.min_temperature)
        return 1.0 / math.exp(min(max(float(self.logit_scale.detach()), lo), hi))

    def reset_queue(self) -> None:
        self.queue, self.queue_keys = None, None

    def _clamp_(self) -> None:
        with torch.no_grad():
            self.logit_scale.clamp_(math.log(1.0 / self.max_temperature), math.log(1.0 / self.min_temperature))

    def forward(self, query: Tensor, target: Tensor, keys: Tensor | None = None) -> Tensor:
        if query.dim() != 2 or query.shape != target.shape:
            raise ValueError(
                f"InfoNCE: query {tuple(query.shape)} and target {tuple(target.shape)}; "
                "pass paired rows of the same shape [M, D] (flatten frames and patches into M)"
            )
        keys = _as_keys(keys, query.shape[0], "keys")
        if keys is not None and self.queue_keys is not None and keys.shape[1] != self.queue_keys.shape[1]:
            raise ValueError(
                f"InfoNCE: keys have {keys.shape[1]} columns, the queued keys {self.queue_keys.shape[1]}; "
                "keep one key layout or call reset_queue()"
            )
        self._clamp_()
        m_local = query.shape[0]
        with torch.autocast(device_type=query.device.type, enabled=False):
            q = F.normalize(query.float(), dim=-1)  # (m, D)
            t = F.normalize(target.float(), dim=-1)  # (m, D)
            qg, tg = gather_with_grad(q), gather_with_grad(t)  # (M, D)
            start = _rank_offset(m_local, query.device)
            m = qg.shape[0]
            kg = _gather_keys(keys, m, query.device)  # (M, K)
            group = torch.unique(kg, dim=0, return_inverse=True)[1]  # (M,): rows with equal keys share an id
            pos = group[:, None] == group[None, :]  # (M, M)
            local = slice(start, start + m_local)
            scale = self.logit_scale.float().exp()
            s_q = scale * q @ tg.T  # (m, M): this rank's query rows
            s_t = scale * t @ qg.T  # (m, M): this rank's target columns, transposed
            logits_q, pos_q = s_q, pos[local]
            if self.queue is not None:
                u = scale * q @ self.queue.to(q.device).T  # (m, Q)
                if keys is not None and self.queue_keys is not None:
                    same = (keys[:, None, :] == self.queue_keys.to(keys.device)[None, :, :]).all(-1)
                    u = u.masked_fill(same, float("-inf"))
                logits_q = torch.cat([s_q, u], dim=1)
                pos_q = torch.cat([pos_q, torch.zeros_like(u, dtype=torch.bool)], dim=1)
            loss = (_multi_positive(logits_q, pos_q) + _multi_positive(s_t, pos[local])) / 2
            loss = loss * (_world() / m)
        if self.queue_size and self.training:
            self._enqueue(tg.detach(), kg if keys is not None else None)
        return loss

    def _enqueue(self, t: Tensor, keys: Tensor | None) -> None:
        if self.queue is not None and self.queue.shape[1] != t.shape[1]:
            raise ValueError(f"InfoNCE: target width {t.shape[1]} != queued {self.queue.shape[1]}; call reset_queue()")
        if (self.queue_keys is None) != (keys is None) and self.queue is not None:
            self.queue_keys = None  # mixed keyed and unkeyed batches: stop masking stale positives
            keys = None
        self.queue = t if self.queue is None else torch.cat([self.queue, t])
        self.queue = self.queue[-self.queue_size :]
        if keys is not None:
            self.queue_keys = keys if self.queue_keys is None else torch.cat([self.queue_keys, keys])
            self.queue_keys = self.queue_keys[-self.queue_size :]


def _multi_positive(logits: Tensor, pos: Tensor) -> Tensor:
    """Σ over rows of −mean_{j∈P(i)} log softmax(logits_i)_j; logits (m, n), pos (m, n) bool."""
    logp = torch.log_softmax(logits, dim=1)
    picked = torch.where(pos, logp, torch.zeros_like(logp)).sum(1)
    return -(picked / pos.sum(1)).sum()


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _rank_offset(m_local: int, device: torch.device) -> int:
    """Index of this rank's first row in the gathered batch."""
    if _world() == 1:
        return 0
    counts = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(_world())]
    dist.all_gather(counts, torch.tensor([m_local], device=device))
    return int(sum(int(c) for c in counts[: dist.get_rank()]))


def _gather_keys(keys: Tensor | None, m: int, device: torch.device) -> Tensor:
    """Global keys (M, K); without keys, the row index (each row its own positive)."""
    if keys is None:
        return torch.arange(m, device=device)[:, None]
    return gather_with_grad(keys) if _world() > 1 else keys
