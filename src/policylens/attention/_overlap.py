"""Object-overlap metrics: does an attention heat map land on the object the words name?

Every metric reads the map as a distribution: ``attn`` (H, W) is non-negative and is divided
by its own sum here, so maps from any layer, head or resolution compare. The object's area
fraction A is always reported beside the mass E inside it, because a uniform map already
scores E = A; ``ratio`` (E/A) and ``concentration`` (the inside/outside odds ratio) are 1 for
it. Masks come from PNG files or COCO RLE (decoded here, column-major as COCO stores them);
``random_blobs`` makes equal-area controls and ``resize_to`` lifts a patch grid to pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["mask_from_coco_rle", "mask_from_png", "otsu_threshold", "overlap_metrics", "random_blobs", "resize_to"]

RESIZE_MODES = ("nearest", "bilinear")


def _array(x: Any) -> np.ndarray:
    """A numpy view of an array or a (CPU or device, any float dtype) torch tensor."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().cpu()
        x = x.float() if x.is_floating_point() else x
        return x.numpy()
    return np.asarray(x)


def _check_map(attn: Any, name: str = "attn") -> np.ndarray:
    a = _array(attn).astype(np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (H, W) map, got shape {a.shape}; select one layer/head/camera first")
    bad = int((~np.isfinite(a)).sum())
    if bad or (a < 0).any():
        lo = a[np.isfinite(a)].min() if bad < a.size else float("nan")
        raise ValueError(
            f"{name} must be finite and non-negative, got {bad} non-finite values and min {lo:.3g}; "
            "pass attention probabilities (softmax output)"
        )
    if a.sum() <= 0:
        raise ValueError(f"{name} sums to {a.sum():.3g}; a map with no mass cannot be normalised to sum 1")
    return a


def _check_mask(mask: Any, shape: tuple[int, ...], name: str = "mask") -> np.ndarray:
    m = _array(mask)
    if m.dtype != np.bool_:
        if not np.isin(m, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1), got dtype {m.dtype} with other values; use m > 0")
        m = m.astype(bool)
    if m.shape != shape:
        raise ValueError(
            f"{name} has shape {m.shape} but attn has {shape}; resize attn with resize_to(attn, {m.shape})"
        )
    return m


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else float("nan")


def otsu_threshold(values: Any, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (any shape) on a ``bins``-bin histogram over [min, max].

    Returns the bin edge t that maximises the between-class variance of {v < t} and {v >= t}
    (first maximum on ties), or NaN for a constant input, which no threshold splits.
    """
    v = _array(values).astype(np.float64).ravel()
    if v.size == 0 or not np.isfinite(v).all():
        raise ValueError(f"values must be non-empty and finite, got {v.size} values; drop NaN/inf first")
    if v.min() == v.max():
        return float("nan")
    counts, edges = np.histogram(v, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(counts)[:-1]  # (bins-1,) pixels in bins 0..k
    s0 = np.cumsum(counts * centres)[:-1]
    w1, s1 = v.size - w0, (counts * centres).sum() - s0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (s0 / w0 - s1 / w1) ** 2
    between = np.where((w0 > 0) & (w1 > 0), between, -1.0)
    return float(edges[int(np.argmax(between)) + 1])


def overlap_metrics(attn: Any, mask: Any, top_k: float | str = 0.1, objects_union: Any = None) -> dict[str, float]:
    """Overlap of an attention map with one object mask.

    ``attn`` (H, W) non-negative (normalised to sum 1 here); ``mask`` and ``objects_union``
    (H, W) bool. Returns floats:

    - ``mass`` E: attention mass inside the mask; ``area`` A: the mask's pixel fraction.
    - ``ratio`` E/A (NaN when A = 0). A uniform map gives E = A and ratio 1.
    - ``concentration``: the odds ratio E(1−A) / (A(1−E)); 1 for a uniform map. NaN when
      A is 0 or 1 (no inside/outside contrast); inf when E = 1 with 0 < A < 1; 0 when E = 0.
    - ``pointing``: 1.0 if the argmax pixel (first in row-major order on ties) is in the mask.
    - ``iou_topk``: IoU of the round(top_k·H·W) highest-attention pixels (at least 1; ties by
      row-major order) with the mask; ``top_k="area"`` uses A, so both regions have equal area.
    - ``iou_otsu``: IoU of {attn >= Otsu threshold} with the mask; NaN for a constant map.
    - ``background``: mass outside ``objects_union`` (the union of every object mask in the
      scene, this one included: task-irrelevant background), or outside ``mask`` when omitted.
    """
    a = _check_map(attn)
    m = _check_mask(mask, a.shape)
    n, n_in = m.size, int(m.sum())
    n_out = n - n_in
    total = a.sum()
    inside, outside = a[m].sum(), a[~m].sum()  # E = inside/total computed without renormalising (E = A exactly for 1s)
    E, A = float(inside / total), n_in / n
    if n_in in (0, n):
        concentration = float("nan")
    elif outside == 0:
        concentration = float("inf")
    else:
        concentration = float((inside * n_out) / (outside * n_in))
    if isinstance(top_k, str):
        if top_k != "area":
            raise ValueError(f"top_k must be a fraction in (0, 1] or 'area', got {top_k!r}")
        frac = A
    elif not 0 < top_k <= 1:
        raise ValueError(f"top_k must be a fraction of pixels in (0, 1] or 'area', got {top_k}")
    else:
        frac = float(top_k)
    k = max(1, round(frac * n))
    top = np.zeros(n, dtype=bool)
    top[np.argsort(-a.ravel(), kind="stable")[:k]] = True
    t = otsu_threshold(a)
    if objects_union is None:
        background = outside / total
    else:
        u = _check_mask(objects_union, a.shape, "objects_union")
        if (m & ~u).any():
            raise ValueError(
                f"objects_union must contain mask (it is the union of all object masks, this one included); "
                f"{int((m & ~u).sum())} mask pixels lie outside it; pass objects_union | mask"
            )
        background = a[~u].sum() / total
    return {
        "mass": E,
        "area": A,
        "ratio": E / A if n_in else float("nan"),
        "concentration": concentration,
        "pointing": float(m.flat[int(np.argmax(a))]),
        "iou_topk": _iou(top.reshape(a.shape), m),
        "iou_otsu": float("nan") if np.isnan(t) else _iou(a >= t, m),
        "background": float(background),
    }


def random_blobs(
    shape: tuple[int, int], area: int, n: int, rng: np.random.Generator | int | None = None, max_aspect: float = 2.0
) -> np.ndarray:
    """``n`` random 4-connected blobs of exactly ``area`` pixels inside an (H, W) image: (n, H, W) bool.

    Each blob is the ``area`` pixels nearest a random centre pixel under an axis-aligned
    elliptical metric (x/y scale ratio drawn log-uniformly in [1/max_aspect, max_aspect]),
    random among equal distances, counting only pixels inside the image. Every chosen pixel
    has a 4-neighbour strictly nearer the centre, so the blob is connected even at a border.
    """
    H, W = (int(s) for s in shape)
    if H < 1 or W < 1:
        raise ValueError(f"shape must be (H, W) with H, W >= 1, got {shape}")
    if not 1 <= area <= H * W:
        raise ValueError(f"area must be a pixel count in [1, {H * W}] for shape {shape}, got {area}")
    if n < 0 or max_aspect < 1:
        raise ValueError(f"n must be >= 0 and max_aspect >= 1, got n={n}, max_aspect={max_aspect}")
    rng = np.random.default_rng(rng)
    yy, xx = np.mgrid[:H, :W]  # (H, W) each
    out = np.zeros((n, H * W), dtype=bool)
    for i in range(n):
        cy, cx = rng.integers(H), rng.integers(W)
        s = np.exp(rng.uniform(-1, 1) * np.log(max_aspect) / 2)  # x scale s, y scale 1/s
        d = ((xx - cx) / s) ** 2 + ((yy - cy) * s) ** 2  # (H, W)
        flat = d.ravel()  # (H*W,)
        kth = np.partition(flat, area - 1)[area - 1]  # distance of the area-th nearest pixel
        out[i, flat < kth] = True
        ties = np.flatnonzero(flat == kth)
        out[i, rng.choice(ties, area - int((flat < kth).sum()), replace=False)] = True  # random among ties
    return out.reshape(n, H, W)


def mask_from_png(path: str | Path, label: int | None = None) -> np.ndarray:
    """Read a mask PNG as (H, W) bool: non-zero pixels, or pixels equal to ``label``.

    Grey, palette ('P', index values) and 16-bit images are read as one channel; for RGB(A)
    a pixel is in the mask when any colour channel is non-zero (alpha is ignored). ``label``
    selects one id of an instance/label map and needs a single-channel image.
    """
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path {str(path)!r} is not a file; pass the mask PNG's path")
    with Image.open(path) as img:
        arr = np.asarray(img)
    if arr.ndim == 3:
        if label is not None:
            raise ValueError(f"label={label} needs a single-channel PNG, got {arr.shape[2]} channels in {path}")
        return (arr[..., : 3 if arr.shape[2] >= 3 else 1] != 0).any(axis=-1)
    return arr == label if label is not None else arr != 0


def _counts_from_string(s: str) -> list[int]:
    """pycocotools' compressed counts: 5 bits per char (+48), 0x20 = more, 0x10 = sign, delta from counts[i-2]."""
    counts: list[int] = []
    p = 0
    while p < len(s):
        x = k = 0
        more = True
        while more:
            if p >= len(s):
                raise ValueError(f"rle counts string ends inside a number at char {p}; the string is truncated")
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def mask_from_coco_rle(rle: dict) -> np.ndarray:
    """Decode a COCO RLE ``{"size": [h, w], "counts": list[int] | str | bytes}`` to (h, w) bool.

    Runs alternate 0s and 1s starting with 0s, over pixels in column-major order; a string
    (or bytes, as pycocotools returns) is the compressed form of pycocotools' ``rleToString``.
    """
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise ValueError(f"rle must be a dict with 'size' and 'counts', got {type(rle).__name__} {str(rle)[:80]}")
    h, w = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    counts = _counts_from_string(counts) if isinstance(counts, str) else [int(c) for c in counts]
    if any(c < 0 for c in counts) or sum(counts) != h * w:
        raise ValueError(
            f"rle counts must be non-negative and sum to h*w = {h * w} for size {[h, w]}, got sum {sum(counts)}; "
            "check size is [height, width]"
        )
    values = np.arange(len(counts)) % 2 == 1  # runs start with 0s
    flat = np.repeat(values, counts)  # (h*w,) column-major
    return flat.reshape((h, w), order="F")


def _interp_matrix(n_out: int, n_in: int, mode: str) -> np.ndarray:
    """(n_out, n_in) 1-D resampling weights with half-pixel centres (align_corners=False)."""
    src = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5  # (n_out,) source coordinate of each output centre
    R = np.zeros((n_out, n_in))
    if mode == "nearest":
        R[np.arange(n_out), np.clip(np.floor(src + 0.5), 0, n_in - 1).astype(int)] = 1.0
        return R
    src = np.clip(src, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    np.add.at(R, (np.arange(n_out), lo), 1 - frac)
    np.add.at(R, (np.arange(n_out), hi), frac)
    return R


def resize_to(attn_grid: Any, size: tuple[int, int], mode: str = "bilinear") -> np.ndarray:
    """Upsample a patch-grid map (..., h, w) to pixels (..., H, W), keeping its total mass.

    ``nearest`` gives each pixel its patch's mass divided by the number of pixels that patch
    received, so every patch keeps its mass exactly. ``bilinear`` interpolates the per-pixel
    density (half-pixel centres, edges clamped, as torch's align_corners=False) and rescales
    each map to the original total. Returns float64.
    """
    if mode not in RESIZE_MODES:
        raise ValueError(f"mode must be one of {RESIZE_MODES}, got {mode!r}")
    g = _array(attn_grid).astype(np.float64)
    if g.ndim < 2:
        raise ValueError(f"attn_grid must have shape (..., h, w), got {g.shape}")
    (h, w), (H, W) = g.shape[-2:], (int(size[0]), int(size[1]))
    if h > H or w > W:
        raise ValueError(f"size {(H, W)} is smaller than the grid {(h, w)}; resize_to only upsamples — pool instead")
    Rh, Rw = _interp_matrix(H, h, mode), _interp_matrix(W, w, mode)  # (H, h), (W, w)
    if mode == "nearest":
        Rh, Rw = Rh / Rh.sum(0), Rw / Rw.sum(0)  # each patch's mass spread over its own pixels
        return np.einsum("Hh,...hw,Ww->...HW", Rh, g, Rw)
    out = np.einsum("Hh,...hw,Ww->...HW", Rh, g, Rw)
    total, new = g.sum(axis=(-2, -1), keepdims=True), out.sum(axis=(-2, -1), keepdims=True)
    return out * np.divide(total, new, out=np.zeros_like(total), where=new != 0)
