"""Semantic token spans read from a model's real layout, per sample.

A :class:`TokenSpans` holds boolean masks ``(B, T)`` over one token sequence, by span
name: ``image[<camera>]``, ``image`` (all cameras), ``text``, ``state``, ``action``,
``bos``, ``stop``, ``pad`` and ``valid``. A :class:`Layout` maps each sequence a model
runs (``vision``, ``prefix``, ``suffix``, ``joint``) to its spans. Builders here cover
the PaliGemma prefix (image tokens where ``input_ids == image_token_id``), the
Prismatic / VLA-Adapter layout ``[BOS, patches, prompt, action queries, STOP]`` and the
pi0 / pi0.5 / SmolVLA prefix + suffix layouts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ._grid import PatchGrid

__all__ = ["Layout", "TokenSpans", "paligemma_spans", "pi0_layout", "prismatic_spans", "suffix_spans"]


def _count_str(mask: Tensor, limit: int = 4) -> str:
    """True count per sample: ``16`` when all samples agree, else ``[8, 6, ...]``."""
    counts = mask.sum(1).tolist()
    if counts and all(c == counts[0] for c in counts):
        return str(counts[0])
    shown = ", ".join(str(c) for c in counts[:limit])
    return f"[{shown}, ...]" if len(counts) > limit else f"[{shown}]"


@dataclass(repr=False)
class TokenSpans:
    """Boolean masks ``(B, T)`` by span name over one token sequence. ``grids``: for cameras
    whose image tokens are a patch grid, the :class:`PatchGrid` of each (``image_grid`` maps a
    per-token vector onto it; ``ImageTransform`` carries it back to the frame)."""

    masks: dict[str, Tensor]
    cameras: tuple[str, ...] = ()
    grids: dict[str, PatchGrid] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shapes = {tuple(m.shape) for m in self.masks.values()}
        if len(shapes) != 1:
            raise ValueError(f"TokenSpans: all masks must share one (B, T) shape, got {sorted(shapes)}")
        cams = [self.masks[f"image[{c}]"] for c in self.cameras if f"image[{c}]" in self.masks]
        if cams and "image" not in self.masks:
            self.masks["image"] = torch.stack(cams).any(0)
        if "pad" in self.masks and "valid" not in self.masks:
            self.masks["valid"] = ~self.masks["pad"]
        if "valid" in self.masks and "pad" not in self.masks:
            self.masks["pad"] = ~self.masks["valid"]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(next(iter(self.masks.values())).shape)

    def names(self) -> list[str]:
        return list(self.masks)

    def __getitem__(self, name: str) -> Tensor:
        if name not in self.masks:
            raise KeyError(f"span {name!r} is not in this layout; spans: {self.names()}")
        return self.masks[name]

    def __contains__(self, name: object) -> bool:
        return name in self.masks

    def image_grid(self, camera: str, values: Tensor) -> Tensor:
        """``(B, T)`` per-token values (e.g. one query row of an attention map) -> ``(B, rows,
        cols)`` on camera ``camera``'s patch grid, from its ``image[camera]`` tokens."""
        if camera not in self.grids:
            raise KeyError(f"TokenSpans.image_grid: no patch grid for camera {camera!r}; grids: {list(self.grids)}")
        grid, mask = self.grids[camera], self[f"image[{camera}]"]
        rows = [values[b, mask[b]] for b in range(values.shape[0])]
        bad = [b for b, r in enumerate(rows) if r.shape[-1] != grid.n_tokens - grid.prefix_tokens]
        if bad:
            raise ValueError(
                f"TokenSpans.image_grid: sample {bad[0]} has {int(mask[bad[0]].sum())} image[{camera}] tokens, "
                f"the grid has {grid.rows}x{grid.cols}; a padded (absent) camera has no grid to show."
            )
        return torch.stack([PatchGrid(grid.rows, grid.cols).to_grid(r) for r in rows])

    def positions(self, name: str, sample: int = 0) -> Tensor:
        """Token indices of span ``name`` in one sample."""
        return self[name][sample].nonzero().flatten()

    def counts(self) -> dict[str, list[int]]:
        """Tokens per span per sample (handy for printing)."""
        return {k: m.sum(1).tolist() for k, m in self.masks.items()}

    def __repr__(self) -> str:
        b, t = self.shape
        cams = f", cameras={list(self.cameras)}" if self.cameras else ""
        spans = ", ".join(f"{k}={_count_str(m)}" for k, m in self.masks.items())
        return f"TokenSpans(B={b}, T={t}{cams}, tokens per span: {spans})"


