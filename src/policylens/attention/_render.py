"""Attention maps as pictures: normalise a map, colour it, blend it over the frame, tile heads/layers.

Pure functions on arrays: a frame is (H, W, 3) uint8; a map is (h, w) on the patch grid or
the pixel grid (NumPy, or a torch tensor of any device and float dtype) and is assumed to cover
the whole frame; if the model saw a crop or a pad of the frame, undo that first. Upsampling uses
half-pixel centres like ``_overlap.resize_to`` (bilinear equal up to its mass rescale; nearest
may differ only on pixels centred exactly on a patch border), so overlays show what it measures.
Colour maps come from matplotlib's registry only (no pyplot, no backend switch, so importing
this never changes a notebook's plotting state); resampling and text use Pillow.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

MODES = ("minmax", "global", "log")
RESAMPLES = {"bilinear": Image.Resampling.BILINEAR, "nearest": Image.Resampling.NEAREST}
LOG_GAIN = 1000.0  # log mode spans three decades below the map's maximum
_GAP = 2  # pixels between tiles in head_grid / layer_strip
_BACKGROUND = 32  # grey level of gaps and empty tiles


def normalize_map(attn, mode: str = "minmax", vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Scale one attention map (h, w) to float32 values in [0, 1].

    - ``"minmax"`` (default): ``(a - a.min()) / (a.max() - a.min())``; each map uses its own
      full colour range, so maps are comparable in shape, not in strength.
    - ``"global"``: ``clip((a - vmin) / (vmax - vmin), 0, 1)`` with ``vmin``/``vmax`` supplied by
      the caller and shared across the maps being compared (e.g. ``maps.min()``, ``maps.max()``),
      so equal colours mean equal attention across heads, layers or frames.
    - ``"log"``: ``log1p(LOG_GAIN * a / a.max())``, then min-max. Values a decade below the peak
      stay visible instead of vanishing next to one dominant patch (an attention sink).
      Needs a non-negative map (attention probabilities are).

    A constant map (all zero, say) gives all zeros: no part of it is hotter than another.
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not a normalisation mode; expected one of {MODES}")
    a = _check_map(attn, "attn")
    if mode != "global" and (vmin is not None or vmax is not None):
        raise ValueError(f"vmin/vmax apply to mode='global' only, got mode={mode!r}; pass mode='global'")
    if mode == "global":
        if vmin is None or vmax is None:
            raise ValueError(
                f"mode='global' needs both vmin and vmax (got vmin={vmin}, vmax={vmax}); "
                "pass the range shared by the maps you compare, e.g. vmin=maps.min(), vmax=maps.max()"
            )
        if not vmax > vmin:
            raise ValueError(f"vmax={vmax} must be greater than vmin={vmin} for mode='global'")
        return np.clip((a - vmin) / (vmax - vmin), 0.0, 1.0).astype(np.float32)
    if mode == "log":
        if a.min() < 0:
            raise ValueError(
                f"mode='log' needs a non-negative map, got min {a.min():.4g}; use mode='minmax' for signed maps"
            )
        peak = a.max()
        a = np.log1p(LOG_GAIN * a / peak) if peak > 0 else a
    return _minmax(a)


def overlay(
    frame,
    attn,
    cmap: str = "jet",
    alpha: float = 0.5,
    mode: str = "minmax",
    vmin: float | None = None,
    vmax: float | None = None,
    resample: str = "bilinear",
) -> np.ndarray:
    """Blend a coloured attention map over ``frame`` (H, W, 3) uint8 -> (H, W, 3) uint8.

    The map (h, w) is normalised on its own grid (``normalize_map`` with ``mode``/``vmin``/``vmax``),
    upsampled to (H, W) with ``resample`` ("bilinear" smooths across patches, "nearest" keeps
    one flat block per patch), coloured with the matplotlib colour map ``cmap`` (default "jet":
    0 -> dark blue, 1 -> dark red), and blended: ``out = (1 - alpha) * frame + alpha * colour``.
    """
    img = _check_frame(frame)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must lie in [0, 1] (0 = frame only, 1 = colour map only)")
    if resample not in RESAMPLES:
        raise ValueError(f"resample={resample!r} is not supported; expected one of {tuple(RESAMPLES)}")
    colormap = _colormap(cmap)
    norm = normalize_map(attn, mode=mode, vmin=vmin, vmax=vmax)  # (h, w)
    H, W = img.shape[:2]
    if norm.shape != (H, W):
        norm = np.asarray(Image.fromarray(norm).resize((W, H), RESAMPLES[resample]))  # (H, W)
    colour = colormap(np.clip(norm, 0.0, 1.0))[..., :3] * 255.0  # (H, W, 3)
    out = (1.0 - alpha) * img.astype(np.float32) + alpha * colour
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def head_grid(
    frame,
    attn_heads,
    cols: int | None = None,
    titles: bool | Sequence[str] = True,
    **overlay_kwargs,
) -> np.ndarray:
    """One ``overlay`` per head (n_heads, h, w), tiled row-major -> uint8 image.

    ``cols`` defaults to ceil(sqrt(n_heads)) (capped at n_heads); the image is (rows * H + (rows - 1) * 2,
    cols * W + (cols - 1) * 2, 3) with 2-pixel grey gaps. ``titles``: True labels tiles
    "head i", a sequence gives one label per head, False draws none. ``overlay_kwargs`` go to
    ``overlay``; with ``mode="global"`` and no vmin/vmax, the range of all heads is shared.
    """
    maps = _check_stack(attn_heads, "attn_heads")
    n = len(maps)
    if cols is None:
        cols = math.ceil(math.sqrt(n))
    if isinstance(cols, bool) or not isinstance(cols, int) or cols < 1:
        raise ValueError(f"cols={cols!r} must be a positive int, or None for ceil(sqrt(n_heads))")
    labels = _labels(titles, n, "head", "titles")
    tiles = [overlay(frame, m, **_shared_range(maps, overlay_kwargs)) for m in maps]
    return _tile(tiles, cols, labels)


def layer_strip(frame, attn_layers, labels: Sequence[str] | None = None, **overlay_kwargs) -> np.ndarray:
    """One labelled ``overlay`` per layer (n_layers, h, w) side by side in one row -> uint8 image.

    ``labels`` (one per layer, e.g. tap names) default to "layer i"; the image is
    (H, n_layers * W + (n_layers - 1) * 2, 3). ``overlay_kwargs`` as in ``head_grid``.
    """
    maps = _check_stack(attn_layers, "attn_layers")
    names = _labels(True if labels is None else labels, len(maps), "layer", "labels")
    tiles = [overlay(frame, m, **_shared_range(maps, overlay_kwargs)) for m in maps]
    return _tile(tiles, len(tiles), names)


def most_active_head(attn_heads, by: str = "variance") -> int:
    """Index of the most focused head among (n_heads, h, w) maps.

    ``by="variance"``: largest spatial variance of the raw map (a head that puts its mass on a
    few patches, weighted by how much mass it gives the image). ``by="entropy"``: lowest entropy
    of the map made a distribution (``a / a.sum()``, non-negative maps only; an all-zero map
    counts as uniform). Ties go to the lowest index.
    """
    maps = _check_stack(attn_heads, "attn_heads")
    maps = maps.reshape(maps.shape[0], -1)  # (n_heads, h*w)
    if by == "variance":
        return int(np.argmax(maps.var(axis=1)))
    if by == "entropy":
        if maps.min() < 0:
            raise ValueError(f"by='entropy' needs non-negative maps, got min {maps.min():.4g}; use by='variance'")
        total = maps.sum(axis=1, keepdims=True)
        p = np.where(total > 0, maps / np.where(total > 0, total, 1.0), 1.0 / maps.shape[1])
        entropy = -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)
        return int(np.argmin(entropy))
    raise ValueError(f"by={by!r} is not a criterion; expected one of ('variance', 'entropy')")


def save_image(img, path: str | Path, quality: int = 90) -> Path:
    """Write a uint8 image (H, W, 3) or (H, W): ``.jpg``/``.jpeg`` -> JPEG at ``quality``
    (1-95; PNG is lossless and has no quality), ``.png`` -> PNG. Parent folders are created."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".jpg", ".jpeg", ".png"):
        raise ValueError(f"path {path} has suffix {suffix!r}; expected '.jpg', '.jpeg' or '.png'")
    arr = np.asarray(img)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"img must be uint8 (H, W, 3) or (H, W), got {arr.dtype} {arr.shape}")
    if not 1 <= quality <= 95:
        raise ValueError(f"quality={quality} must lie in 1..95 (Pillow's JPEG scale)")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".png":
        Image.fromarray(arr).save(path)
    else:
        Image.fromarray(arr).save(path, quality=quality)
    return path


