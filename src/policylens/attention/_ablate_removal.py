"""A camera removed through the policy's own missing-camera path, where it has one.

Which path a policy has is looked up by class name (its MRO) in :data:`REMOVAL`:

- ``LeRobotTeacher`` (LeRobot pi0 / pi0.5 / SmolVLA): the camera is left out of the frame handed
  to the policy's pre-processor, so the policy pads it as LeRobot does when a camera is absent
  (images of -1 after the present cameras, image mask 0). LeRobot refuses a batch with no camera
  at all, so ``cameras:removed`` is not available there.
- ``NativePIPolicy`` (transformers' pi0 / pi0.5): the batch the processor wrote for every camera,
  with the camera's ``pixel_attention_mask`` slot False, its pixels zero (what the processor writes
  for an absent slot) and its image tokens taken out of ``input_ids`` / ``attention_mask`` (padded
  back to the processor's length): the tokens the processor writes for a sample without that image,
  the other cameras in their own slots.
- ``TinyVLA`` and anything not listed: no such path (TinyVLA reads every camera on every call);
  "removed" is reported as not available.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["REMOVAL", "policy_batch", "removal_unavailable"]


def _lerobot(model: nn.Module, images: Mapping, texts: list[str], state, removed: Sequence[str]) -> dict:
    kept = {c: torch.from_numpy(np.asarray(v)) for c, v in images.items() if c not in removed}
    return model.make_batch(kept, texts, torch.from_numpy(np.asarray(state)))


def _native_pi(model: nn.Module, images: Mapping, texts: list[str], state, removed: Sequence[str]) -> dict:
    full = {c: torch.from_numpy(np.asarray(v)) for c, v in images.items()}
    batch = model.make_batch(full, texts, torch.from_numpy(np.asarray(state)))
    if not removed:
        return batch
    cams = list(model.config.cameras)
    ids, present = batch["input_ids"], batch["pixel_attention_mask"].bool()  # (B, T), (B, C)
    special = ids == model.model.config.vlm_config.image_token_id
    per = int(special[0].sum()) // int(present[0].sum())  # image tokens per present camera
    block = torch.where(special, (special.long().cumsum(-1) - 1) // per, -1)  # which present camera's block
    slot_rank = present.long().cumsum(-1) - 1  # (B, C) a slot's rank among the present slots
    slots = [cams.index(c) for c in removed]
    drop = torch.zeros_like(special)
    for k in slots:
        drop |= special & (block == slot_rank[:, k : k + 1]) & present[:, k : k + 1]
    keep, (b, t) = ~drop, ids.shape
    tok = model.processor.tokenizer
    left = getattr(tok, "padding_side", "right") == "left"
    out = dict(batch)
    for key, value in batch.items():  # every (B, T) token tensor loses the removed cameras' tokens ...
        if isinstance(value, torch.Tensor) and value.shape == ids.shape:
            kept = value[keep].reshape(b, -1)
            fill = (tok.pad_token_id or 0) if key == "input_ids" else 0
            pad = torch.full((b, t - kept.shape[1]), fill, dtype=value.dtype, device=value.device)
            out[key] = torch.cat([pad, kept] if left else [kept, pad], 1)  # ... and is padded back to its length
    present = present.clone()
    present[:, slots] = False
    pixels = batch["pixel_values"].clone()
    pixels[:, slots] = 0
    out.update(pixel_attention_mask=present.to(batch["pixel_attention_mask"].dtype), pixel_values=pixels)
    return out


# class name -> (build the batch without ``removed``, whether every camera may go at once)
REMOVAL: dict[str, tuple[Callable, bool]] = {"LeRobotTeacher": (_lerobot, False), "NativePIPolicy": (_native_pi, True)}
_NONE = {"TinyVLA": "TinyVLA reads every camera on every call and has no missing-camera path"}


def _path(model: nn.Module) -> tuple[Callable, bool] | None:
    for cls in type(model).__mro__:
        if cls.__name__ in REMOVAL:
            return REMOVAL[cls.__name__]
    return None


def removal_unavailable(model: nn.Module, n_removed: int, n_cameras: int) -> str | None:
    """Why removing ``n_removed`` of the policy's ``n_cameras`` cameras is not available, or None."""
    path = _path(model)
    if path is None:
        name = type(model).__name__
        return _NONE.get(name, f"{name} has no missing-camera path policylens knows (known: {sorted(REMOVAL)})")
    if n_removed >= n_cameras and not path[1]:
        return f"{type(model).__name__} refuses a batch without any camera (LeRobot needs one image at least)"
    return None


def policy_batch(model: nn.Module, images: Mapping, texts: Sequence[str], state, removed: Sequence[str] = ()) -> dict:
    """The policy's inputs from {camera: (n, H, W, 3) uint8}, n instructions and (n, S) states, the
    ``removed`` cameras left out through the policy's own path (see the module docstring)."""
    texts, state = list(texts), np.asarray(state, dtype=np.float32)
    if removed:
        why = removal_unavailable(model, len(removed), len(model.config.cameras))
        if why:
            raise ValueError(f"removing cameras {list(removed)}: {why}")
        batch = _path(model)[0](model, images, texts, state, removed)
    else:
        tensors = {c: torch.from_numpy(np.asarray(v)) for c, v in images.items()}
        batch = model.make_batch(tensors, texts, torch.from_numpy(state))
    device = next(model.parameters()).device
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