@dataclass(repr=False)
class Layout:
    """The spans of every token sequence a model runs, by sequence name."""

    sequences: dict[str, TokenSpans] = field(default_factory=dict)

    def __repr__(self) -> str:
        if not self.sequences:
            return "Layout()"
        lines = "".join(f"\n  {name}: {spans!r}" for name, spans in self.sequences.items())
        return f"Layout({lines}\n)"

    def __getitem__(self, sequence: str) -> TokenSpans:
        if sequence not in self.sequences:
            raise KeyError(f"sequence {sequence!r} is not in this layout; sequences: {list(self.sequences)}")
        return self.sequences[sequence]


def _camera_names(n: int, cameras: Sequence[str] | None) -> tuple[str, ...]:
    if cameras is None:
        return tuple(f"cam{k}" for k in range(n))
    if len(cameras) != n:
        raise ValueError(f"cameras={list(cameras)} names {len(cameras)} cameras but the input holds {n}")
    return tuple(cameras)


def paligemma_spans(
    input_ids: Tensor,  # (B, T)
    attention_mask: Tensor | None,  # (B, T), 1 = valid
    image_token_id: int,
    tokens_per_image: int,
    cameras: Sequence[str] | None = None,
) -> TokenSpans:
    """Spans of a PaliGemma prefix: image tokens are where ``input_ids == image_token_id``;
    the k-th block of ``tokens_per_image`` of them in a sample is camera k."""
    is_image = input_ids == image_token_id
    counts = is_image.sum(1)
    if (counts != counts[0]).any() or counts[0] % tokens_per_image:
        raise ValueError(
            f"image token counts per sample {counts.tolist()} are not one equal multiple of "
            f"tokens_per_image={tokens_per_image} (image_token_id={image_token_id})"
        )
    n_cams = int(counts[0]) // tokens_per_image
    names = _camera_names(n_cams, cameras)
    block = (is_image.cumsum(1) - 1).clamp(min=0) // tokens_per_image  # (B, T) camera index
    valid = torch.ones_like(is_image) if attention_mask is None else attention_mask.bool()
    masks = {f"image[{c}]": is_image & (block == k) for k, c in enumerate(names)}
    masks["text"] = valid & ~is_image
    masks["valid"] = valid
    return TokenSpans(masks, names)


def _rank_from_end(valid: Tensor) -> Tensor:
    # (B, T): number of valid tokens after each position
    return valid.flip(1).long().cumsum(1).flip(1) - valid.long()


_PRISMATIC_STOP_ID = 2  # Llama's </s>: what OpenVLA appends as STOP, and VLA-Adapter's STOP_INDEX (with Qwen too)


def prismatic_spans(
    input_ids: Tensor,  # (B, L) text ids, before patch insertion
    attention_mask: Tensor | None,
    n_patches: int,
    n_action_tokens: int,
    has_stop: bool | None = None,
    stop_id: int | None = _PRISMATIC_STOP_ID,
) -> TokenSpans:
    """Spans of the Prismatic / OpenVLA / VLA-Adapter sequence ``[BOS, patches, prompt,
    action queries, STOP]``: patches are inserted after position 0, as Prismatic does.

    Inference appends STOP, VLA-Adapter's training batches do not; ``has_stop=None`` (the
    default) tells them apart per sample: the last valid token is STOP iff it equals
    ``stop_id`` (``tokenizer.eos_token_id`` for OpenVLA; VLA-Adapter's ``STOP_INDEX``, 2).
    ``True`` / ``False`` force one layout on every sample. The action span is the
    ``n_action_tokens`` valid tokens before STOP, or the last ones when there is none."""
    if has_stop not in (None, True, False):
        raise ValueError(f"prismatic_spans: has_stop={has_stop!r} is not None (detect), True or False")
    if has_stop is None and stop_id is None:
        raise ValueError(
            "prismatic_spans: has_stop=None detects STOP from the ids and needs stop_id (the id Prismatic appends "
            "as STOP: tokenizer.eos_token_id, VLA-Adapter's STOP_INDEX); give it, or has_stop=True / False."
        )
    valid_text = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    if not valid_text[:, 0].all():
        raise ValueError(
            "prismatic_spans: position 0 is padding in some samples, but Prismatic inserts the patches after "
            "position 0 (the BOS). Pad on the right (tokenizer.padding_side = 'right')."
        )
    b = input_ids.shape[0]
    ones = torch.ones(b, n_patches, dtype=torch.bool, device=input_ids.device)
    valid = torch.cat([valid_text[:, :1], ones, valid_text[:, 1:]], 1)  # (B, L + P)
    image = torch.zeros_like(valid)
    image[:, 1 : 1 + n_patches] = True
    bos = torch.zeros_like(valid)
    bos[:, 0] = True
    rank = _rank_from_end(valid)
    last = valid & (rank == 0) & ~image & ~bos  # (B, L + P): the last valid text token
    if has_stop is None:
        no_id = input_ids.new_full((b, n_patches), -1)
        ids = torch.cat([input_ids[:, :1], no_id, input_ids[:, 1:]], 1)  # (B, L + P)
        stop = last & (ids == stop_id)
    else:
        stop = last if has_stop else torch.zeros_like(valid)
    first = stop.any(1, keepdim=True).long()  # (B, 1): 1 where the sample ends with STOP
    action = valid & (rank >= first) & (rank < first + n_action_tokens) & ~image & ~bos
    text = valid & ~image & ~action & ~stop & ~bos
    masks = {"bos": bos, "image[cam0]": image, "text": text, "action": action, "stop": stop, "valid": valid}
    return TokenSpans(masks, ("cam0",))


