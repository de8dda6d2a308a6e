"""From image tokens to pixels: a camera's patch grid and the preprocessing that made its input.

A camera's image tokens are ``prefix_tokens`` special tokens (CLS, registers; often 0) then a
``rows × cols`` grid of patches in row-major order (:class:`PatchGrid`). The grid covers the
model's input image, which came from the camera frame by an optional crop, a resize (plain, or
keeping the aspect ratio inside padding bars) and an optional horizontal flip
(:class:`ImageTransform`, recorded per sample). :meth:`ImageTransform.grid_to_frame` carries a
per-patch map back onto the original frame; what falls on padding bars is reported by
:meth:`ImageTransform.padding_mass`, never drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = ["ImageTransform", "PatchGrid"]


@dataclass(frozen=True)
class PatchGrid:
    """``rows × cols`` patches, row-major, after ``prefix_tokens`` special tokens."""

    rows: int
    cols: int
    prefix_tokens: int = 0

    @property
    def n_tokens(self) -> int:
        return self.prefix_tokens + self.rows * self.cols

    def to_grid(self, values: Tensor) -> Tensor:
        """``(..., n_tokens)`` per-token values of one camera -> ``(..., rows, cols)``."""
        if values.shape[-1] != self.n_tokens:
            raise ValueError(
                f"PatchGrid.to_grid: got {values.shape[-1]} tokens, expected {self.prefix_tokens} prefix tokens + "
                f"{self.rows}x{self.cols} patches = {self.n_tokens}; pass the camera's image-token block."
            )
        return values[..., self.prefix_tokens :].reshape(*values.shape[:-1], self.rows, self.cols)


@dataclass(frozen=True)
class ImageTransform:
    """How a ``frame_size`` (H, W) camera frame became the ``input_size`` (h, w) model input.

    ``crop``: ``(top, left, height, width)`` taken from the frame first (None: the whole
    frame). ``pad``: ``(top, left, bottom, right)`` bars in input pixels around the resized
    content (resize-with-pad); ``hflip``: the input was mirrored left-right.
    """

    frame_size: tuple[int, int]
    input_size: tuple[int, int]
    crop: tuple[int, int, int, int] | None = None
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    hflip: bool = False

    @classmethod
    def resize(cls, frame_size: tuple[int, int], input_size: tuple[int, int], **kw) -> ImageTransform:
        """A plain resize (aspect ratio not kept), as TinyVLA's ``make_batch`` does."""
        return cls(tuple(frame_size), tuple(input_size), **kw)

    @classmethod
    def resize_with_pad(
        cls, frame_size: tuple[int, int], input_size: tuple[int, int], bars: str = "centre", **kw
    ) -> ImageTransform:
        """Keep the aspect ratio, pad the short side. ``bars="centre"`` splits the padding
        (the odd pixel at the bottom / right), as LeRobot's pi0 / pi0.5 ``resize_with_pad_torch``
        and openpi do; ``bars="top_left"`` puts it all at the top and left, as SmolVLA's
        ``resize_with_pad`` does. Sizes are rounded the way both round them."""
        if bars not in ("centre", "top_left"):
            raise ValueError(f"ImageTransform.resize_with_pad: bars={bars!r}; use 'centre' or 'top_left'")
        crop = kw.get("crop")
        src_h, src_w = (crop[2], crop[3]) if crop else frame_size
        h, w = input_size
        ratio = max(src_w / w, src_h / h)
        pad_h, pad_w = h - int(src_h / ratio), w - int(src_w / ratio)
        if bars == "top_left":
            pad = (pad_h, pad_w, 0, 0)
        else:
            pad = (pad_h // 2, pad_w // 2, pad_h - pad_h // 2, pad_w - pad_w // 2)
        return cls(tuple(frame_size), (h, w), pad=pad, **kw)

    def _content(self) -> tuple[int, int, int, int]:
        top, left, bottom, right = self.pad
        h, w = self.input_size
        return top, left, h - top - bottom, w - left - right

    def input_map(self, grid_map: Tensor) -> Tensor:
        """``(rows, cols)`` per-patch map -> ``(h, w)`` per input pixel (each patch's value on
        its pixels), un-flipped."""
        up = F.interpolate(grid_map[None, None].float(), size=self.input_size, mode="nearest")[0, 0]
        return up.flip(-1) if self.hflip else up

    def padding_mass(self, grid_map: Tensor) -> float:
        """Share of the map's mass on padding bars (per input pixel, patch values spread evenly)."""
        up = self.input_map(grid_map)
        top, left, h, w = self._content()
        total = float(up.sum())
        return 0.0 if total == 0 else 1.0 - float(up[top : top + h, left : left + w].sum()) / total

    def grid_to_frame(self, grid_map: Tensor, mode: str = "nearest") -> Tensor:
        """``(rows, cols)`` per-patch map -> ``(H, W)`` on the original frame: padding removed,
        the content resized back to the crop (or the frame) and placed there; 0 outside a crop.
        ``mode``: ``nearest`` keeps patch edges, ``bilinear`` smooths them."""
        up = self.input_map(grid_map)
        top, left, h, w = self._content()
        content = up[top : top + h, left : left + w]
        frame_h, frame_w = self.frame_size
        ct, cl, ch, cw = self.crop or (0, 0, frame_h, frame_w)
        kw = {"align_corners": False} if mode == "bilinear" else {}
        back = F.interpolate(content[None, None], size=(ch, cw), mode=mode, **kw)[0, 0]
        out = torch.zeros(frame_h, frame_w, dtype=back.dtype)
        out[ct : ct + ch, cl : cl + cw] = back
        return out
