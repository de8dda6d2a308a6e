"""Stage-3 objectives: distil an RGB-only student from the aligned space, and the Spatial Forcing
baseline that aligns 2D tokens directly to a 3D-aware teacher.

:class:`Distiller` — one linear adaptor per target space (e.g. ``"aligned"``, ``"points"``), so a
single student width can match several teachers. For target ``k`` with weight ``λ_k``, adaptor
``A_k``, student tokens ``s_i`` and teacher tokens ``t_i`` (i over the M tokens):

    L_k = 1/M Σ_i (1 − cos(A_k s_i, t_i))  +  β_l1 · 1/(M·C_k) Σ_{i,c} smoothL1_δ(A_k s_i − t_i)_c
    L   = Σ_k λ_k L_k

with ``smoothL1_δ(x) = 0.5 x²/δ`` if ``|x| < δ`` else ``|x| − 0.5 δ`` (PyTorch's ``beta``). The
cosine term matches directions, the smooth-L1 term the scale; targets are used as given.

:class:`SpatialForcing` — Spatial Forcing (Li et al., ICLR 2026): intermediate VLA visual tokens
``x_i`` are normalised (BatchNorm in the paper), projected by a two-layer MLP and pulled towards the
frozen 3D foundation model's (VGGT) features at the same patches, ``f_i``, to which the paper adds a
positional embedding ``E_i`` (pass it as ``pos``; it is fixed, since a learned offset on the target
side could absorb the loss):

    L_align = 1/M Σ_i (1 − cos(MLP(Γ(x_i)), f_i + E_i))

The paper writes ``−1/M Σ cos``; adding 1 changes no gradient and makes a perfect match 0.
All losses are computed in float32, under autocast too.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["Distiller", "SpatialForcing", "cosine_distance"]


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """Mean over rows of ``1 − cos(a, b)`` along the last axis, in float32."""
    return (1.0 - F.cosine_similarity(a.float(), b.float(), dim=-1)).mean()


def _check(name: str, student: Tensor, target: Tensor, width: int, target_width: int) -> None:
    if student.shape[-1] != width or target.shape[-1] != target_width or student.shape[:-1] != target.shape[:-1]:
        raise ValueError(
            f"{name}: student {tuple(student.shape)} and target {tuple(target.shape)}; expected (..., {width}) and "
            f"(..., {target_width}) over the same leading (batch, patch) dims"
        )


class Distiller(nn.Module):
    """``Distiller(student_dim, {"aligned": 512, "points": 256}, weights={"points": 0.5})``;
    ``forward(student, {"aligned": t1, ...})`` -> ``(loss, {name: L_k})`` over the targets given."""

    def __init__(
        self,
        student_dim: int,
        targets: dict[str, int],
        weights: dict[str, float] | None = None,
        l1_weight: float = 1.0,
        l1_beta: float = 1.0,
    ) -> None:
        super().__init__()
        if not targets:
            raise ValueError("Distiller: targets is empty; pass {name: width} for each target space")
        unknown = set(weights or {}) - set(targets)
        if unknown:
            raise ValueError(f"Distiller: weights for {sorted(unknown)}; targets are {sorted(targets)}")
        self.student_dim, self.targets = student_dim, dict(targets)
        self.weights = {k: float((weights or {}).get(k, 1.0)) for k in targets}
        self.l1_weight, self.l1_beta = float(l1_weight), float(l1_beta)
        self.adaptors = nn.ModuleDict({k: nn.Linear(student_dim, c) for k, c in targets.items()})

    def forward(self, student: Tensor, targets: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        unknown = set(targets) - set(self.targets)
        if unknown or not targets:
            raise ValueError(
                f"Distiller: targets {sorted(targets)}; expected a non-empty subset of {sorted(self.targets)}"
            )
        parts = {}
        for name, t in targets.items():
            _check(f"Distiller[{name!r}]", student, t, self.student_dim, self.targets[name])
            pred = self.adaptors[name](student).float()
            t = t.detach().float()
            l1 = F.smooth_l1_loss(pred, t, beta=self.l1_beta)
            parts[name] = cosine_distance(pred, t) + self.l1_weight * l1
        total = sum(self.weights[k] * v for k, v in parts.items())
        return total, parts


class SpatialForcing(nn.Module):
    """``SpatialForcing(vla_dim, teacher_dim)(tokens, teacher)`` with tokens (B, N, vla_dim) and
    teacher (B, N, teacher_dim) -> ``L_align``; ``norm`` is ``"batch"`` (the paper), ``"layer"`` or
    ``"none"``; ``pos`` (N, teacher_dim), optional, is added to the teacher features."""

    NORMS = ("batch", "layer", "none")

    def __init__(self, dim: int, teacher_dim: int, hidden: int | None = None, norm: str = "batch") -> None:
        super().__init__()
        if norm not in self.NORMS:
            raise ValueError(f"SpatialForcing: norm={norm!r}; use one of {list(self.NORMS)}")
        hidden = hidden or 2 * teacher_dim
        self.dim, self.teacher_dim = dim, teacher_dim
        self.norm = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm, "none": lambda _: nn.Identity()}[norm](dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, teacher_dim))

    def project(self, tokens: Tensor) -> Tensor:
        """(B, N, dim) -> (B, N, teacher_dim): the MLP after the normalisation Γ."""
        flat = tokens.reshape(-1, self.dim)  # BatchNorm1d normalises over all B·N tokens
        return self.mlp(self.norm(flat)).reshape(*tokens.shape[:-1], self.teacher_dim)

    def forward(self, tokens: Tensor, teacher: Tensor, pos: Tensor | None = None) -> Tensor:
        _check("SpatialForcing", tokens, teacher, self.dim, self.teacher_dim)
        teacher = teacher.detach().float()
        if pos is not None:
            if pos.shape != teacher.shape[-2:]:
                raise ValueError(f"SpatialForcing: pos {tuple(pos.shape)}; expected {tuple(teacher.shape[-2:])} (N, C)")
            teacher = teacher + pos.detach().float()
        return cosine_distance(self.project(tokens), teacher)
