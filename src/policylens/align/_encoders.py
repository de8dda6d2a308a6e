"""Frozen 2D encoders as patch-feature grids, each with the exact record of its preprocessing.

Every adapter turns camera frames into ``(B, Hf, Wf, C)`` patch features and says, per image,
how the frame became the network input (a :class:`PreprocessRecord`), so a point's pixel uv can
be looked up on the grid exactly (:func:`uv_to_grid`):

>>> enc = create_encoder("dinov2", Dinov2Model(config))
>>> pixels, record = enc.preprocess(frames)      # frames (B, H, W, 3) uint8
>>> feats = enc.features(pixels)                 # (B, Hf, Wf, C), CLS / register tokens dropped

Registered: ``dinov2`` (HF ``Dinov2Model`` / ``Dinov2WithRegistersModel``), ``dinov3`` (HF
``DINOv3ViTModel``, when the installed transformers has it), ``siglip`` (HF
``SiglipVisionModel``), ``timm`` (timm ViTs, when timm is importable), and ``vggt``,
``depth_anything_3``, ``croco``, which need their own packages and otherwise raise an ImportError
naming the package (their records, :meth:`PreprocessRecord.vggt` etc., work without them).

The HF adapters take their record, interpolation and normalisation from the checkpoint's own
image processor (``preprocessor_config.json``, ``_hf_processor.py``), not from ``config.image_size``
(518 for DINOv2 checkpoints whose processor crops 224); only without one do they fall back to
``fit`` at ``config.image_size``, and ``encoder.source`` says which. The ``timm`` adapter records
timm's eval transform (``crop_pct``).

Adding an adapter: subclass :class:`PatchEncoder`, set ``patch_size``, ``prefix_tokens``,
``mean`` / ``std`` (and ``fill``, the pad value in [0, 1]), implement ``record(frame_size)``
(usually one :class:`PreprocessRecord` recipe) and ``tokens(pixels) -> (B, prefix + Hf*Wf, C)``,
then ``register_encoder("name", factory)`` where ``factory(model, **options)`` builds it.
Add its model class name to ``_BY_CLASS`` so :func:`adapt_encoder` finds it.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ._hf_processor import find_processor, interpolation, processor_settings, read_processor
from ._record import PreprocessRecord

__all__ = ["PatchEncoder", "adapt_encoder", "create_encoder", "list_encoders", "register_encoder"]

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
FITS = ("resize", "centre_crop", "pad")


class PatchEncoder:
    """Base adapter: ``preprocess`` frames with ``record(frame_size)``, ``features`` from ``tokens``."""

    name = "encoder"
    patch_size: int
    prefix_tokens: int = 0
    mean, std = IMAGENET
    fill = 0.0
    resample = "bilinear"  # F.interpolate mode of the resize (antialiased when shrinking)

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()

    def record(self, frame_size: tuple[int, int]) -> PreprocessRecord:
        raise NotImplementedError

    def tokens(self, pixels: Tensor) -> Tensor:
        raise NotImplementedError

    def preprocess(self, frames) -> tuple[Tensor, PreprocessRecord]:
        """``frames`` (B, H, W, 3) uint8 -> normalised ``(B, 3, h, w)`` float pixels and the record."""
        frames = torch.as_tensor(frames)
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(
                f"{self.name}.preprocess: frames must be (B, H, W, 3) uint8, got {tuple(frames.shape)} "
                f"{frames.dtype}; stack the camera's RGB frames (add a batch axis for one frame)."
            )
        record = self.record(tuple(frames.shape[1:3]))
        x = frames.permute(0, 3, 1, 2).float() / 255.0
        x = record.transform.apply(x, fill=self.fill, mode=self.resample).clamp(0, 1)
        mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (self.mean, self.std))
        return (x - mean) / std, record

    @torch.no_grad()
    def features(self, pixels: Tensor) -> Tensor:
        """``pixels`` (B, 3, h, w) from :meth:`preprocess` -> ``(B, Hf, Wf, C)`` patch features."""
        rows, cols = pixels.shape[-2] // self.patch_size, pixels.shape[-1] // self.patch_size
        tokens = self.tokens(pixels)  # (B, N, C)
        want = self.prefix_tokens + rows * cols
        if tokens.ndim != 3 or tokens.shape[1] != want:
            raise ValueError(
                f"{self.name}.features: the model returned tokens of shape {tuple(tokens.shape)}, expected "
                f"(B, {self.prefix_tokens} prefix + {rows}x{cols} patches = {want}, C) for a "
                f"{tuple(pixels.shape[-2:])} input; pass pixels made by this encoder's preprocess."
            )
        return tokens[:, self.prefix_tokens :].reshape(len(tokens), rows, cols, -1)


class HFViTEncoder(PatchEncoder):
    """HF ViTs returning ``last_hidden_state`` = prefix tokens + row-major patches.

    The record follows the checkpoint's own image processor (``processor``: None finds
    ``preprocessor_config.json`` beside the checkpoint the model was loaded from; or a dict of its
    fields, a path to it or its folder, an image processor object; False: ignore it). Without one, or
    with ``size`` / ``fit`` given, the record is ``fit`` (``fallback_fit``) at ``size`` (default
    ``config.image_size``) with ``fallback_norm``; a loaded checkpoint without a processor warns.
    ``source`` says which was used."""

    fallback_fit, fallback_norm, fallback_prefix = "centre_crop", IMAGENET, None

    def __init__(
        self,
        model: nn.Module,
        name: str,
        size: int | None = None,
        fit: str | None = None,
        processor=None,
        prefix_tokens: int | None = None,
        norm=None,
    ) -> None:
        super().__init__(model)
        cfg = model.config
        self.name, self.patch_size = name, int(cfg.patch_size)
        registers = int(getattr(cfg, "num_register_tokens", 0) or 0)
        default_prefix = self.fallback_prefix if self.fallback_prefix is not None else 1 + registers
        self.prefix_tokens = default_prefix if prefix_tokens is None else int(prefix_tokens)
        if fit is not None and fit not in FITS:
            raise ValueError(f"{name}: fit={fit!r} is unknown; choose from {list(FITS)}")
        explicit = size is not None or fit is not None
        if explicit and processor not in (None, False):
            raise ValueError(f"{name}: pass processor= or size= / fit=, not both (size / fit replace the processor)")
        found, where = None, "size / fit given" if explicit else "processor=False"
        if not explicit and processor is not False:
            found, where = read_processor(processor, name) if processor is not None else find_processor(model)
        if found is not None:
            p = processor_settings(found, f"{name}: {where}")
            self.resize, self.crop, self.centre, self.resample = p["resize"], p["crop"], p["centre"], p["resample"]
            self.mean, self.std = p["mean"], p["std"]
            self.fit, self.size, self.source = "processor", None, f"image processor ({where})"
        else:
            self.fit, self.size = fit or self.fallback_fit, int(size or cfg.image_size)
            self.mean, self.std = self.fallback_norm
            self.source = f"{self.fit} at {self.size} px ({where})"
            if where.startswith("checkpoint"):
                warnings.warn(
                    f"{name}: {where}, so frames go through {self.fit} at config.image_size={self.size} px, which "
                    f"may not be what the checkpoint was trained with; pass processor=AutoImageProcessor."
                    f"from_pretrained(...) (or its preprocessor_config.json), or size= / fit=.",
                    UserWarning,
                    stacklevel=3,
                )
        if norm is not None:
            self.mean, self.std = norm

    def record(self, frame_size):
        if self.fit == "processor":
            return PreprocessRecord.resize_crop(
                frame_size, self.resize, self.crop, self.patch_size, self.prefix_tokens, self.name, self.centre
            )
        return getattr(PreprocessRecord, self.fit)(
            frame_size, self.size, self.patch_size, self.prefix_tokens, self.name
        )

    def tokens(self, pixels):
        return self.model(pixel_values=pixels).last_hidden_state


class SiglipEncoder(HFViTEncoder):
    """SigLIP vision towers: no CLS token; without a processor, a plain resize with mean = std = 0.5."""

    fallback_fit, fallback_norm, fallback_prefix = "resize", HALF, 0


class TimmViTEncoder(PatchEncoder):
    """timm ``VisionTransformer``-like models: ``forward_features`` -> (B, N, C). The record is timm's
    eval transform (:meth:`PreprocessRecord.timm_eval`, the model's ``crop_pct`` and interpolation)
    unless ``fit`` names another recipe at the model's ``img_size``."""

    name = "timm"

    def __init__(self, model: nn.Module, fit: str | None = None) -> None:
        super().__init__(model)
        if fit is not None and fit not in FITS:
            raise ValueError(f"timm: fit={fit!r} is unknown; choose from {list(FITS)} (or None: timm's eval transform)")
        pe = model.patch_embed
        self.fit, self.patch_size = fit, int(pe.patch_size[0])
        self.size = int(pe.img_size[0])
        self.prefix_tokens = int(getattr(model, "num_prefix_tokens", 1))
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        self.mean, self.std = tuple(cfg.get("mean", IMAGENET[0])), tuple(cfg.get("std", IMAGENET[1]))
        self.crop_pct = float(cfg.get("crop_pct") or 0.875)  # timm's DEFAULT_CROP_PCT
        if fit is None:
            self.resample = interpolation(cfg.get("interpolation", "bicubic"))
            if cfg.get("crop_mode", "center") != "center" or pe.img_size[0] != pe.img_size[1]:
                raise ValueError(
                    f"timm: crop_mode={cfg.get('crop_mode')!r}, img_size={tuple(pe.img_size)}: only the square "
                    f"'center' eval transform is recorded; pass fit= one of {list(FITS)}"
                )

    def record(self, frame_size):
        if self.fit is None:
            return PreprocessRecord.timm_eval(frame_size, self.size, self.patch_size, self.crop_pct, self.prefix_tokens)
        return getattr(PreprocessRecord, self.fit)(frame_size, self.size, self.patch_size, self.prefix_tokens, "timm")

    def tokens(self, pixels):
        return self.model.forward_features(pixels)


class TokenFnEncoder(PatchEncoder):
    """A model whose tokens come from ``tokens_fn(model, pixels)``, with a fixed record recipe."""

    def __init__(self, model, name, record_fn, tokens_fn, patch_size, prefix_tokens, norm, fill=0.0) -> None:
        super().__init__(model)
        self.name, self._record, self._tokens = name, record_fn, tokens_fn
        self.patch_size, self.prefix_tokens, (self.mean, self.std), self.fill = patch_size, prefix_tokens, norm, fill

    def record(self, frame_size):
        return self._record(frame_size)

    def tokens(self, pixels):
        return self._tokens(self.model, pixels)


# ---- registry -------------------------------------------------------------------------------
_REGISTRY: dict[str, Callable[..., PatchEncoder]] = {}
_BY_CLASS = {
    "Dinov2Model": "dinov2",
    "Dinov2WithRegistersModel": "dinov2",
    "DINOv3ViTModel": "dinov3",
    "SiglipVisionModel": "siglip",
    "VisionTransformer": "timm",
}


def register_encoder(name: str, factory: Callable[..., PatchEncoder]) -> None:
    """Register ``factory(model, **options) -> PatchEncoder`` under ``name`` (replaces an old one)."""
    _REGISTRY[name] = factory


def list_encoders() -> list[str]:
    return sorted(_REGISTRY)


def create_encoder(name: str, model: nn.Module | None = None, **options) -> PatchEncoder:
    """The ``name`` adapter around ``model`` (a built, frozen module)."""
    if name not in _REGISTRY:
        raise KeyError(f"create_encoder: name={name!r} is unknown; registered: {list_encoders()}")
    return _REGISTRY[name](model, **options)


def adapt_encoder(model: nn.Module, **options) -> PatchEncoder:
    """The registered adapter for ``model``'s class."""
    cls = type(model).__name__
    if cls not in _BY_CLASS:
        raise KeyError(
            f"adapt_encoder: no adapter for {cls}; known classes {sorted(_BY_CLASS)}. Use create_encoder(name, model) "
            f"with one of {list_encoders()} or register one (see policylens.align._encoders)."
        )
    return create_encoder(_BY_CLASS[cls], model, **options)


def _needs(package: str, name: str, hint: str) -> None:
    try:
        importlib.import_module(package)
    except ImportError as e:
        record = hasattr(PreprocessRecord, name)
        tail = f" Its preprocessing record works without it: PreprocessRecord.{name}(frame_size)." if record else ""
        raise ImportError(
            f"encoder {name!r} needs the package {package!r}, which is not importable ({e}); {hint}.{tail}"
        ) from e


def _timm(model, **kw):
    _needs("timm", "timm", "pip install timm")
    return TimmViTEncoder(model, **kw)


def _vggt(model, mode: str = "crop", size: int = 518):
    _needs("vggt", "vggt", "install VGGT from github.com/facebookresearch/vggt")

    def tokens(m, pixels):  # aggregator((B, S, 3, H, W) in [0, 1]) -> last layer, frame 0
        layers, _patch_start = m.aggregator(pixels[:, None])
        return layers[-1][:, 0]

    rec = lambda fs: PreprocessRecord.vggt(fs, mode, size)  # noqa: E731
    return TokenFnEncoder(model, "vggt", rec, tokens, 14, 5, ((0.0,) * 3, (1.0,) * 3), fill=1.0)


def _da3(model, tokens_fn=None, size: int = 504, prefix_tokens: int = 1):
    _needs("depth_anything_3", "depth_anything_3", "install it from github.com/ByteDance-Seed/Depth-Anything-3")
    if tokens_fn is None:
        raise ValueError("depth_anything_3: pass tokens_fn(model, pixels) -> (B, prefix + Hf*Wf, C) from its backbone")
    rec = lambda fs: PreprocessRecord.depth_anything_3(fs, size, prefix_tokens)  # noqa: E731
    return TokenFnEncoder(model, "depth_anything_3", rec, tokens_fn, 14, prefix_tokens, IMAGENET)


def _croco(model, size: int = 512):
    _needs("croco", "croco", "put the CroCo repo (github.com/naver/croco, or dust3r's croco/) on the path")

    def tokens(m, pixels):  # CroCoNet._encode_image -> (feat (B, N, C), pos, mask)
        return m._encode_image(pixels, do_mask=False)[0]

    rec = lambda fs: PreprocessRecord.croco(fs, size)  # noqa: E731
    return TokenFnEncoder(model, "croco", rec, tokens, 16, 0, HALF)


register_encoder("dinov2", lambda model, **kw: HFViTEncoder(model, "dinov2", **kw))
register_encoder("dinov3", lambda model, **kw: HFViTEncoder(model, "dinov3", **kw))
register_encoder("siglip", lambda model, **kw: SiglipEncoder(model, "siglip", **kw))
register_encoder("timm", _timm)
register_encoder("vggt", _vggt)
register_encoder("depth_anything_3", _da3)
register_encoder("croco", _croco)