def suffix_spans(batch_size: int, n_state: int, n_action: int, device: torch.device | None = None) -> TokenSpans:
    """Spans of a suffix ``[state × n_state, action × n_action]`` (all valid)."""
    t = n_state + n_action
    state = torch.zeros(batch_size, t, dtype=torch.bool, device=device)
    state[:, :n_state] = True
    return TokenSpans({"state": state, "action": ~state, "valid": torch.ones_like(state)})


def _concat(a: TokenSpans, b: TokenSpans) -> TokenSpans:
    names = set(a.masks) | set(b.masks)
    bsz = a.shape[0]
    out = {}
    for name in names:
        ma = a.masks.get(name, torch.zeros(bsz, a.shape[1], dtype=torch.bool))
        mb = b.masks.get(name, torch.zeros(bsz, b.shape[1], dtype=torch.bool))
        out[name] = torch.cat([ma, mb], 1)
    return TokenSpans(out, a.cameras or b.cameras)


def pi0_layout(
    variant: str,
    image_masks: Tensor,  # (B, n_cams) bool: camera present
    tokens_per_image: int,
    lang_mask: Tensor,  # (B, L) bool
    chunk_size: int,
    cameras: Sequence[str] | None = None,
    n_state_tokens: int = 1,
    text_state: Tensor | None = None,  # (B, L) bool: language tokens that spell the state (pi0.5)
) -> Layout:
    """Prefix + suffix layout of LeRobot's pi0 (suffix ``[state, actions]``), pi0.5 (state
    is text in the prefix: ``text_state`` marks those language tokens, which then form the
    ``state`` span and leave ``text``; suffix ``[actions]``) and SmolVLA (prefix ``[images,
    language, state]``; suffix ``[actions]``). Missing cameras' tokens are padding."""
    variants = ("pi0", "pi05", "smolvla")
    if variant not in variants:
        raise ValueError(f"pi0_layout: variant={variant!r} is not one of {variants}")
    b, n_cams = image_masks.shape
    names = _camera_names(n_cams, cameras)
    per_cam = image_masks.bool()[:, :, None].expand(b, n_cams, tokens_per_image).reshape(b, -1)
    n_img = n_cams * tokens_per_image
    state_len = n_state_tokens if variant == "smolvla" else 0
    t = n_img + lang_mask.shape[1] + state_len
    masks: dict[str, Tensor] = {}
    for k, c in enumerate(names):
        m = torch.zeros(b, t, dtype=torch.bool)
        m[:, k * tokens_per_image : (k + 1) * tokens_per_image] = image_masks[:, k : k + 1].bool()
        masks[f"image[{c}]"] = m
    text = torch.zeros(b, t, dtype=torch.bool)
    text[:, n_img : n_img + lang_mask.shape[1]] = lang_mask.bool()
    masks["text"] = text
    state = torch.zeros(b, t, dtype=torch.bool)
    state[:, t - state_len :] = state_len > 0
    if text_state is not None:
        state[:, n_img : n_img + lang_mask.shape[1]] = text_state.bool() & lang_mask.bool()
        text &= ~state
    masks["state"] = state
    masks["valid"] = torch.cat([per_cam, lang_mask.bool(), torch.ones(b, state_len, dtype=torch.bool)], 1)
    prefix = TokenSpans(masks, names)
    suffix = suffix_spans(b, n_state_tokens if variant == "pi0" else 0, chunk_size)
    return Layout({"prefix": prefix, "suffix": suffix, "joint": _concat(prefix, suffix)})


def spans_from_mapping(masks: Mapping[str, Tensor]) -> TokenSpans:
    """A :class:`TokenSpans` from a plain mapping of boolean masks."""
    return TokenSpans({k: v.bool() for k, v in masks.items()})
