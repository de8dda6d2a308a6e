"""Ablation conditions: what each one changes in a policy's inputs, and nothing else.

A condition is ``target:kind``. Targets: one camera of the policy, ``cameras`` (every camera at
once) or ``instruction``. Camera kinds paint that camera's frames only: ``black`` (zeros),
``mean`` (the frame's mean colour), ``noise`` (Gaussian noise with the frame's per-channel mean and
standard deviation: the first two moments kept, the content gone), ``blur`` (Gaussian blur of
radius H/16, as the faithfulness fill), ``time`` (the same camera's frame from another time of the
episode, given by the caller) and ``removed`` (the camera left out through the policy's own
missing-camera path: :mod:`._ablate_removal`; the pixels are not touched here). ``cameras:swap``
hands each camera the next camera's frame (two cameras: swapped). Instruction kinds: ``empty``
(""), ``other`` (another object's words, given by the caller) and ``shuffled`` (the words in
another order). :func:`apply_condition` returns new arrays; what a condition does not name is the
caller's own object, untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ._faithfulness import _blurred

__all__ = [
    "CAMERAS_KINDS",
    "CAMERAS_TARGET",
    "CAMERA_KINDS",
    "INSTRUCTION_KINDS",
    "INSTRUCTION_TARGET",
    "Ablated",
    "Condition",
    "apply_condition",
    "conditions_for",
    "other_object_instruction",
    "parse_conditions",
    "shuffle_words",
]

CAMERA_KINDS = ("black", "mean", "noise", "blur", "time", "removed")
CAMERAS_KINDS = ("black", "swap", "removed")  # target "cameras": every camera at once
INSTRUCTION_KINDS = ("empty", "other", "shuffled")
CAMERAS_TARGET, INSTRUCTION_TARGET = "cameras", "instruction"


@dataclass(frozen=True)
class Condition:
    """``target`` (a camera, ``cameras`` or ``instruction``) and ``kind``; ``name`` is ``target:kind``."""

    target: str
    kind: str

    @property
    def name(self) -> str:
        return f"{self.target}:{self.kind}"

    def cameras(self, policy_cameras: Sequence[str]) -> tuple[str, ...]:
        """The cameras whose input this condition changes (none for the instruction)."""
        if self.target == INSTRUCTION_TARGET:
            return ()
        return tuple(policy_cameras) if self.target == CAMERAS_TARGET else (self.target,)


def conditions_for(cameras: Sequence[str]) -> list[Condition]:
    """Every condition for a policy reading ``cameras``: each camera's kinds, the ``cameras`` kinds
    (two cameras or more), the instruction's kinds."""
    out = [Condition(c, k) for c in cameras for k in CAMERA_KINDS]
    if len(cameras) > 1:
        out += [Condition(CAMERAS_TARGET, k) for k in CAMERAS_KINDS]
    return out + [Condition(INSTRUCTION_TARGET, k) for k in INSTRUCTION_KINDS]


def parse_conditions(spec: str | Sequence[str] | None, cameras: Sequence[str]) -> list[Condition]:
    """Conditions from names: ``hand_camera:black`` (one), ``black`` (that kind for every target that
    has it), ``instruction`` or a camera name (all of that target's); None or "all": every one."""
    every = conditions_for(cameras)
    if spec is None or spec == "all":
        return every
    items = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    out: list[Condition] = []
    for item in items:
        found = [c for c in every if item in (c.name, c.kind, c.target)]
        if not found:
            names = sorted({c.name for c in every} | {c.kind for c in every} | {c.target for c in every})
            raise ValueError(
                f"conditions: {item!r} names no condition for cameras {list(cameras)}; choose from {names} "
                "(target:kind, a kind, a target, or 'all')"
            )
        out += [c for c in found if c not in out]
    if not out:
        raise ValueError(f"conditions={spec!r} is empty; pass names such as hand_camera:black,instruction:empty")
    return out


def shuffle_words(text: str, rng: np.random.Generator) -> str:
    """``text``'s words in another order (drawn from ``rng``); ``text`` itself when no other order
    exists (fewer than two distinct words)."""
    words = text.split()
    if len(set(words)) < 2:
        return text
    for _ in range(20):
        order = rng.permutation(len(words))
        shuffled = [words[i] for i in order]
        if shuffled != words:
            return " ".join(shuffled)
    return " ".join(words[1:] + words[:1])  # a rotation always differs when two words differ


