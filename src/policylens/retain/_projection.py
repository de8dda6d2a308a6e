"""Conflict-aware gradient projection (A-GEM's rule) and PCGrad, on lists of per-parameter
gradients: dot products per parameter in float32, summed — never flattened or concatenated —
and the coefficient kept on the device (no host sync).

A-GEM (Chaudhry et al., 2019): if ⟨g, r⟩ < 0, g ← g − ⟨g, r⟩ / (‖r‖² + δ) · r, which removes the
part of g that would raise the loss whose gradient is r. A missing gradient (None) is a zero
gradient: a parameter that only r reaches gets −⟨g, r⟩ / (‖r‖² + δ) · r, so the projected g is
orthogonal to the whole of r, not only to the parameters both sides share.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["agem_project", "grad_dot", "pcgrad_combine"]

Grads = Sequence[Tensor | None]


def grad_dot(a: Grads, b: Grads) -> Tensor:
    """Σ over parameters of ⟨a_i, b_i⟩ in float32, a 0-dim tensor on the gradients' device
    (missing gradients count as zero)."""
    total = None
    for x, y in zip(a, b, strict=True):
        if x is None or y is None:
            continue
        d = torch.sum(x.float() * y.float())
        total = d if total is None else total + d
    if total is None:
        device = next((g.device for g in (*a, *b) if g is not None), torch.device("cpu"))
        return torch.zeros((), device=device)
    return total


def agem_project(
    g_act: Grads,
    g_ret: Grads,
    delta: float = 1e-12,
    groups: Sequence[Sequence[int]] | None = None,
    active: Tensor | bool = True,
) -> tuple[list[Tensor | None], Tensor, Tensor]:
    """``g_act`` projected off ``g_ret`` where they conflict. ``groups``: lists of parameter
    indices projected separately (the per-group variant); None projects all parameters at once
    (global). ``active``: a 0-dim bool tensor (or bool); where False nothing is projected.
    Returns the projected gradients (new tensors; None only where both sides are None), the
    number of groups that were projected and the global ⟨g_act, g_ret⟩ (0-dim device tensors)."""
    out: list[Tensor | None] = list(g_act)
    whole = groups is None
    groups = [range(len(g_act))] if whole else groups
    fired = total = None
    for group in groups:
        a, r = [g_act[i] for i in group], [g_ret[i] for i in group]
        dot = grad_dot(a, r)
        gate = (dot < 0) & torch.as_tensor(active, device=dot.device)
        coef = torch.where(gate, dot / (grad_dot(r, r) + delta), torch.zeros_like(dot))
        total = dot if whole else None  # one group of every parameter: its dot is the global one
        for i in group:
            x, y = g_act[i], g_ret[i]
            if y is None:
                continue  # g_ret is zero here: nothing to remove
            step = coef * y.float()
            out[i] = -step.to(y.dtype) if x is None else x - step.to(x.dtype)
        conflict = gate.float()
        fired = conflict if fired is None else fired + conflict
    if fired is None:
        fired = torch.zeros(())
    return out, fired, total if total is not None else grad_dot(g_act, g_ret)


def pcgrad_combine(g_a: Grads, g_b: Grads, delta: float = 1e-12) -> list[Tensor | None]:
    """PCGrad (Yu et al., 2020) on two tasks: each gradient projected off the other where they
    conflict (both against the originals, over every parameter, a missing gradient being zero),
    then summed."""
    a_on_b, _, _ = agem_project(g_a, g_b, delta)
    b_on_a, _, _ = agem_project(g_b, g_a, delta)
    out: list[Tensor | None] = []
    for x, y in zip(a_on_b, b_on_a, strict=True):
        out.append(x if y is None else y if x is None else x + y)
    return out
