"""The built-in Prismatic adapter (OpenVLA / VLA-Adapter), on a stand-in with VLA-Adapter's module
tree and forward: timm-like towers whose forward is the second-to-last block's patch tokens, a
projector, patches inserted after position 0 of a tiny Llama / Qwen2. The real model is checked
outside CI by ``scripts/vla_adapter_interop.py``."""

import pytest
import torch
from torch import nn

from policylens.models import get_adapter
from policylens.tap import capture, list_adapters, list_taps, prismatic_spans
from zoo import tiny_decoder

N_QUERIES, DEPTH, WIDTH = 3, 3, 16


class PatchEmbed(nn.Module):
    def __init__(self, side: int = 2, patch: int = 4) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, WIDTH, patch, patch)
        self.grid_size, self.num_patches = (side, side), side * side

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, P, W)


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(WIDTH), nn.Linear(WIDTH, WIDTH)
        self.norm2, self.mlp = nn.LayerNorm(WIDTH), nn.Sequential(nn.Linear(WIDTH, 32), nn.GELU(), nn.Linear(32, WIDTH))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Tower(nn.Module):
    """timm's ViT as Prismatic runs it: ``get_intermediate_layers(n={depth - 2})``, prefix tokens dropped."""

    def __init__(self, n_prefix: int) -> None:
        super().__init__()
        self.patch_embed, self.num_prefix_tokens = PatchEmbed(), n_prefix
        self.prefix = nn.Parameter(torch.randn(1, n_prefix, WIDTH))
        self.blocks = nn.ModuleList(Block() for _ in range(DEPTH))
        self.norm = nn.LayerNorm(WIDTH)  # never runs

    def forward(self, pixels):
        x = self.patch_embed(pixels)
        x = torch.cat([self.prefix.expand(x.shape[0], -1, -1), x], 1)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return outputs[DEPTH - 2][:, self.num_prefix_tokens :]


class VisionBackbone(nn.Module):
    def __init__(self, fused: bool) -> None:
        super().__init__()
        self.use_fused_vision_backbone = fused
        self.featurizer = Tower(n_prefix=5)  # DINOv2 with registers: CLS + 4
        if fused:
            self.fused_featurizer = Tower(n_prefix=0)  # SigLIP

    def get_num_patches(self) -> int:
        return self.featurizer.patch_embed.num_patches

    def get_num_images_in_input(self) -> int:
        return 1

    def forward(self, pixels):
        if not self.use_fused_vision_backbone:
            return self.featurizer(pixels)
        img, img_fused = torch.split(pixels, [3, 3], dim=1)
        return torch.cat([self.featurizer(img), self.fused_featurizer(img_fused)], 2)


class PrismaticForConditionalGeneration(nn.Module):
    def __init__(self, family: str = "qwen2", fused: bool = True) -> None:
        super().__init__()
        self.vision_backbone = VisionBackbone(fused)
        self.language_model = tiny_decoder(family)
        self.projector = nn.Linear(WIDTH * (2 if fused else 1), 32)
        self.action_queries = nn.Embedding(N_QUERIES, 32)

    def forward(self, input_ids, attention_mask, pixel_values, is_query, output_hidden_states=False):
        embeds = self.language_model.get_input_embeddings()(input_ids)
        queries = self.action_queries.weight.expand(input_ids.shape[0], -1, -1)
        embeds = embeds.masked_scatter(is_query[..., None], queries)
        patches = self.projector(self.vision_backbone(pixel_values))
        embeds = torch.cat([embeds[:, :1], patches, embeds[:, 1:]], 1)
        ones = attention_mask.new_ones(patches.shape[:2])
        mask = torch.cat([attention_mask[:, :1], ones, attention_mask[:, 1:]], 1)
        return self.language_model(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=output_hidden_states)


class OpenVLAForActionPrediction(PrismaticForConditionalGeneration):
    pass


for _cls in (PrismaticForConditionalGeneration, OpenVLAForActionPrediction):
    _cls.__module__ = "transformers_modules.vla_adapter.modeling_prismatic"  # as trust_remote_code loads it


def batch(stop: tuple[bool, ...] = (False, True)) -> dict:
    """Right-padded ``[BOS, prompt, queries, STOP?]`` text ids, per sample."""
    rows, lengths = [], []
    for k, has_stop in enumerate(stop):
        row = [1, *range(10, 13 + k), *[50] * N_QUERIES, *([2] if has_stop else [])]
        rows.append(row)
        lengths.append(len(row))
    width = max(lengths)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).long()
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.randn(len(stop), 6, 8, 8)}


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return OpenVLAForActionPrediction().eval()


