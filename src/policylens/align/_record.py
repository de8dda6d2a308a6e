"""What an encoder did to a frame before its patch grid: one :class:`PreprocessRecord` per image.

A record is a :class:`~policylens.tap.ImageTransform` (crop, resize — uniform or squashed —,
padding bars or a crop after the resize, flip) plus the encoder's :class:`~policylens.tap.PatchGrid`
and patch size. Everything a point lookup needs — original size, per-axis scale, crop and pad
offsets, network input size, grid size, prefix tokens — is read off it, and it round-trips
through JSON (``to_json`` / ``from_json``, versioned, no pickle) so it can sit beside stored features.

The recipes are the preprocessing paths the encoders use, with the sizes and offsets rounded as
the library they name rounds them (checked against transformers 5.24, torchvision 0.28, timm 1.0.31):

- :meth:`PreprocessRecord.resize` — plain resize to a fixed size (SigLIP; squashes the aspect).
- :meth:`PreprocessRecord.resize_crop` — short side (or both sides) to ``resize``, then a centre
  crop of ``crop``: HF image processors (``size`` then ``crop_size``), torchvision
  ``Resize`` + ``CenterCrop``. The long side is truncated, ``int(resize * long / short)``, as
  transformers' ``get_resize_output_image_size`` and torchvision's ``_compute_resized_output_size``
  both do; where the crop's odd pixel goes follows ``centre`` (:data:`CENTRES`).
- :meth:`PreprocessRecord.dinov2` — DINOv2's processor: short side 256, centre crop 224.
- :meth:`PreprocessRecord.timm_eval` — timm's eval transform: short side ``floor(img_size / crop_pct)``,
  centre crop ``img_size`` (torchvision rounding).
- :meth:`PreprocessRecord.centre_crop` — short side to ``size``, centre crop ``size`` (resize = crop).
- :meth:`PreprocessRecord.pad` — long side to ``size``, centred bars (letterbox).
- :meth:`PreprocessRecord.vggt` — width (``crop``) or long side (``pad``) to 518, the other side
  rounded to a multiple of 14 (a slight squash), then centre-crop or pad to 518.
- :meth:`PreprocessRecord.depth_anything_3` — long side to 504, each side rounded to a multiple of 14.
- :meth:`PreprocessRecord.croco` — DUSt3R / CroCo: long side to 512 (or short side to 224),
  centre crop to multiples of 16.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from numbers import Integral

from ..tap import ImageTransform, PatchGrid

__all__ = ["CENTRES", "RECORD_VERSION", "PreprocessRecord", "centre_offset", "round_to_multiple", "short_side_size"]

RECORD_VERSION = 1

# Who places a centre crop (``resize_crop(centre=...)``); they differ only on an odd margin.
CENTRES = ("transformers", "transformers-torchvision", "torchvision")


def centre_offset(resized: int, crop: int, centre: str = "transformers") -> int:
    """Where a ``resized``-pixel side lands on a centred ``crop``-pixel canvas: the canvas index of
    its first pixel (negative: that many pixels are cut off). With margin ``m = |resized - crop|``:

    - ``transformers`` (numpy ``center_crop``: the PIL backend, transformers 4's slow processors):
      cuts ``m // 2``; pads ``ceil(m / 2)`` before.
    - ``transformers-torchvision`` (the torchvision backend, 4's "fast" processors): cuts
      ``int(m / 2.0)`` = ``m // 2``; pads ``m // 2`` before.
    - ``torchvision`` (``CenterCrop``, timm's eval transform): cuts ``int(round(m / 2.0))`` (ties to
      even: 58.5 -> 58, 59.5 -> 60); pads ``m // 2`` before."""
    if centre not in CENTRES:
        raise ValueError(f"centre={centre!r} is unknown; choose from {list(CENTRES)}")
    m = resized - crop
    if m >= 0:
        return -round(m / 2.0) if centre == "torchvision" else -(m // 2)
    return (-m + 1) // 2 if centre == "transformers" else -m // 2


def short_side_size(frame_size: tuple[int, int], size: int) -> tuple[int, int]:
    """(h, w) after resizing the short side of ``frame_size`` to ``size``: the long side is
    ``int(size * long / short)`` (truncated), as transformers' ``get_resize_output_image_size``
    (``default_to_square=False``) and torchvision's ``_compute_resized_output_size`` compute it;
    a square frame (``W <= H`` counts the width as the short side) becomes ``size x size``."""
    h, w = frame_size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(size * long / short)
    return (new_long, size) if w <= h else (size, new_long)


def round_to_multiple(x: float, multiple: int) -> int:
    """``x`` rounded to the nearest positive multiple of ``multiple`` (Python's ``round``, ties to
    even, as VGGT's ``round(h / 14) * 14`` does)."""
    return max(multiple, round(x / multiple) * multiple)


@dataclass(frozen=True)
class PreprocessRecord:
    """``transform`` (frame -> network input), ``grid`` (patches over the input's top-left
    ``rows*patch x cols*patch`` pixels, after ``grid.prefix_tokens`` tokens), ``patch_size``."""

    transform: ImageTransform
    grid: PatchGrid
    patch_size: int
    encoder: str = ""

    def __post_init__(self) -> None:
        h, w = self.transform.input_size
        if self.patch_size < 1 or self.grid.rows * self.patch_size > h or self.grid.cols * self.patch_size > w:
            raise ValueError(
                f"PreprocessRecord: grid {self.grid.rows}x{self.grid.cols} of patch_size={self.patch_size} does not "
                f"fit the {h}x{w} input; use grid = input // patch_size (PreprocessRecord.of)."
            )

    @classmethod
    def of(
        cls, transform: ImageTransform, patch_size: int, prefix_tokens: int = 0, encoder: str = ""
    ) -> PreprocessRecord:
        """The record of an encoder that tiles ``transform``'s input with ``patch_size`` patches
        (a remainder at the right / bottom is dropped, as a strided patch embedding does)."""
        h, w = transform.input_size
        return cls(transform, PatchGrid(h // patch_size, w // patch_size, prefix_tokens), patch_size, encoder)

    # ---- what the record says -------------------------------------------------------------
    original_size = property(lambda self: self.transform.frame_size, doc="(H, W) of the camera frame.")
    input_size = property(lambda self: self.transform.input_size, doc="(h, w) of the network input.")
    scale = property(lambda self: self.transform.scale, doc="(sy, sx) input pixels per frame pixel.")
    grid_size = property(lambda self: (self.grid.rows, self.grid.cols), doc="(rows, cols) of patches.")
    prefix_tokens = property(lambda self: self.grid.prefix_tokens, doc="CLS / register tokens before the patches.")

    @property
    def crop_offset(self) -> tuple[int, int]:
        """(top, left) of the frame crop (0, 0 without one)."""
        return tuple(self.transform.crop[:2]) if self.transform.crop else (0, 0)

    @property
    def pad_offset(self) -> tuple[int, int]:
        """(top, left) input pixel where the resized content starts (negative: cropped after resizing)."""
        return tuple(self.transform.pad[:2])

    # ---- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        t = self.transform
        return {
            "version": RECORD_VERSION,
            "encoder": self.encoder,
            "frame_size": list(t.frame_size),
            "input_size": list(t.input_size),
            "crop": list(t.crop) if t.crop else None,
            "pad": list(t.pad),
            "hflip": t.hflip,
            "grid": [self.grid.rows, self.grid.cols],
            "prefix_tokens": self.grid.prefix_tokens,
            "patch_size": self.patch_size,
        }

    @classmethod
    def from_dict(cls, d: dict) -> PreprocessRecord:
        if d.get("version") != RECORD_VERSION:
            raise ValueError(
                f"PreprocessRecord.from_dict: version={d.get('version')!r}, this policylens reads version "
                f"{RECORD_VERSION}; re-create the record with this version."
            )
        crop = tuple(d["crop"]) if d["crop"] else None
        t = ImageTransform(tuple(d["frame_size"]), tuple(d["input_size"]), crop, tuple(d["pad"]), bool(d["hflip"]))
        return cls(t, PatchGrid(*d["grid"], d["prefix_tokens"]), int(d["patch_size"]), d.get("encoder", ""))

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> PreprocessRecord:
        return cls.from_dict(json.loads(text))

    # ---- recipes ----------------------------------------------------------------------------
    @classmethod
    def resize(cls, frame_size, size, patch_size: int, prefix_tokens: int = 0, encoder: str = "") -> PreprocessRecord:
        """Plain resize to ``size`` (h, w) (an int: square); the aspect ratio is squashed."""
        size = (size, size) if isinstance(size, int) else tuple(size)
        return cls.of(ImageTransform.resize(tuple(frame_size), size), patch_size, prefix_tokens, encoder)

    @classmethod
    def resize_crop(
        cls,
        frame_size,
        resize,
        crop,
        patch_size: int,
        prefix_tokens: int = 0,
        encoder: str = "",
        centre: str = "transformers",
    ) -> PreprocessRecord:
        """Resize, then a centre crop: the eval path of HF image processors (``size`` then
        ``crop_size``) and of torchvision ``Resize`` + ``CenterCrop``.

        ``resize``: an int resizes the short side to it, the long side truncated
        (:func:`short_side_size`); ``(h, w)`` resizes to exactly that; None keeps the frame size.
        ``crop``: an int crops the centre square, ``(h, w)`` that rectangle, None crops nothing; a
        crop larger than the resized image pads it with bars instead. ``centre``: whose rounding
        places an odd margin (:func:`centre_offset`)."""
        fh, fw = frame_size = tuple(frame_size)
        if resize is None:
            rh, rw = fh, fw
        elif isinstance(resize, Integral):
            rh, rw = short_side_size(frame_size, _positive(resize, "resize"))
        else:
            rh, rw = (_positive(v, "resize") for v in resize)
        ch, cw = (rh, rw) if crop is None else (crop, crop) if isinstance(crop, Integral) else tuple(crop)
        ch, cw = _positive(ch, "crop"), _positive(cw, "crop")
        offset = (centre_offset(rh, ch, centre), centre_offset(rw, cw, centre))
        t = ImageTransform.place(frame_size, (rh, rw), (ch, cw), offset)
        return cls.of(t, patch_size, prefix_tokens, encoder)

    @classmethod
    def centre_crop(
        cls, frame_size, size: int, patch_size: int, prefix_tokens: int = 0, encoder: str = "", centre="transformers"
    ) -> PreprocessRecord:
        """Short side resized to ``size`` (long side truncated), then the centre ``size x size``:
        :meth:`resize_crop` with ``resize = crop = size``. DINOv2 and timm resize to more than they
        crop: use :meth:`dinov2` / :meth:`timm_eval` / :meth:`resize_crop` for them."""
        return cls.resize_crop(frame_size, size, size, patch_size, prefix_tokens, encoder, centre)

    @classmethod
    def dinov2(
        cls, frame_size, resize: int = 256, crop: int = 224, prefix_tokens: int = 1, centre: str = "transformers"
    ) -> PreprocessRecord:
        """DINOv2's image processor (``BitImageProcessor`` of the ``facebook/dinov2-*`` checkpoints:
        ``size={"shortest_edge": 256}``, ``crop_size=224``, bicubic) on a patch-14 grid; DINOv2's own
        ``make_classification_eval_transform`` is the same sizes with ``centre="torchvision"``.
        ``prefix_tokens``: 1 (CLS), 5 with 4 registers."""
        return cls.resize_crop(frame_size, resize, crop, 14, prefix_tokens, "dinov2", centre)

    @classmethod
    def timm_eval(
        cls, frame_size, img_size: int = 224, patch_size: int = 16, crop_pct: float = 0.875, prefix_tokens: int = 1
    ) -> PreprocessRecord:
        """timm's ``transforms_imagenet_eval`` (``crop_mode="center"``, square ``img_size``): short side
        to ``floor(img_size / crop_pct)`` (torchvision ``Resize``), torchvision ``CenterCrop(img_size)``.
        ``crop_pct`` is the model's ``pretrained_cfg["crop_pct"]`` (timm's default 0.875)."""
        if not 0 < crop_pct <= 1:
            raise ValueError(f"PreprocessRecord.timm_eval: crop_pct={crop_pct}; expected 0 < crop_pct <= 1")
        scale = math.floor(img_size / crop_pct)
        return cls.resize_crop(frame_size, scale, img_size, patch_size, prefix_tokens, "timm", "torchvision")

    @classmethod
    def pad(cls, frame_size, size: int, patch_size: int, prefix_tokens: int = 0, encoder: str = ""):
        """Long side resized to ``size`` (aspect kept), centred bars to ``size x size``."""
        t = ImageTransform.resize_with_pad(tuple(frame_size), (size, size), bars="centre")
        return cls.of(t, patch_size, prefix_tokens, encoder)

    @classmethod
    def vggt(cls, frame_size, mode: str = "crop", size: int = 518, prefix_tokens: int = 5) -> PreprocessRecord:
        """VGGT's ``load_and_preprocess_images``: ``crop`` sets the width to ``size``, the height to
        the nearest multiple of 14 and centre-crops a taller image to ``size``; ``pad`` sets the
        long side to ``size``, the other to a multiple of 14, and pads to ``size x size``
        (bars centred, the odd pixel at the bottom / right). Prefix: camera + 4 register tokens."""
        if mode not in ("crop", "pad"):
            raise ValueError(f"PreprocessRecord.vggt: mode={mode!r}; use 'crop' or 'pad'")
        H, W = frame_size
        if mode == "crop" or W >= H:
            rh, rw = round_to_multiple(H * size / W, 14), size
        else:
            rh, rw = size, round_to_multiple(W * size / H, 14)
        if mode == "crop":
            h = min(rh, size)
            t = ImageTransform.place(frame_size, (rh, rw), (h, rw), (-((rh - h) // 2), 0))
        else:
            t = ImageTransform.place(frame_size, (rh, rw), (size, size), ((size - rh) // 2, (size - rw) // 2))
        return cls.of(t, 14, prefix_tokens, f"vggt[{mode}]")

    @classmethod
    def depth_anything_3(cls, frame_size, size: int = 504, prefix_tokens: int = 1) -> PreprocessRecord:
        """Depth-Anything-3 style ``upper_bound_resize``: long side to ``size``, then each side
        rounded to the nearest multiple of 14 by resizing (no crop, no pad: a slight squash)."""
        H, W = frame_size
        s = size / max(H, W)
        rh, rw = round_to_multiple(H * s, 14), round_to_multiple(W * s, 14)
        return cls.of(ImageTransform.resize(tuple(frame_size), (rh, rw)), 14, prefix_tokens, "depth_anything_3")

    @classmethod
    def croco(cls, frame_size, size: int = 512, patch_size: int = 16, square_ok: bool = False) -> PreprocessRecord:
        """DUSt3R / CroCo ``load_images``: ``size=224`` resizes the short side to 224 and takes the
        centre square; otherwise the long side goes to ``size`` and the centre is cropped to
        multiples of 16 (``halfw = ((2 * cx) // 16) * 8``; a square image becomes 4:3 unless
        ``square_ok``). No prefix tokens."""
        H, W = frame_size
        long = round(size * max(W / H, H / W)) if size == 224 else size
        rh, rw = round(H * long / max(H, W)), round(W * long / max(H, W))
        cy, cx = rh // 2, rw // 2
        if size == 224:
            half_h = half_w = min(cx, cy)
        else:
            half_w, half_h = ((2 * cx) // patch_size) * patch_size // 2, ((2 * cy) // patch_size) * patch_size // 2
            if not square_ok and rw == rh:
                half_h = int(3 * half_w / 4)
        t = ImageTransform.place(frame_size, (rh, rw), (2 * half_h, 2 * half_w), (half_h - cy, half_w - cx))
        return cls.of(t, patch_size, 0, "croco")


def _positive(v, name: str) -> int:
    if not isinstance(v, Integral) or v < 1:
        raise ValueError(f"PreprocessRecord.resize_crop: {name}={v!r}; expected a positive pixel count (int)")
    return int(v)
