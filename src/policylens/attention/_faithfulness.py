"""Faithfulness: does the attention map matter to the action?

Mask what the policy attends to and see whether its action chunk moves more than when an
equal-area region it ignores is masked. Per keyframe and camera the map (one phase and layer,
mean over heads) is carried onto the frame through the model's ``image_transform``;
:func:`mask_regions` cuts equal-area regions from it (``high``, ``low``, ``random_i`` blobs,
``shifted`` = high moved elsewhere) plus the ``whole`` view as a ceiling; :func:`apply_fill`
paints them (blur, mean colour, noise), and the policy runs again with the SAME flow noise, so
any change comes from the pixels alone. The noise floor is the change from re-drawing only the
noise. Chunks are compared as motions (chunk minus the current state, ``origin="state"``: the
sim's actions are absolute targets) by :func:`scale_invariant_mse` and :func:`direction_cosine`.
:func:`deletion_curve` removes patches most- vs least-attended first; :func:`~._closed_loop.closed_loop_masked`
masks at every step of a simulated rollout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from ._extract import extract_attention
from ._overlap import _array, random_blobs

__all__ = [
    "FILLS",
    "DeletionCurve",
    "FaithfulnessResult",
    "apply_fill",
    "deletion_curve",
    "direction_cosine",
    "faithfulness",
    "mask_regions",
    "scale_invariant_mse",
]

ORIGINS = ("state", "none")
ORDERS = ("most", "least")
FRAMES_HELP = "{'images': {camera: (B, H, W, 3) uint8}, 'instructions': [B strings], 'state': (B, state_dim)}"


def _blurred(frame: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 under a Gaussian blur of radius H/16: objects smaller than ~H/8 disappear."""
    from PIL import Image, ImageFilter

    return np.asarray(Image.fromarray(frame).filter(ImageFilter.GaussianBlur(max(1.0, frame.shape[0] / 16))))


# fill name -> (frame (H, W, 3), mask (H, W), rng) -> the masked pixels' new values, (n, 3) or (3,)
FILLS = {
    "blur": lambda frame, mask, rng: _blurred(frame)[mask],
    "mean": lambda frame, mask, rng: np.round(frame.reshape(-1, 3).mean(0)).astype(np.uint8),
    "noise": lambda frame, mask, rng: rng.integers(0, 256, size=(int(mask.sum()), 3), dtype=np.uint8),
}