def test_registered_by_class_name_for_any_remote_code_package():
    names = {n.rsplit(".", 1)[-1] for n in list_adapters()}
    assert {"PrismaticForConditionalGeneration", "OpenVLAForActionPrediction"} <= names
    assert "*.modeling_prismatic.OpenVLAForActionPrediction" in list_adapters()


def test_components_and_taps(model):
    adapter = get_adapter(model)
    assert [c.name for c in adapter.components] == ["vision", "vision_fused", "llm"]
    taps = {t.name: t for t in list_taps(model)}
    assert taps["llm.layers.0.out"].module_path == "language_model.model.layers.0"
    assert taps["vision_fused.layers.2.mlp.out"].module_path == "vision_backbone.fused_featurizer.blocks.2.mlp"
    assert "llm.layers.1.attn.probs" in taps and "vision.layers.0.attn.probs" not in taps
    assert "vision.norm.out" not in taps  # Prismatic never runs the tower's final norm
    assert "projector.out" in taps
    single = PrismaticForConditionalGeneration("llama", fused=False)
    assert [c.name for c in get_adapter(single).components] == ["vision", "llm"]


def test_every_tap_fires_and_equals_the_reference(model):
    b = batch()
    is_query = b["input_ids"] == 50
    names = [t.name for t in list_taps(model)]
    with torch.no_grad(), capture(model, names) as cap:
        out = model(b["input_ids"], b["attention_mask"], b["pixel_values"], is_query, output_hidden_states=True)
    hidden = out.hidden_states  # (embeddings, layer 0 … layer n-2, norm(layer n-1))
    n = len(model.language_model.model.layers)
    for i in range(n):
        assert torch.equal(cap[f"llm.layers.{i}.in"], hidden[i])
    for i in range(n - 1):
        assert torch.equal(cap[f"llm.layers.{i}.out"], hidden[i + 1])
    assert torch.equal(cap["llm.norm.out"], hidden[n])
    patches = model.vision_backbone.featurizer(b["pixel_values"][:, :3])
    assert torch.equal(cap[f"vision.layers.{DEPTH - 2}.out"][:, 5:], patches)


def test_attention_probs_under_sdpa_match_eager(model):
    import copy

    b = batch()
    is_query = b["input_ids"] == 50
    eager = copy.deepcopy(model)
    eager.language_model.set_attn_implementation("eager")
    maps = []
    for m in (model, eager):
        with torch.no_grad(), capture(m, ["llm.layers.1.attn.probs"]) as cap:
            m(b["input_ids"], b["attention_mask"], b["pixel_values"], is_query)
        maps.append(cap["llm.layers.1.attn.probs"])
    valid = get_adapter(model).layout(model, b)["prefix"]["valid"]
    rows = valid[:, None, :, None] & valid[:, None, None, :]  # padded rows differ by convention only
    assert torch.allclose(maps[0] * rows, maps[1] * rows, atol=1e-6)


def test_layout_labels_training_and_inference_samples(model):
    b = batch(stop=(False, True))  # a training sample (no STOP) beside an inference one
    layout = get_adapter(model).layout(model, b)
    prefix, p = layout["prefix"], model.vision_backbone.get_num_patches()
    assert layout["vision"]["cls"].sum(1).tolist() == [5, 5]
    assert "cls" not in layout["vision_fused"]
    assert layout["vision"].grids["cam0"].rows == 2
    assert prefix.positions("image", 0).tolist() == list(range(1, 1 + p))
    for k in range(2):
        queries = (b["input_ids"][k] == 50).nonzero().flatten() + p  # text position -> sequence position
        assert prefix.positions("action", k).tolist() == queries.tolist()
    assert prefix.positions("stop", 0).tolist() == []
    assert prefix.positions("stop", 1).tolist() == [int(b["attention_mask"][1].sum()) + p - 1]
    assert prefix.positions("text", 0).tolist() == [1 + p, 2 + p, 3 + p]
    assert torch.equal(
        prefix["action"], prismatic_spans(b["input_ids"], b["attention_mask"], p, N_QUERIES, stop_id=2)["action"]
    )