def _minmax(a: np.ndarray) -> np.ndarray:
    lo, hi = a.min(), a.max()
    if hi <= lo:
        return np.zeros(a.shape, np.float32)
    return ((a - lo) / (hi - lo)).astype(np.float32)


def _float_array(x) -> np.ndarray:
    """float64 copy of an array or a torch tensor (any device or float dtype, e.g. bfloat16)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def _check_map(attn, name: str) -> np.ndarray:
    a = _float_array(attn)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"{name} must be a non-empty 2-D map (h, w), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds {int((~np.isfinite(a)).sum())} non-finite values; replace NaN/inf first")
    return a


def _check_stack(maps, name: str) -> np.ndarray:
    a = _float_array(maps)
    if a.ndim != 3 or a.shape[0] == 0:
        raise ValueError(f"{name} must be a stack of maps (n, h, w) with n >= 1, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} holds {int((~np.isfinite(a)).sum())} non-finite values; replace NaN/inf first")
    return a


def _check_frame(frame) -> np.ndarray:
    img = np.asarray(frame)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(
            f"frame must be RGB uint8 (H, W, 3), got {img.dtype} {img.shape}; "
            "drop alpha with frame[..., :3] and convert floats in [0, 1] with (frame * 255).astype(np.uint8)"
        )
    return img


def _colormap(name: str):
    try:
        return matplotlib.colormaps[name]
    except KeyError:
        names = sorted(n for n in matplotlib.colormaps if not n.endswith("_r"))
        raise ValueError(
            f"cmap={name!r} is not a matplotlib colour map; expected one of {names} (append '_r' to reverse one)"
        ) from None


def _shared_range(maps: np.ndarray, kwargs: dict) -> dict:
    if kwargs.get("mode") == "global" and kwargs.get("vmin") is None and kwargs.get("vmax") is None:
        return {**kwargs, "vmin": float(maps.min()), "vmax": float(maps.max())}
    return kwargs


def _labels(titles, n: int, word: str, name: str) -> list[str] | None:
    if titles is True:
        return [f"{word} {i}" for i in range(n)]
    if titles is False:
        return None
    if isinstance(titles, str) or len(titles) != n:
        raise ValueError(f"{name} must be a bool or {n} strings (one per map), got {titles!r}")
    return [str(t) for t in titles]


def _tile(tiles: list[np.ndarray], cols: int, labels: list[str] | None) -> np.ndarray:
    H, W = tiles[0].shape[:2]
    rows = math.ceil(len(tiles) / cols)
    cols = min(cols, len(tiles))
    out = np.full((rows * H + (rows - 1) * _GAP, cols * W + (cols - 1) * _GAP, 3), _BACKGROUND, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (H + _GAP) : r * (H + _GAP) + H, c * (W + _GAP) : c * (W + _GAP) + W] = tile
    if labels is None:
        return out
    canvas = Image.fromarray(out)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=max(8, min(H, W) // 12))  # bitmap font if Pillow lacks FreeType
    for i, text in enumerate(labels):
        r, c = divmod(i, cols)
        x, y = c * (W + _GAP) + 2, r * (H + _GAP) + 1
        box = draw.textbbox((x, y), text, font=font)
        draw.rectangle((box[0] - 1, box[1] - 1, box[2] + 1, box[3] + 1), fill=(0, 0, 0))
        draw.text((x, y), text, fill=(255, 255, 255), font=font)
    return np.asarray(canvas)
