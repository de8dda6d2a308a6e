"""Adapter for Prismatic VLMs: OpenVLA and VLA-Adapter (``modeling_prismatic.py``).

``PrismaticForConditionalGeneration`` / ``OpenVLAForActionPrediction`` hold timm ViT towers
(``vision_backbone.featurizer``, and ``fused_featurizer`` for the fused DINOv2 + SigLIP
backbones), an MLP ``projector`` and a Hugging Face causal LM (Llama, Qwen2 …) as
``language_model``. The file ships as remote code, so it is imported under many package
names (``prismatic.extern.hf``, ``transformers_modules.<repo>``): the adapter is registered
by class name for any module ending in ``modeling_prismatic``, and nothing is imported.

How the model runs, and what follows for the taps and the layout:

- the featurizer's ``forward`` is ``get_intermediate_layers(n={depth - 2})``: every block
  runs, the second-to-last block's patch tokens (prefix tokens dropped) are the features,
  and the tower's final norm never runs, so the vision components have no ``norm.out``;
  timm computes attention inline, so they have no ``attn.probs`` either;
- the LLM reads ``[BOS, patches, prompt, action queries, STOP]``: the projected patches are
  inserted after position 0; inference (``predict_action``) appends the queries and STOP to
  the prompt, VLA-Adapter's training batches end with the queries. The ``prefix`` layout is
  :func:`prismatic_spans` on the ids the LLM runs (for ``predict_action``: after
  ``_prepare_input_for_action_prediction``), telling the two apart per sample by STOP.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from ..tap import Adapter, Component, Layout, PatchGrid, TokenSpans, prismatic_spans, register_adapter

__all__: list[str] = []

CLASSES = ("PrismaticForConditionalGeneration", "OpenVLAForActionPrediction")
STOP_ID = 2  # what Prismatic appends as STOP: Llama's </s>, VLA-Adapter's STOP_INDEX (also with Qwen)
TOWERS = {"vision": "vision_backbone.featurizer", "vision_fused": "vision_backbone.fused_featurizer"}


def _n_action_tokens(model: nn.Module) -> int:
    """VLA-Adapter: one position per action query; OpenVLA: one token per action dimension."""
    queries = getattr(model, "action_queries", None)
    if isinstance(queries, nn.Embedding):
        return queries.num_embeddings
    try:
        return int(model.get_action_dim())
    except (AssertionError, AttributeError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{type(model).__name__} has no action_queries and no single action dimension (norm_stats with one "
            "dataset); the prismatic layout cannot tell how many action tokens end the prompt"
        ) from exc


def _vision_spans(tower: nn.Module, batch_size: int) -> TokenSpans:
    """One featurizer call: ``[prefix tokens (CLS, registers), patches]`` of one image per sample."""
    n_prefix, n_patches = int(getattr(tower, "num_prefix_tokens", 0)), tower.patch_embed.num_patches
    prefix = torch.zeros(batch_size, n_prefix + n_patches, dtype=torch.bool)
    prefix[:, :n_prefix] = True
    masks = {"image[cam0]": ~prefix, "valid": torch.ones_like(prefix)}
    if n_prefix:
        masks["cls"] = prefix
    rows, cols = tower.patch_embed.grid_size
    return TokenSpans(masks, ("cam0",), {"cam0": PatchGrid(rows, cols, n_prefix)})


def prismatic_layout(model: nn.Module, batch: Mapping[str, Tensor]) -> Layout:
    """``vision`` (and ``vision_fused``): one tower call; ``prefix``: the LLM sequence."""
    backbone = model.vision_backbone
    n_images = backbone.get_num_images_in_input()
    n_patches = backbone.get_num_patches() * n_images
    prefix = prismatic_spans(
        batch["input_ids"], batch.get("attention_mask"), n_patches, _n_action_tokens(model), stop_id=STOP_ID
    )
    if n_images == 1:
        rows, cols = backbone.featurizer.patch_embed.grid_size
        prefix.grids["cam0"] = PatchGrid(rows, cols)
    b = batch["input_ids"].shape[0]
    sequences = {name: _vision_spans(model.get_submodule(path), b) for name, path in _towers(model).items()}
    return Layout({**sequences, "prefix": prefix})


def _towers(model: nn.Module) -> dict[str, str]:
    fused = bool(getattr(model.vision_backbone, "use_fused_vision_backbone", False))
    return {name: path for name, path in TOWERS.items() if fused or name == "vision"}


def prismatic_adapter(model: nn.Module) -> Adapter:
    """The adapter of one Prismatic model (the fused tower is a component when it exists)."""
    vision = tuple(
        Component(name, layers=(f"{path}.blocks",), attn="attn", attention="none", sequence=name)
        for name, path in _towers(model).items()
    )
    llm = Component("llm", layers=("language_model.model.layers",), norm=("language_model.model.norm",))
    return Adapter(
        name="prismatic", components=(*vision, llm), extras={"projector": ("projector",)}, layout=prismatic_layout
    )


for _cls in CLASSES:
    register_adapter(f"*.modeling_prismatic.{_cls}", prismatic_adapter)
