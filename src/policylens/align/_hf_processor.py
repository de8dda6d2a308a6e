"""What a Hugging Face image processor does to a frame, read from its ``preprocessor_config.json``.

An HF checkpoint's preprocessing lives in its image processor, not in the model config: DINOv2
checkpoints say ``image_size=518`` in ``config.json`` while their ``BitImageProcessor`` resizes the
short side to 256 and crops the centre 224. :func:`processor_settings` turns the processor's fields
(``do_resize`` / ``size``, ``do_center_crop`` / ``crop_size``, ``resample``, ``do_rescale`` /
``rescale_factor``, ``do_normalize`` / ``image_mean`` / ``image_std``) into the arguments of
:meth:`PreprocessRecord.resize_crop` plus the interpolation mode and the mean / std for pixels in
[0, 1]. Fields that change the geometry in a way no record recipe expresses (``do_pad``,
``crop_pct``, ``longest_edge`` sizes, ...) raise instead of being ignored. Plain JSON is read, so
no processor class (and no torchvision) is needed.
"""

from __future__ import annotations

import json
import os
from numbers import Integral
from pathlib import Path

__all__ = ["PROCESSOR_FILE", "find_processor", "interpolation", "processor_settings", "read_processor"]

PROCESSOR_FILE = "preprocessor_config.json"
# PIL resampling codes (transformers' ``resample``) -> F.interpolate modes. PIL NEAREST picks the
# pixel whose centre is nearest ("nearest-exact"); LANCZOS / BOX / HAMMING have no torch kernel and
# take the closest one (bicubic / bilinear).
_PIL_MODES = {0: "nearest-exact", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bilinear"}
_NOT_RECORDED = ("do_pad", "crop_pct", "keep_aspect_ratio", "ensure_multiple_of", "do_image_splitting")


def read_processor(processor, name: str = "encoder") -> tuple[dict, str]:
    """``(fields, where)`` of ``processor``: a dict of its fields, a path to its JSON file or the
    folder holding it, or an image processor object (``to_dict()``; its backend sets ``centre``)."""
    if isinstance(processor, dict):
        return dict(processor), "processor fields"
    if isinstance(processor, (str, os.PathLike)):
        path = Path(processor)
        path = path / PROCESSOR_FILE if path.is_dir() else path
        if not path.is_file():
            raise FileNotFoundError(
                f"{name}: processor={str(processor)!r} has no {PROCESSOR_FILE}; pass the checkpoint folder, the "
                f"file itself, a dict of its fields or an image processor object"
            )
        return json.loads(path.read_text()), str(path)
    if hasattr(processor, "to_dict"):
        fields = processor.to_dict()
        torchvision = getattr(processor, "backend", None) == "torchvision" or type(processor).__name__.endswith("Fast")
        fields["centre"] = "transformers-torchvision" if torchvision else "transformers"
        return fields, type(processor).__name__
    raise TypeError(
        f"{name}: processor is a {type(processor).__name__}; pass an image processor, a dict of its fields, or a "
        f"path to its {PROCESSOR_FILE} (or False to ignore it)"
    )


def find_processor(model) -> tuple[dict | None, str]:
    """The processor fields saved with the checkpoint ``model`` was loaded from (``name_or_path``: a
    folder, or a hub id resolved through transformers' cache / download), or ``(None, why not)``."""
    source = str(getattr(model, "name_or_path", "") or getattr(getattr(model, "config", None), "_name_or_path", ""))
    if not source:
        return None, "no checkpoint path (a model built from a config)"
    if Path(source).is_dir():
        path = Path(source) / PROCESSOR_FILE
        if path.is_file():
            return json.loads(path.read_text()), str(path)
        return None, f"checkpoint {source} has no {PROCESSOR_FILE}"
    from transformers.utils import cached_file

    try:
        path = cached_file(source, PROCESSOR_FILE)
    except (OSError, ValueError) as e:  # missing file / repo, offline, not a valid repo id
        return None, f"checkpoint {source}: no {PROCESSOR_FILE} ({str(e).splitlines()[0]})"
    return json.loads(Path(path).read_text()), str(path)


def processor_settings(fields: dict, where: str = "processor") -> dict:
    """``resize``, ``crop`` and ``centre`` for :meth:`PreprocessRecord.resize_crop`, ``resample``
    (an ``F.interpolate`` mode), ``mean`` / ``std`` for pixels in [0, 1] (``rescale_factor`` folded in)."""
    kind = fields.get("image_processor_type", "")
    for key in _NOT_RECORDED:
        if fields.get(key):
            raise ValueError(
                f"{where}: {key}={fields[key]!r} changes the frame in a way no PreprocessRecord recipe records; "
                f"pass size= / fit= (or a record recipe) explicitly"
            )
    crop = None
    if fields.get("do_center_crop", fields.get("crop_size") is not None):
        crop = _size(fields.get("crop_size"), where, "crop_size", square=True)
    resize, size = None, fields.get("size")
    if fields.get("do_resize", True):
        square = isinstance(size, Integral) and _default_to_square(kind, crop is None)
        resize = _size(size, where, "size", square=square)
    factor = float(fields.get("rescale_factor", 1 / 255)) if fields.get("do_rescale", True) else 1.0
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if fields.get("do_normalize", True):
        mean, std = (_triple(fields.get(k), where, k) for k in ("image_mean", "image_std"))
    k = 255.0 * factor  # the processor normalises k * x for pixels x in [0, 1]
    return {
        "resize": resize,
        "crop": crop,
        "centre": fields.get("centre", "transformers"),
        "resample": interpolation(fields.get("resample", 2)),
        "mean": tuple(m / k for m in mean),
        "std": tuple(s / k for s in std),
    }


def _size(size, where: str, key: str, square: bool):
    """An int (a square when ``square``, else the short side), ``{"shortest_edge"}`` or ``{"height", "width"}``."""
    if isinstance(size, Integral):
        return (int(size), int(size)) if square else int(size)
    if isinstance(size, dict):
        keys = {k for k, v in size.items() if v is not None}
        if keys == {"shortest_edge"}:
            return int(size["shortest_edge"])
        if keys == {"height", "width"}:
            return int(size["height"]), int(size["width"])
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    raise ValueError(
        f"{where}: {key}={size!r} is not a size a PreprocessRecord records (an int, {{'shortest_edge'}} or "
        f"{{'height', 'width'}}); pass size= / fit= explicitly"
    )


def _default_to_square(kind: str, no_crop: bool) -> bool:
    """How the processor class reads an int ``size``: its ``default_to_square``; unknown classes: a
    square unless a centre crop follows (the resize-then-crop processors resize the short side)."""
    try:
        import transformers

        value = getattr(getattr(transformers, kind, None), "default_to_square", None) if kind else None
    except ImportError:
        value = None
    return no_crop if value is None else bool(value)


def _triple(value, where: str, key: str) -> tuple[float, float, float]:
    if value is None:
        raise ValueError(f"{where}: do_normalize is set but {key} is missing; add {key} to the processor fields")
    if isinstance(value, (int, float)):
        return (float(value),) * 3
    return tuple(float(v) for v in value)


def interpolation(resample) -> str:
    """A PIL code / enum, a torchvision ``InterpolationMode`` or a timm name -> an ``F.interpolate`` mode
    (names torch lacks, e.g. lanczos: bicubic)."""
    value = getattr(resample, "value", resample)
    if isinstance(value, str):
        value = value.lower()
        return value if value in ("nearest", "nearest-exact", "bilinear", "bicubic") else "bicubic"
    return _PIL_MODES.get(int(value), "bilinear")
