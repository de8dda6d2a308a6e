"""What differs between the ``transformers`` releases policylens supports (4.57 … 5.x).

Two things moved between 4.x and 5.x, and one keyword is being renamed inside 5.x:

- Gemma's ``√width`` input scale: 4.x multiplies ``inputs_embeds`` inside
  ``GemmaModel.forward``; 5.x folds it into ``embed_tokens`` and leaves embeddings
  passed as ``inputs_embeds`` alone. :func:`gemma_input_scale` tells which applies, so
  a model that feeds embeddings directly (image features, an action expert's suffix)
  computes the same numbers on every release.
- SigLIP inside PaliGemma: 4.x nests it as ``vision_tower.vision_model.…``, 5.x as
  ``vision_tower.…``; :func:`align_state_dict` renames checkpoint keys to match.
- The key/value cache keyword: ``past_key_values=`` before 5.24, ``cache=`` from 5.24
  (the old name warns and goes away in 5.40). :func:`cache_kwargs` picks the name from
  the forward's own signature instead of from a version number.
"""

from __future__ import annotations

import inspect
from functools import cache

from torch import nn

__all__ = ["align_state_dict", "cache_kwargs", "gemma_input_scale"]


@cache
def _cache_keyword(forward) -> str:
    return "cache" if "cache" in inspect.signature(forward).parameters else "past_key_values"


def cache_kwargs(model: nn.Module, cache_object) -> dict:
    """``{"cache" or "past_key_values": cache_object}`` for ``model``'s forward."""
    return {_cache_keyword(type(model).forward): cache_object}


def gemma_input_scale(model: nn.Module) -> float:
    """The factor ``GemmaModel.forward`` applies to ``inputs_embeds``: ``√width`` on 4.x, 1 on 5.x."""
    scaled_embedding = hasattr(model.embed_tokens, "embed_scale")
    return 1.0 if scaled_embedding else float(model.config.hidden_size) ** 0.5


def align_state_dict(state: dict, expected: list[str] | set[str]) -> dict:
    """``state`` with keys renamed to ``expected`` where they differ by one inserted path
    segment: transformers 5.x builds PaliGemma's SigLIP tower without 4.x's
    ``vision_model.`` level, so a checkpoint saved on one release loads on the other."""
    expected = set(expected)
    missing = expected - state.keys()
    if not missing:
        return state
    dropped = {}
    for key in missing:
        parts = key.split(".")
        for i in range(len(parts)):
            dropped.setdefault(".".join(parts[:i] + parts[i + 1 :]), key)
    renamed = {}
    for key, value in state.items():
        if key in expected:
            renamed[key] = value
        elif key in dropped:  # the file lacks a segment this release has
            renamed[dropped[key]] = value
        else:  # the file has a segment this release lacks
            parts = key.split(".")
            shorter = (".".join(parts[:i] + parts[i + 1 :]) for i in range(len(parts)))
            renamed[next((k for k in shorter if k in missing), key)] = value
    return renamed
