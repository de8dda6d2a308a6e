"""Retention methods: how the action gradient g_act and the retention gradient g_ret become one
step, one small class per method on a shared base.

A method gets both gradient buffers (per-parameter lists, a missing gradient being zero), λ and
the step's mean losses (L_act, L_ret), and returns the combined gradient with what it did
(``projected``: how many parameter groups it projected, a device scalar). Two class attributes
describe it to the :class:`~policylens.retain.Retainer`: ``needs_retention`` (run the retention
pass at all, and count the step towards λ) and ``dual`` (λ follows dual ascent; otherwise λ stays
the configured weight). ``METHOD_TYPES`` maps the names ``RetentionConfig.method`` takes to the
classes; adding a method is one class and one entry here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from ._projection import agem_project, pcgrad_combine

if TYPE_CHECKING:
    from ._retainer import RetentionConfig

__all__ = [
    "AGEM",
    "METHODS",
    "METHOD_TYPES",
    "PROJECTIONS",
    "CRaFT",
    "Fixed",
    "PCGrad",
    "Plain",
    "RetentionMethod",
    "make_method",
    "method_type",
]

Grads = list[Tensor | None]
PROJECTIONS = ("conflict", "active")


def _add(act: Sequence[Tensor | None], lam: Tensor, ret: Sequence[Tensor | None]) -> Grads:
    """g_act + λ·g_ret per parameter, a missing gradient being zero."""
    return [a if r is None else lam * r if a is None else a + lam * r for a, r in zip(act, ret, strict=True)]


class RetentionMethod(ABC):
    """One rule for combining g_act and g_ret. Subclasses set ``needs_retention`` / ``dual`` and
    implement :meth:`combine`; :meth:`from_config` builds one from a ``RetentionConfig``."""

    needs_retention: ClassVar[bool] = True
    dual: ClassVar[bool] = False

    @classmethod
    def from_config(cls, config: RetentionConfig) -> RetentionMethod:
        return cls()

    @abstractmethod
    def combine(
        self,
        act: Sequence[Tensor | None],
        ret: Sequence[Tensor | None],
        lam: Tensor,
        losses: Tensor,
        groups: Sequence[Sequence[int]] | None = None,
    ) -> tuple[Grads, dict[str, Tensor]]:
        """The combined gradient per parameter (None where neither side has one) and the step's
        stats (``projected``). ``lam``: λ (0-dim); ``losses``: (L_act, L_ret) of the step, (2,);
        ``groups``: parameter indices projected separately (None: all at once)."""

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({settings})"


def _none(lam: Tensor) -> dict[str, Tensor]:
    return {"projected": torch.zeros((), device=lam.device)}


class Plain(RetentionMethod):
    """L_act only: no retention pass, g_act as it is."""

    needs_retention = False

    def combine(self, act, ret, lam, losses, groups=None):
        return list(act), _none(lam)


class Fixed(RetentionMethod):
    """g_act + λ·g_ret with λ constant (a fixed-weight retention loss)."""

    def combine(self, act, ret, lam, losses, groups=None):
        return _add(act, lam, ret), _none(lam)


class PCGrad(RetentionMethod):
    """PCGrad (Yu et al., 2020) on {L_act, λ·L_ret}: each gradient projected off the other where
    they conflict, both against the originals, then summed."""

    def __init__(self, delta: float = 1e-12) -> None:
        self.delta = delta

    @classmethod
    def from_config(cls, config: RetentionConfig) -> PCGrad:
        return cls(config.delta)

    def combine(self, act, ret, lam, losses, groups=None):
        return pcgrad_combine(act, [None if g is None else lam * g for g in ret], self.delta), _none(lam)


class AGEM(RetentionMethod):
    """A-GEM's projection with λ constant. ``projection="conflict"``: g_act projected off g_ret
    where ⟨g_act, g_ret⟩ < 0, then + λ·g_ret. ``"active"``: the whole step g_act + λ·g_ret
    projected off g_ret where it would raise L_ret, only while L_ret > ``epsilon`` (compared on the
    device)."""

    def __init__(self, projection: str = "conflict", epsilon: float = 0.0, delta: float = 1e-12) -> None:
        if projection not in PROJECTIONS:
            name = type(self).__name__
            raise ValueError(f"{name}: projection={projection!r} is unknown; use one of {list(PROJECTIONS)}")
        self.projection, self.epsilon, self.delta = projection, epsilon, delta

    @classmethod
    def from_config(cls, config: RetentionConfig) -> AGEM:
        return cls(config.projection, config.epsilon, config.delta)

    def combine(self, act, ret, lam, losses, groups=None):
        if self.projection == "conflict":
            act, projected, _ = agem_project(act, ret, self.delta, groups)
            return _add(act, lam, ret), {"projected": projected}
        over = losses[1] > self.epsilon
        combined, projected, _ = agem_project(_add(act, lam, ret), ret, self.delta, groups, active=over)
        return combined, {"projected": projected}


class CRaFT(AGEM):
    """CRaFT: A-GEM's projection (either rule) with dual ascent on λ."""

    dual = True


METHOD_TYPES: dict[str, type[RetentionMethod]] = {
    "plain": Plain,
    "fixed": Fixed,
    "pcgrad": PCGrad,
    "agem": AGEM,
    "craft": CRaFT,
}
METHODS = tuple(METHOD_TYPES)


def method_type(name: str) -> type[RetentionMethod]:
    """The class registered as ``name``; an unknown name fails with the choices."""
    if name not in METHOD_TYPES:
        raise ValueError(f"retention method {name!r} is unknown; use one of {list(METHODS)}")
    return METHOD_TYPES[name]


def make_method(config: RetentionConfig) -> RetentionMethod:
    """The method ``config.method`` names, built from ``config``'s settings."""
    return method_type(config.method).from_config(config)