def _shifted(high: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``high`` moved by the in-image offset of least overlap with itself (random among ties)."""
    H, W = high.shape
    ys, xs = np.nonzero(high)
    f = np.fft.rfft2(high.astype(np.float64), s=(2 * H, 2 * W))  # zero-padded: no circular aliasing
    overlap = np.rint(np.fft.irfft2(f * np.conj(f), s=(2 * H, 2 * W)))  # (2H, 2W) |high ∩ shift(high, d)|
    dys, dxs = np.arange(-ys.min(), H - ys.max()), np.arange(-xs.min(), W - xs.max())  # offsets staying inside
    ov = overlap[np.ix_(dys % (2 * H), dxs % (2 * W))]  # (len(dys), len(dxs))
    best = np.argwhere(ov == ov.min())
    i, j = best[rng.integers(len(best))]
    return np.roll(high, (int(dys[i]), int(dxs[j])), axis=(0, 1))  # nothing wraps: the offset keeps high inside


def mask_regions(
    attn_frame: Any, area_frac: float = 0.1, n_random: int = 10, rng: np.random.Generator | int | None = None
) -> dict[str, np.ndarray]:
    """Equal-area (H, W) bool masks cut from an (H, W) attention map on the frame.

    All but ``whole`` hold exactly ``max(1, round(area_frac·H·W))`` pixels: ``high`` the most
    attended, ``low`` the least (ranked once, ties in row-major order, so the two are disjoint
    whenever area_frac <= 0.5), ``random_0 … random_{n-1}`` blobs from :func:`random_blobs`,
    ``shifted`` the high region translated (no wrapping) by the in-image offset that overlaps it
    least — it equals ``high`` when high spans the image and cannot move. ``whole``: every pixel.
    """
    a = _array(attn_frame).astype(np.float64)
    if a.ndim != 2 or not np.isfinite(a).all():
        raise ValueError(f"attn_frame must be a finite (H, W) map, got shape {a.shape}; pick one camera and frame")
    if not 0 < area_frac <= 1 or n_random < 0:
        raise ValueError(
            f"area_frac={area_frac} must be a pixel fraction in (0, 1] (0.1 is usual), n_random={n_random} >= 0"
        )
    rng = np.random.default_rng(rng)
    H, W = a.shape
    area = max(1, round(area_frac * H * W))
    rank = np.empty(H * W, dtype=np.int64)
    rank[np.argsort(-a.ravel(), kind="stable")] = np.arange(H * W)  # 0 = most attended
    out = {"high": (rank < area).reshape(H, W), "low": (rank >= H * W - area).reshape(H, W)}
    out.update({f"random_{i}": b for i, b in enumerate(random_blobs((H, W), area, n_random, rng))})
    out["shifted"] = _shifted(out["high"], rng)
    out["whole"] = np.ones((H, W), dtype=bool)
    return out


def apply_fill(frame: Any, mask: Any, fill: str = "blur", rng: np.random.Generator | int | None = None) -> np.ndarray:
    """A copy of ``frame`` (H, W, 3) uint8 with the (H, W) bool ``mask`` painted by ``fill``:
    ``blur`` (the frame under a Gaussian blur of radius H/16, pasted in the mask), ``mean`` (the
    frame's mean colour) or ``noise`` (uniform uint8 noise from ``rng``)."""
    f, m = _array(frame), _array(mask)
    if f.dtype != np.uint8 or f.ndim != 3 or f.shape[2] != 3:
        raise ValueError(f"frame must be an (H, W, 3) uint8 image, got {f.dtype} {f.shape}; pass the raw camera frame")
    if m.dtype != np.bool_ or m.shape != f.shape[:2]:
        raise ValueError(f"mask must be bool {f.shape[:2]} like the frame, got {m.dtype} {m.shape}; use mask_regions")
    if fill not in FILLS:
        raise ValueError(f"fill={fill!r} is unknown; choose from {sorted(FILLS)}")
    out = f.copy()
    if m.any():
        out[m] = FILLS[fill](f, m, np.random.default_rng(rng))
    return out


def _chunks(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = _array(a).astype(np.float64), _array(b).astype(np.float64)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"a and b must be action chunks of one shape (..., T, D), got {a.shape} and {b.shape}")
    return a, b


def scale_invariant_mse(a: Any, b: Any) -> float | np.ndarray:
    """MSE between chunk ``a`` (..., T, D) and ``b`` rescaled onto it: mean((a − s·b)²) with
    s = max(0, <a,b>/<b,b>) (s = 0 when b = 0). A uniform change of step size (b = c·a, c > 0)
    scores 0, so it measures a change of the chunk's *shape/direction*; s is kept >= 0 so a
    reversed chunk is a change (it scores mean(a²), as b = 0 does). Units: squared action units.
    A float for one chunk pair, else an array over the leading dims."""
    a, b = _chunks(a, b)
    ab, bb = (a * b).sum((-2, -1)), (b * b).sum((-2, -1))
    s = np.clip(np.where(bb > 0, ab / np.where(bb > 0, bb, 1.0), 0.0), 0.0, None)
    err = ((a - s[..., None, None] * b) ** 2).mean((-2, -1))
    return float(err) if err.ndim == 0 else err


def direction_cosine(a: Any, b: Any) -> float | np.ndarray:
    """Cosine between the chunks' mean xyz motions (the first 3 action dims averaged over T):
    1 = same heading, −1 = reversed, blind to speed; NaN when either mean motion is zero.
    A float for one (T, D) pair, else an array over the leading dims."""
    a, b = _chunks(a, b)
    if a.shape[-1] < 3:
        raise ValueError(f"direction_cosine needs >= 3 action dims (xyz first), got D={a.shape[-1]}")
    u, v = a[..., :3].mean(-2), b[..., :3].mean(-2)  # (..., 3)
    den = np.sqrt((u * u).sum(-1) * (v * v).sum(-1))  # sqrt(|u|²|v|²): exactly |u|² when v = ±u
    cos = np.clip(np.where(den > 0, (u * v).sum(-1) / np.where(den > 0, den, 1.0), np.nan), -1.0, 1.0)
    return float(cos) if cos.ndim == 0 else cos


def _frames(frames: Mapping, fn: str) -> tuple[dict[str, np.ndarray], list[str], np.ndarray]:
    missing = [k for k in ("images", "instructions", "state") if k not in frames]
    if missing:
        raise ValueError(f"{fn}: the frames lack {missing}; pass {FRAMES_HELP}")
    text, state = list(frames["instructions"]), _array(frames["state"]).astype(np.float32)
    images = {c: _array(v) for c, v in frames["images"].items()}
    for c, v in images.items():
        if v.dtype != np.uint8 or v.ndim != 4 or v.shape[-1] != 3 or len(v) != len(text) or len(state) != len(text):
            raise ValueError(
                f"{fn}: images[{c!r}] is {v.dtype} {v.shape} with {len(text)} instructions and state {state.shape}; "
                f"pass {FRAMES_HELP}"
            )
    return images, text, state


def _batch(model: nn.Module, images: Mapping[str, np.ndarray], text: list[str], state: np.ndarray) -> dict:
    batch = model.make_batch({c: torch.from_numpy(v) for c, v in images.items()}, text, torch.from_numpy(state))
    device = next(model.parameters()).device
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _act(model: nn.Module, images: Mapping[str, np.ndarray], text: list[str], state: np.ndarray, seed: int):
    """Action chunks (B, T, D) with the flow noise of ``seed``: the same noise for every call."""
    out = model.sample_actions(_batch(model, images, text, state), generator=torch.Generator().manual_seed(seed))
    return out.float().cpu().numpy()


def _change(ref: np.ndarray, out: np.ndarray, state: np.ndarray, origin: str) -> dict[str, np.ndarray]:
    """(B,) scale-invariant MSE and direction cosine of ``out`` vs ``ref`` (B, T, D), as motions."""
    o = state[:, None, : ref.shape[-1]] if origin == "state" else 0.0  # (B, 1, D) the current pose
    return {"si_mse": scale_invariant_mse(ref - o, out - o), "cosine": direction_cosine(ref - o, out - o)}


def _check_origin(origin: str, state: np.ndarray, ref: np.ndarray, fn: str) -> None:
    if origin not in ORIGINS or (origin == "state" and state.shape[-1] < ref.shape[-1]):
        raise ValueError(
            f"{fn}: origin={origin!r} must be one of {ORIGINS}; 'state' subtracts state[:, :{ref.shape[-1]}] and "
            f"state has {state.shape[-1]} dims — pass origin='none' for delta actions"
        )


def _frame_maps(model: nn.Module, batch: dict, images: Mapping, layer: int, phase: str, seed: int) -> dict:
    """camera -> [(H, W) map on each keyframe]: one layer and phase, mean over heads."""
    maps = extract_attention(model, batch, [layer], [phase], seed=seed)[(phase, layer)].maps  # (B, heads, r, c)
    return {
        c: [model.image_transform(images[c].shape[1:3]).grid_to_frame(g.float().mean(0).cpu()).numpy() for g in grid]
        for c, grid in maps.items()
    }


@dataclass
class FaithfulnessResult:
    """The action change per condition for B keyframes, as (B,) arrays ``{"si_mse", "cosine"}``.

    ``changes[(view, fill, condition)]``: view ``"all"`` or a camera (only it masked), condition
    ``high``, ``low``, ``random_i``, ``random`` (mean over the blobs), ``shifted``, ``whole``.
    ``noise_floor``: unmasked frames, noise seed+1. ``repeat``: unmasked, the same seed — 0 on a
    deterministic device (a check, not a control). ``shifted_overlap[camera]`` (B,): share of
    ``shifted`` inside ``high`` (1 when high spans the frame and cannot move). ``area[camera]``:
    pixels per equal-area mask."""

    changes: dict[tuple[str, str, str], dict[str, np.ndarray]]
    noise_floor: dict[str, np.ndarray]
    repeat: dict[str, np.ndarray]
    shifted_overlap: dict[str, np.ndarray]
    area: dict[str, int]


@torch.no_grad()
def faithfulness(
    model: nn.Module,
    episode_frames: Mapping,
    layer: int,
    phase: str = "prefix",
    camera_set: Sequence[str] = ("all",),
    area_frac: float = 0.1,
    fills: Sequence[str] = ("blur", "mean"),
    n_random: int = 10,
    seed: int = 0,
    origin: str = "state",
    progress: bool = False,
) -> FaithfulnessResult:
    """Mask each condition's region of B keyframes and measure how the action chunk changes.

    ``model``: a TinyVLA-like policy in eval mode (``make_batch``, ``sample_actions``,
    ``token_layout``, ``image_transform``); ``episode_frames``: {'images': {camera: (B, H, W, 3)
    uint8}, 'instructions', 'state' (B, S)}. The map is ``phase``/``layer`` mean over heads; each
    run uses the noise of ``seed``. ``origin="state"`` compares chunks minus state[:, :D]
    (absolute targets -> motions); ``"none"`` for delta actions.
    """
    images, text, state = _frames(episode_frames, "faithfulness")
    bad = [f for f in fills if f not in FILLS]
    if bad or not 0 < area_frac <= 1:
        raise ValueError(f"faithfulness: fills {bad} not in {sorted(FILLS)}, or area_frac={area_frac} not in (0, 1]")
    ref = _act(model, images, text, state, seed)  # (B, T, D)
    _check_origin(origin, state, ref, "faithfulness")
    fmaps = _frame_maps(model, _batch(model, images, text, state), images, layer, phase, seed)
    cams = list(fmaps)
    unknown = [v for v in camera_set if v != "all" and v not in cams]
    if unknown or not camera_set:
        raise ValueError(f"faithfulness: camera_set {list(camera_set)} must name 'all' or cameras from {cams}")
    rng = np.random.default_rng(seed)
    masks = {c: [mask_regions(f, area_frac, n_random, rng) for f in fmaps[c]] for c in cams}
    conditions = list(masks[cams[0]][0])
    runs = [(v, f, k) for v in camera_set for f in fills for k in conditions]
    from tqdm.auto import tqdm

    changes: dict[tuple[str, str, str], dict[str, np.ndarray]] = {}
    for view, fill, cond in tqdm(runs, desc="faithfulness", disable=not progress):
        masked = dict(images)
        for c in cams if view == "all" else [view]:
            masked[c] = np.stack([apply_fill(f, m[cond], fill, rng) for f, m in zip(images[c], masks[c], strict=True)])
        changes[(view, fill, cond)] = _change(ref, _act(model, masked, text, state, seed), state, origin)
    for view in camera_set:
        for fill in fills if n_random else ():
            blobs = [changes[(view, fill, f"random_{i}")] for i in range(n_random)]
            changes[(view, fill, "random")] = {k: np.mean([b[k] for b in blobs], 0) for k in ("si_mse", "cosine")}
    area = {c: int(masks[c][0]["high"].sum()) for c in cams}
    return FaithfulnessResult(
        changes,
        noise_floor=_change(ref, _act(model, images, text, state, seed + 1), state, origin),
        repeat=_change(ref, _act(model, images, text, state, seed), state, origin),
        shifted_overlap={c: np.array([(m["shifted"] & m["high"]).sum() / area[c] for m in masks[c]]) for c in cams},
        area=area,
    )


class DeletionCurve(NamedTuple):
    """Action change as patches are removed: ``fraction`` (steps+1,) of patches gone,
    ``si_mse`` and ``cosine`` (B, steps+1), ``auc`` (B,) the trapezoid area under si_mse."""

    fraction: np.ndarray
    si_mse: np.ndarray
    cosine: np.ndarray
    auc: np.ndarray


@torch.no_grad()
def deletion_curve(
    model: nn.Module,
    batch_inputs: Mapping,
    attn_grid: Mapping[str, Any],
    order: str = "most",
    steps: int = 8,
    seed: int = 0,
    origin: str = "state",
) -> DeletionCurve:
    """Remove patches most- (``order="most"``) or least-attended first and measure the change.

    ``batch_inputs``: frames as for :func:`faithfulness`; ``attn_grid``: camera -> (B, rows, cols)
    patch map (mean over heads), ranked jointly over the cameras given (only they lose patches).
    At fraction f the round(f·N) first patches of the ranking (ties: camera order, row-major) are
    set to the frame's mean colour over their pixels through ``model.image_transform``.
    """
    images, text, state = _frames(batch_inputs, "deletion_curve")
    if order not in ORDERS or steps < 1:
        raise ValueError(f"deletion_curve: order={order!r} must be one of {ORDERS} and steps={steps} >= 1")
    grids = {c: _array(g).astype(np.float64) for c, g in attn_grid.items()}
    for c, g in grids.items():
        if c not in images or g.ndim != 3 or len(g) != len(text):
            raise ValueError(
                f"deletion_curve: attn_grid[{c!r}] is {g.shape}; expected (B={len(text)}, rows, cols) for a camera "
                f"in {list(images)} — average heads with maps[c].mean(1)"
            )
    ids, start = {}, 0  # camera -> (H, W) index of each pixel's patch among all N patches, -1 off the input
    for c, g in grids.items():
        number = torch.arange(start + 1, start + g[0].size + 1, dtype=torch.float64).reshape(g.shape[1:])
        ids[c] = model.image_transform(images[c].shape[1:3]).grid_to_frame(number).round().long().numpy() - 1
        start += g[0].size
    flat = np.concatenate([g.reshape(len(g), -1) for g in grids.values()], 1)  # (B, N) every patch
    rank = np.argsort(-flat if order == "most" else flat, axis=1, kind="stable")  # (B, N)
    ref = _act(model, images, text, state, seed)
    _check_origin(origin, state, ref, "deletion_curve")
    fraction = np.linspace(0.0, 1.0, steps + 1)
    points = []
    for f in fraction:
        gone = rank[:, : round(f * flat.shape[1])]  # (B, k)
        masked = dict(images)
        for c in grids:
            masked[c] = np.stack([apply_fill(images[c][b], np.isin(ids[c], gone[b]), "mean") for b in range(len(text))])
        points.append(_change(ref, _act(model, masked, text, state, seed), state, origin))
    si = np.stack([p["si_mse"] for p in points], 1)  # (B, steps+1)
    auc = ((si[:, 1:] + si[:, :-1]) / 2 * np.diff(fraction)).sum(1)
    return DeletionCurve(fraction, si, np.stack([p["cosine"] for p in points], 1), auc)