def other_object_instruction(instruction: str, target: str, names: Sequence[str]) -> str | None:
    """``instruction`` with the ``target`` object's words replaced by another object's: the first of
    ``names`` after ``target`` (cyclically) that differs from it; None when ``target`` is not in the
    instruction or no other name exists."""
    if not target or target not in instruction:
        return None
    names = list(names)
    start = names.index(target) + 1 if target in names else 0
    for other in names[start:] + names[:start]:
        if other != target:
            return instruction.replace(target, other)
    return None


def _fill(kind: str, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(n, H, W, 3) uint8 -> the same shape painted by ``kind`` (black / mean / noise / blur)."""
    x = frames.astype(np.float64)
    mean = x.mean((1, 2), keepdims=True)  # (n, 1, 1, 3)
    if kind == "black":
        return np.zeros_like(frames)
    if kind == "mean":
        return np.broadcast_to(np.round(mean), frames.shape).astype(np.uint8)
    if kind == "noise":
        std = x.std((1, 2), keepdims=True)
        return np.clip(np.round(rng.normal(mean, std, frames.shape)), 0, 255).astype(np.uint8)
    if kind == "blur":
        return np.stack([_blurred(f) for f in frames])
    raise ValueError(f"unknown fill {kind!r}")


@dataclass
class Ablated:
    """The inputs after a condition: ``images`` {camera: (n, H, W, 3) uint8}, ``texts`` (n strings)
    and ``removed``, the cameras the policy must treat as missing."""

    images: dict[str, np.ndarray]
    texts: list[str]
    removed: tuple[str, ...] = ()


def apply_condition(
    condition: Condition | None,
    images: Mapping[str, np.ndarray],
    texts: Sequence[str],
    rng: np.random.Generator | int | None = None,
    *,
    other_time: Mapping[str, np.ndarray] | None = None,
    other_texts: Sequence[str] | None = None,
) -> Ablated:
    """The inputs of ``condition`` (None: unchanged). ``images``: {camera: (n, H, W, 3) uint8};
    ``texts``: n instructions; ``other_time``: {camera: frames of another time} for ``time``;
    ``other_texts``: n instructions naming another object, for ``instruction:other``."""
    out = Ablated(dict(images), list(texts))
    if condition is None:
        return out
    rng = np.random.default_rng(rng)
    cams, (target, kind) = list(images), (condition.target, condition.kind)
    if target == INSTRUCTION_TARGET:
        if kind == "empty":
            out.texts = [""] * len(out.texts)
        elif kind == "shuffled":
            out.texts = [shuffle_words(t, rng) for t in out.texts]
        elif kind == "other":
            if other_texts is None or len(other_texts) != len(out.texts):
                raise ValueError("instruction:other needs other_texts: one instruction naming another object per text")
            out.texts = list(other_texts)
        else:
            raise ValueError(f"instruction kind {kind!r} is not one of {INSTRUCTION_KINDS}")
        return out
    if target == CAMERAS_TARGET:
        if kind == "swap":
            if len(cams) < 2:
                raise ValueError(f"cameras:swap needs two cameras or more, the inputs hold {cams}")
            out.images = {c: np.asarray(images[cams[(i + 1) % len(cams)]]) for i, c in enumerate(cams)}
        elif kind == "removed":
            out.removed = tuple(cams)
        elif kind == "black":
            out.images = {c: np.zeros_like(np.asarray(v)) for c, v in images.items()}
        else:
            raise ValueError(f"cameras kind {kind!r} is not one of {CAMERAS_KINDS}")
        return out
    if target not in images:
        raise ValueError(f"condition {condition.name}: no camera {target!r} in the inputs; cameras: {cams}")
    if kind == "removed":
        out.removed = (target,)
    elif kind == "time":
        if other_time is None or target not in other_time:
            raise ValueError(f"{condition.name} needs other_time[{target!r}]: the camera's frames at another time")
        out.images[target] = np.asarray(other_time[target])
    elif kind in ("black", "mean", "noise", "blur"):
        out.images[target] = _fill(kind, np.asarray(images[target]), rng)
    else:
        raise ValueError(f"camera kind {kind!r} is not one of {CAMERA_KINDS}")
    return out
