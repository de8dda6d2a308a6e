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

Adding an adapter: subclass :class:`PatchEncoder`, set ``patch_size``, ``prefix_tokens``,
``mean`` / ``std`` (and ``fill``, the pad value in [0, 1]), implement ``record(frame_size)``
(usually one :class:`PreprocessRecord` recipe) and ``tokens(pixels) -> (B, prefix + Hf*Wf, C)``,
then ``register_encoder("name", factory)`` where ``factory(model, **options)`` builds it.
Add its model class name to ``_BY_CLASS`` so :func:`adapt_encoder` finds it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch
from torch import Tensor, nn

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
        x = record.transform.apply(frames.permute(0, 3, 1, 2).float() / 255.0, fill=self.fill).clamp(0, 1)
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
    """HF ViTs returning ``last_hidden_state`` = prefix tokens + row-major patches."""

    def __init__(self, model: nn.Module, name: str, size: int | None = None, fit: str = "centre_crop", **kw) -> None:
        super().__init__(model)
        if fit not in FITS:
            raise ValueError(f"{name}: fit={fit!r} is unknown; choose from {list(FITS)}")
        cfg = model.config
        self.name, self.fit, self.size = name, fit, int(size or cfg.image_size)
        self.patch_size = int(cfg.patch_size)
        self.prefix_tokens = kw.get("prefix_tokens", 1 + int(getattr(cfg, "num_register_tokens", 0) or 0))
        self.mean, self.std = kw.get("norm", IMAGENET)

    def record(self, frame_size):
        return getattr(PreprocessRecord, self.fit)(
            frame_size, self.size, self.patch_size, self.prefix_tokens, self.name
        )

    def tokens(self, pixels):
        return self.model(pixel_values=pixels).last_hidden_state


class TimmViTEncoder(PatchEncoder):
    """timm ``VisionTransformer``-like models: ``forward_features`` -> (B, N, C)."""

    name = "timm"

    def __init__(self, model: nn.Module, fit: str = "centre_crop") -> None:
        super().__init__(model)
        if fit not in FITS:
            raise ValueError(f"timm: fit={fit!r} is unknown; choose from {list(FITS)}")
        pe = model.patch_embed
        self.fit, self.patch_size = fit, int(pe.patch_size[0])
        self.size = int(pe.img_size[0])
        self.prefix_tokens = int(getattr(model, "num_prefix_tokens", 1))
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        self.mean, self.std = tuple(cfg.get("mean", IMAGENET[0])), tuple(cfg.get("std", IMAGENET[1]))

    def record(self, frame_size):
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
_SIGLIP = {"fit": "resize", "prefix_tokens": 0, "norm": HALF}
register_encoder("siglip", lambda model, **kw: HFViTEncoder(model, "siglip", **{**_SIGLIP, **kw}))
register_encoder("timm", _timm)
register_encoder("vggt", _vggt)
register_encoder("depth_anything_3", _da3)
register_encoder("croco", _croco)
