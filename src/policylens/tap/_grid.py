"""From image tokens to pixels: a camera's patch grid and the preprocessing that made its input.

A camera's image tokens are ``prefix_tokens`` special tokens (CLS, registers; often 0) then a
``rows × cols`` grid of patches in row-major order (:class:`PatchGrid`). The grid covers the
model's input image, which came from the camera frame by an optional crop, a resize (plain, or
keeping the aspect ratio inside padding bars) and an optional horizontal flip
(:class:`ImageTransform`, recorded per sample). :meth:`ImageTransform.grid_to_frame` carries a
per-patch map back onto the original frame; what falls on padding bars is reported by
:meth:`ImageTransform.padding_mass`, never drawn.

Exact point mapping (:meth:`ImageTransform.frame_to_input` / :meth:`ImageTransform.input_to_frame`)
uses the OpenCV pixel convention of ``sim.pybullet`` and ``data.pointcloud``: pixel ``(u, v)`` =
(column, row) has its centre at integer coordinates, so the image spans ``[-0.5, W - 0.5)``.
Resizing follows ``align_corners=False`` (PIL, ``F.interpolate``): edge coordinates ``u + 0.5``
scale by ``content / crop``. A negative ``pad`` entry crops that many input pixels off the resized
content (resize, then centre-crop: VGGT's ``crop`` mode, DUSt3R / CroCo); :meth:`ImageTransform.place`
builds either from the resized size and where its top-left corner lands.
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
    content (resize-with-pad); negative entries cut resized content off instead (resize, then
    crop). ``hflip``: the input was mirrored left-right.
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

    @classmethod
    def place(
        cls, frame_size: tuple[int, int], resized: tuple[int, int], input_size: tuple[int, int], offset=(0, 0), **kw
    ) -> ImageTransform:
        """The (cropped) frame resized to ``resized`` (h, w), its top-left corner put at
        ``offset`` (top, left) of an ``input_size`` canvas: positive offsets and a larger canvas
        leave padding bars, negative offsets and a smaller canvas crop the resized image."""
        (rh, rw), (h, w), (top, left) = resized, input_size, offset
        return cls(tuple(frame_size), (h, w), pad=(top, left, h - top - rh, w - left - rw), **kw)

    @property
    def scale(self) -> tuple[float, float]:
        """(sy, sx): input pixels per frame pixel along each axis (unequal = aspect squashed)."""
        _, _, h, w = self._content()
        frame_h, frame_w = self.frame_size
        _, _, ch, cw = self.crop or (0, 0, frame_h, frame_w)
        return h / ch, w / cw

    def frame_to_input(self, uv: Tensor) -> Tensor:
        """``(N, 2)`` frame pixel coordinates (u, v) -> the same points in input pixels (exact)."""
        sy, sx = self.scale
        top, left, *_ = self.pad
        ct, cl, *_ = self.crop or (0, 0)
        uv = uv.double()
        x = (uv[:, 0] - cl + 0.5) * sx + left - 0.5
        y = (uv[:, 1] - ct + 0.5) * sy + top - 0.5
        if self.hflip:
            x = self.input_size[1] - 1 - x
        return torch.stack([x, y], dim=1)

    def input_to_frame(self, xy: Tensor) -> Tensor:
        """Inverse of :meth:`frame_to_input`: ``(N, 2)`` input pixel coordinates -> frame (u, v)."""
        sy, sx = self.scale
        top, left, *_ = self.pad
        ct, cl, *_ = self.crop or (0, 0)
        x, y = xy.double().unbind(1)
        if self.hflip:
            x = self.input_size[1] - 1 - x
        return torch.stack([(x - left + 0.5) / sx + cl - 0.5, (y - top + 0.5) / sy + ct - 0.5], dim=1)

    def on_content(self, xy: Tensor) -> Tensor:
        """``(N,)`` bool: the input points lie on resized frame content, inside the input (not on
        a padding bar, not cut off by a crop)."""
        top, left, h, w = self._content()
        x, y = (xy[:, 0] + 0.5), (xy[:, 1] + 0.5)  # edge coordinates
        if self.hflip:
            x = self.input_size[1] - x
        lo_x, hi_x = max(left, 0), min(left + w, self.input_size[1])
        lo_y, hi_y = max(top, 0), min(top + h, self.input_size[0])
        return (x >= lo_x) & (x < hi_x) & (y >= lo_y) & (y < hi_y)

    def apply(self, images: Tensor, fill: float = 0.0, mode: str = "bilinear") -> Tensor:
        """``(B, C, H, W)`` float frames -> ``(B, C, h, w)`` model input: crop, resize
        (``align_corners=False``, antialiased when shrinking), pad with ``fill`` or crop, flip."""
        if tuple(images.shape[-2:]) != tuple(self.frame_size):
            raise ValueError(
                f"ImageTransform.apply: images are {tuple(images.shape[-2:])} (H, W) but the transform was made "
                f"for frame_size={tuple(self.frame_size)}; build the transform for these frames."
            )
        if self.crop:
            ct, cl, ch, cw = self.crop
            images = images[..., ct : ct + ch, cl : cl + cw]
        _, _, h, w = self._content()
        kw = {"align_corners": False, "antialias": True} if mode in ("bilinear", "bicubic") else {}
        out = F.interpolate(images.float(), size=(h, w), mode=mode, **kw)
        top, left, bottom, right = self.pad
        out = F.pad(out, (left, right, top, bottom), value=fill)
        return out.flip(-1) if self.hflip else out

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
        inside = up[max(top, 0) : max(top + h, 0), max(left, 0) : max(left + w, 0)]
        return 0.0 if total == 0 else 1.0 - float(inside.sum()) / total

    def grid_to_frame(self, grid_map: Tensor, mode: str = "nearest") -> Tensor:
        """``(rows, cols)`` per-patch map -> ``(H, W)`` on the original frame: padding removed,
        the content resized back to the crop (or the frame) and placed there; 0 outside a crop.
        ``mode``: ``nearest`` keeps patch edges, ``bilinear`` smooths them."""
        up = self.input_map(grid_map)
        top, left, bottom, right = self.pad
        content = F.pad(up, (-left, -right, -top, -bottom))  # bars removed; cropped-off content back as 0
        frame_h, frame_w = self.frame_size
        ct, cl, ch, cw = self.crop or (0, 0, frame_h, frame_w)
        kw = {"align_corners": False} if mode == "bilinear" else {}
        back = F.interpolate(content[None, None], size=(ch, cw), mode=mode, **kw)[0, 0]
        out = torch.zeros(frame_h, frame_w, dtype=back.dtype)
        out[ct : ct + ch, cl : cl + cw] = back
        return out
