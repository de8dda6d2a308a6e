"""Check policylens on VLA-Adapter's real Prismatic model (``prismatic/extern/hf/modeling_prismatic.py``), built
with tiny random weights offline, outside CI: VLA-Adapter pins ``transformers==4.40.1`` and ``timm==0.9.16``, far
below policylens' own ``transformers>=4.57.1``, so it runs in a venv of its own::

    python3.11 -m venv /tmp/vla_adapter_venv
    /tmp/vla_adapter_venv/bin/pip install transformers==4.40.1 tokenizers==0.19.1 timm==0.9.16 \\
        torch==2.10.0 torchvision==0.25.0 safetensors numpy zarr typer rich tqdm pillow
    /tmp/vla_adapter_venv/bin/pip install -e . --no-deps
    git clone https://github.com/OpenHelix-Team/VLA-Adapter /tmp/vla_adapter_src   # only its prismatic/ is read
    /tmp/vla_adapter_venv/bin/python scripts/vla_adapter_interop.py --vla-adapter-src /tmp/vla_adapter_src \\
        [--llm qwen2 llama] [--out table.md]

(timm imports torchvision, whose PyPI wheels need the PyPI torch they were built with: pin the pair together.)
VLA-Adapter's package ``__init__`` files import its training stack (TensorFlow, draccus …); the script loads
``modeling_prismatic`` and the two small modules it needs (``prismatic.vla.constants``,
``prismatic.training.train_utils``) without running them. The vision towers are VLA-Adapter's fused DINOv2 (CLS +
4 registers, LayerScale) + SigLIP pair, as tiny timm ViTs registered here; the LLM is a tiny Qwen2 (VLA-Adapter's
``qwen25-0_5b``) or Llama. A PASS / FAIL table; exit 1 on any FAIL.

On a newer transformers (4.57.1 tried) the same script compares SDPA with eager attention maps; VLA-Adapter's
model then needs one shim (``_buildable``). Checks:

1. the built-in adapter is found, and every hidden-state tap of ``list_taps`` fires on ``forward`` (a training
   batch) and on ``predict_action``;
2. llm ``in`` / ``out`` / ``norm.out`` equal ``output_hidden_states``; the vision tower's second-to-last block is
   the featurizer's output; ``projector.out`` is ``projector_features``;
3. ``attn.probs`` under SDPA equal eager, or, on a transformers without ``AttentionInterface`` (4.40.1), fail with
   the message that names the version needed;
4. ``prismatic_spans`` (STOP detected from the ids) labels a training batch (no STOP, two prompt lengths) and an
   inference batch (STOP) as VLA-Adapter's own action masks do;
5. VLA-Adapter's features sit one position left of those spans: ``finetune.py`` takes ``hidden[:, :num_patches]``
   (task) and the positions before the query slots (action); ``predict_action`` slices the same; the positions
   and the values of ``predict_action``'s ``actions_hidden_states`` are checked;
6. the retention step (``policylens.retain.Retainer``, CRaFT) runs on the model: a student and a teacher copy with
   the same weights; the student's features are ``llm.layers.{mid}.out`` mean-pooled over the task positions and
   ``llm.layers.-1.out`` over the action positions (VLA-Adapter's: image and action spans shifted one left), taken
   with ``capture(..., keep_graph=True)``; L_ret is exactly 0 at step 0, ``Retainer.backward`` leaves finite
   gradients in every LLM parameter, a few AdamW steps on the action-token loss raise L_ret and λ (ε = 0), and on a
   conflicting step the combined gradient equals A-GEM computed by hand on two ``torch.autograd.grad`` passes.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import sys
import time
import types
from importlib import metadata
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer

from policylens.anchors import shift_left
from policylens.models import get_adapter
from policylens.retain import Retainer, RetentionConfig, retention_loss
from policylens.tap import capture, list_taps, masked_mean, prismatic_spans

ROWS: list[dict] = []
LLMS = {  # VLA-Adapter backbone id, tiny text config
    "qwen2": ("qwen25-0_5b-extra", {"num_key_value_heads": 2}),
    "llama": ("llama2-7b-pure", {"num_key_value_heads": 4}),
}
TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 4}
VOCAB = 151936  # action token ids sit above ACTION_TOKEN_BEGIN_IDX = 151386
IMAGE, PATCH = 32, 8
PASSED_BY_PRISMATIC = ("img_size", "num_classes", "act_layer")  # timm.create_model also hands pretrained_cfg


def _vit(**kwargs) -> VisionTransformer:
    return VisionTransformer(patch_size=PATCH, depth=3, num_heads=2, **kwargs)


@register_model
def policylens_tiny_dinov2_reg(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """DINOv2 with registers, tiny: CLS + 4 register tokens, LayerScale (Prismatic renames its gamma)."""
    given = {k: v for k, v in kwargs.items() if k in PASSED_BY_PRISMATIC}
    return _vit(embed_dim=32, reg_tokens=4, init_values=0.1, **given)


@register_model
def policylens_tiny_siglip(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """SigLIP, tiny: no class token."""
    given = {k: v for k, v in kwargs.items() if k in PASSED_BY_PRISMATIC}
    return _vit(embed_dim=24, class_token=False, global_pool="avg", **given)


@contextlib.contextmanager
def row(model: str, check: str):
    """One table row; the body fills ``ok`` / ``value`` / ``detail``. An exception is a FAIL with its message."""
    r = {"model": model, "check": check, "ok": False, "value": "", "detail": ""}
    t0 = time.perf_counter()
    try:
        yield r
    except Exception as exc:  # any crash is a FAIL of this check; the others still run
        r.update(ok=False, detail=f"{type(exc).__name__}: {exc}"[:400])
    r["seconds"] = round(time.perf_counter() - t0, 2)
    ROWS.append(r)
    print(f"[{model}] {check}: {'PASS' if r['ok'] else 'FAIL'} {r['value']} {r['detail']}", file=sys.stderr)


def import_prismatic(src: Path) -> types.ModuleType:
    """``modeling_prismatic`` from VLA-Adapter's source, its packages' ``__init__`` files skipped."""
    root = src / "prismatic"
    if not (root / "extern" / "hf" / "modeling_prismatic.py").is_file():
        raise SystemExit(f"--vla-adapter-src {src}: no prismatic/extern/hf/modeling_prismatic.py under it")
    for name in ("prismatic", "prismatic.extern", "prismatic.extern.hf", "prismatic.training", "prismatic.vla"):
        package = types.ModuleType(name)
        package.__path__ = [str(src / name.replace(".", "/"))]
        sys.modules[name] = package
    with contextlib.redirect_stdout(io.StringIO()):  # constants.py prints the robot platform it picked
        return importlib.import_module("prismatic.extern.hf.modeling_prismatic")


def build(mp: types.ModuleType, llm: str, attn: str, seed: int = 0) -> torch.nn.Module:
    backbone, extra = LLMS[llm]
    cfg = mp.OpenVLAConfig(
        vision_backbone_id="dinosiglip-vit-so-224px",
        llm_backbone_id=backbone,
        text_config={**TEXT, **extra, "vocab_size": VOCAB, "max_position_embeddings": 512},
        pad_token_id=0,
        norm_stats={"tiny": {"action": {"q01": [-1.0] * 7, "q99": [1.0] * 7, "mask": [True] * 7}}},
    )
    cfg.timm_model_ids = ["policylens_tiny_dinov2_reg", "policylens_tiny_siglip"]
    cfg.image_sizes = [IMAGE, IMAGE]
    cfg._attn_implementation = attn
    torch.manual_seed(seed)
    return _buildable(mp.OpenVLAForActionPrediction)(cfg).eval()


def _buildable(cls: type) -> type:
    """Past 4.40.1 (4.57.1 tried) ``PreTrainedModel.__init__`` reads ``_supports_sdpa``, which VLA-Adapter's property
    answers from ``language_model`` before that exists: a subclass (found by the adapter through its base) says it."""
    if metadata.version("transformers") == "4.40.1":
        return cls
    return type(cls.__name__, (cls,), {"_supports_sdpa": True, "__module__": __name__})


def training_batch(c: types.ModuleType, seed: int = 0) -> dict:
    """As VLA-Adapter's ``RLDSBatchTransform`` (``use_minivlm``) + collator make it: ``[BOS, prompt, NUM_TOKENS
    action tokens]`` (no STOP), labels IGNORE but for the last prompt token and the actions, right-padded."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for n_prompt in (6, 4):
        prompt = torch.randint(3, 1000, (n_prompt,), generator=g).tolist()
        actions = torch.randint(c.ACTION_TOKEN_BEGIN_IDX + 1, VOCAB, (c.NUM_TOKENS,), generator=g).tolist()
        rows.append([1, *prompt, *actions])
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    labels = torch.full_like(ids, c.IGNORE_INDEX)
    for k, r in enumerate(rows):
        labels[k, len(r) - c.NUM_TOKENS - 1 : len(r)] = ids[k, len(r) - c.NUM_TOKENS - 1 : len(r)]
    pixels = torch.randn(len(rows), 6, IMAGE, IMAGE, generator=g)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "pixel_values": pixels}


def inference_inputs(seed: int = 1) -> dict:
    """What ``predict_action`` is given (batch of one): ``[BOS, prompt]``; it appends the queries and STOP."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor([[1, *torch.randint(3, 1000, (5,), generator=g).tolist()]])
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": torch.randn(1, 6, IMAGE, IMAGE)}


def to_sequence(mask: torch.Tensor, n_patches: int) -> torch.Tensor:
    """A ``(B, L)`` mask over text positions -> ``(B, L + P)`` over the LLM sequence (patches after position 0)."""
    return torch.cat([mask[:, :1], mask.new_zeros(mask.shape[0], n_patches), mask[:, 1:]], 1)


def ranges(positions: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1..3,7"``."""
    out, start = [], None
    for k, p in enumerate(positions):
        start = p if start is None else start
        if k + 1 == len(positions) or positions[k + 1] != p + 1:
            out.append(f"{start}..{p}" if p > start else f"{p}")
            start = None
    return ",".join(out) or "-"


def check_model(mp: types.ModuleType, c: types.ModuleType, tu: types.ModuleType, llm: str) -> None:
    model = None
    with row(llm, "build OpenVLAForActionPrediction (tiny, random, SDPA)") as r:
        model = build(mp, llm, "sdpa")
        n_params = sum(p.numel() for p in model.parameters())
        r.update(ok=True, value=f"{type(model.language_model).__name__}, {n_params / 1e6:.1f}M parameters")
    if model is None:
        return
    n_patches = model.vision_backbone.get_num_patches() * model.vision_backbone.get_num_images_in_input()
    train = training_batch(c)
    infer = inference_inputs()
    names = []

    with row(llm, "built-in adapter found; list_taps") as r:
        adapter = get_adapter(model)
        names = [t.name for t in list_taps(model)]
        comps = {comp.name: sum(n.startswith(f"{comp.name}.") for n in names) for comp in adapter.components}
        r.update(ok=adapter.name == "prismatic" and all(comps.values()), value=f"{len(names)} taps {comps}")
    hidden = [n for n in names if not n.endswith(".attn.probs")]

    with row(llm, "every hidden-state tap fires on forward (training batch)") as r, torch.no_grad():
        with capture(model, hidden) as cap:
            out = model(**train, output_hidden_states=True, output_projector_features=True)
        r.update(ok=True, value=f"{len(hidden)} taps")

    with row(llm, "llm in/out/norm.out == output_hidden_states (exact)") as r:
        hs, n = out.hidden_states, len(model.language_model.model.layers)
        pairs = [(f"llm.layers.{i}.in", hs[i]) for i in range(n)]
        pairs += [(f"llm.layers.{i}.out", hs[i + 1]) for i in range(n - 1)] + [("llm.norm.out", hs[n])]
        worst = max((cap[name].double() - ref.double()).abs().max().item() for name, ref in pairs)
        r.update(ok=worst == 0.0, value=f"{len(pairs)} tensors, max abs diff {worst:.1e}")

    with row(llm, "vision block depth-2 == featurizer output; projector.out == projector_features") as r:
        with torch.no_grad():
            feats = model.vision_backbone.featurizer(train["pixel_values"][:, :3])
            fused = model.vision_backbone.fused_featurizer(train["pixel_values"][:, 3:])
        last = len(model.vision_backbone.featurizer.blocks) - 2
        prefix = model.vision_backbone.featurizer.num_prefix_tokens
        ok = torch.equal(cap[f"vision.layers.{last}.out"][:, prefix:], feats)
        ok &= torch.equal(cap[f"vision_fused.layers.{last}.out"], fused)
        ok &= torch.equal(cap["projector.out"], out.projector_features)
        r.update(ok=ok, value=f"vision prefix tokens {prefix}, patches {feats.shape[1]}")

    with row(llm, "every hidden-state tap fires on predict_action (inference)") as r, torch.no_grad():
        with capture(model, hidden) as icap:
            _, actions_hidden = model.predict_action(**infer, unnorm_key="tiny")
        r.update(ok=True, value=f"{len(hidden)} taps")

    check_attention(mp, model, train, llm)

    with row(llm, "training batch (no STOP): prismatic_spans == VLA-Adapter's action mask") as r:
        spans = get_adapter(model).layout(model, train)["prefix"]
        theirs = to_sequence(model._process_action_masks(train["labels"]), n_patches)
        ok = torch.equal(spans["action"], theirs) and spans["stop"].sum() == 0
        ok &= spans.positions("image", 0).tolist() == list(range(1, 1 + n_patches))
        value = "; ".join(
            f"sample {k}: image {ranges(spans.positions('image', k).tolist())} text "
            f"{ranges(spans.positions('text', k).tolist())} action {ranges(spans.positions('action', k).tolist())} "
            f"stop {ranges(spans.positions('stop', k).tolist())}"
            for k in range(2)
        )
        r.update(ok=bool(ok), value=value)

    with row(llm, "finetune.py features = spans shifted one left (positions and values)") as r:
        shifted = {k: spans[k].roll(-1, 1) for k in ("image", "action")}
        labels = train["labels"][:, 1:]
        theirs = tu.get_current_action_mask(labels) | tu.get_next_actions_mask(labels)  # over item[:, P:-1]
        action = torch.zeros_like(spans["valid"])
        action[:, n_patches:-1] = theirs
        task = torch.zeros_like(spans["valid"])
        task[:, :n_patches] = True  # item[:, :num_patches]
        ok = torch.equal(shifted["action"], action) and torch.equal(shifted["image"], task)
        last = out.hidden_states[-1]
        ok &= torch.equal(cap["llm.norm.out"][shifted["action"]], last[:, n_patches:-1][theirs])
        value = "; ".join(
            f"sample {k}: task {ranges(task[k].nonzero().flatten().tolist())} "
            f"action {ranges(action[k].nonzero().flatten().tolist())}"
            for k in range(2)
        )
        r.update(ok=bool(ok), value=value)

    with row(llm, "inference batch (STOP): prismatic_spans == predict_action's placeholders") as r:
        ids, mask = model._prepare_input_for_action_prediction(infer["input_ids"], infer["attention_mask"])
        full = {"input_ids": ids, "attention_mask": mask, "pixel_values": infer["pixel_values"]}
        ispans = get_adapter(model).layout(model, full)["prefix"]
        n_prompt = infer["input_ids"].shape[1] - 1  # NUM_PROMPT_TOKENS in predict_action
        queries = list(range(1 + n_patches + n_prompt, 1 + n_patches + n_prompt + c.NUM_TOKENS))
        ok = ispans.positions("action").tolist() == queries
        ok &= ispans.positions("stop").tolist() == [queries[-1] + 1] and int(ids[0, -1]) == c.STOP_INDEX
        value = (
            f"image {ranges(ispans.positions('image').tolist())} text {ranges(ispans.positions('text').tolist())} "
            f"action {ranges(ispans.positions('action').tolist())} stop {ranges(ispans.positions('stop').tolist())}"
        )
        r.update(ok=ok, value=value)

    with row(llm, "predict_action features = spans shifted one left (positions and values)") as r:
        start = n_patches + n_prompt  # its slice [NUM_PATCHES + NUM_PROMPT_TOKENS : ... + NUM_TOKENS]
        action_pos = (ispans["action"].roll(-1, 1)).nonzero()[:, 1].tolist()
        task_pos = (ispans["image"].roll(-1, 1)).nonzero()[:, 1].tolist()
        ok = action_pos == list(range(start, start + c.NUM_TOKENS)) and task_pos == list(range(n_patches))
        mine = icap["llm.norm.out"][:, action_pos].to(torch.bfloat16).reshape(actions_hidden.shape)
        ok &= torch.equal(mine, actions_hidden)
        r.update(ok=ok, value=f"task {ranges(task_pos)} action {ranges(action_pos)}")

    with row(llm, "has_stop=True (the former default) mislabels the training batch") as r:
        forced = prismatic_spans(train["input_ids"], train["attention_mask"], n_patches, c.NUM_TOKENS, has_stop=True)
        wrong = not torch.equal(forced["action"], spans["action"])
        r.update(
            ok=wrong,
            value=f"action {ranges(forced.positions('action', 0).tolist())} "
            f"stop {ranges(forced.positions('stop', 0).tolist())} (sample 0)",
        )

    check_retention(mp, c, llm)


def check_attention(mp: types.ModuleType, model: torch.nn.Module, batch: dict, llm: str) -> None:
    """SDPA vs an eager twin (the attention class is chosen at construction on 4.40.1, so it is built so)."""
    probs = [t.name for t in list_taps(model) if t.name.endswith(".attn.probs")]
    eager = build(mp, llm, "eager")
    eager.load_state_dict(model.state_dict())
    try:
        from transformers.modeling_utils import AttentionInterface  # noqa: F401
    except ImportError:
        for impl, m in (("sdpa", model), ("eager", eager)):
            with row(llm, f"attn.probs ({impl}) without AttentionInterface: clear error") as r:
                try:
                    with capture(m, probs[:1]):
                        m(**batch)
                    r.update(detail="no error")
                except ImportError as exc:
                    text = str(exc)
                    r.update(ok="transformers>=4.57.1" in text and "Hidden-state taps" in text, value=text[:150] + "…")
        return
    with row(llm, "attn.probs under SDPA == eager") as r, torch.no_grad():
        maps = []
        for m in (model, eager):
            with capture(m, probs) as cap:
                m(**batch)
            maps.append(cap)
        worst = max((maps[0][n].double() - maps[1][n].double()).abs().max().item() for n in probs)
        impls = [m.language_model.config._attn_implementation for m in (model, eager)]
        r.update(ok=worst < 1e-6 and impls == ["sdpa", "eager"], value=f"{len(probs)} taps, max abs diff {worst:.1e}")


def student_features(model: torch.nn.Module, c: types.ModuleType, mid: int):
    """The student's features, ``run(inputs, indices=None) -> {"target_features": (B, 2D)}`` in float32 with the
    graph kept: ``llm.layers.{mid}.out`` mean-pooled over the task positions and ``llm.layers.-1.out`` over the
    action positions, VLA-Adapter's (``prismatic_spans`` with STOP detected, image and action spans each
    ``shift_left``). The forward stops once both taps fired (no final norm, no 151936-wide logits)."""
    taps = [f"llm.layers.{mid}.out", "llm.layers.-1.out"]
    n_patches = model.vision_backbone.get_num_patches() * model.vision_backbone.get_num_images_in_input()

    def run(inputs: dict, indices: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        spans = prismatic_spans(inputs["input_ids"], inputs["attention_mask"], n_patches, c.NUM_TOKENS)
        task, action = shift_left(spans["image"]), shift_left(spans["action"])  # (B, T) each
        with capture(model, taps, keep_graph=True, stop_early=True) as cap:
            model(**inputs)
        feats = [masked_mean(cap[taps[0]].float(), task), masked_mean(cap[taps[1]].float(), action)]  # (B, D) each
        return {"target_features": torch.cat(feats, -1)}  # (B, 2D)

    return run


def action_token_loss(c: types.ModuleType):
    """The task loss: next-token cross-entropy on the labelled tokens (last prompt token, actions) over the
    multimodal sequence, the loss OpenVLA's Prismatic computes. VLA-Adapter's forward hands the LLM ``labels=None``
    (its action head trains on the hidden states) and returns neither ``loss`` nor ``logits``, so the logits are the
    LM head applied to the final (normed) hidden states."""

    def loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        out = model(**batch, output_hidden_states=True, output_projector_features=True)
        labels = model._build_multimodal_labels(batch["labels"], out.projector_features)  # (B, T)
        logits = model.language_model.lm_head(out.hidden_states[-1][:, :-1]).float()  # (B, T - 1, V)
        return F.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten(), ignore_index=c.IGNORE_INDEX)

    return loss


def agem_reference(retainer: Retainer, task: dict, anchor: dict, lam: float) -> tuple[list, float]:
    """The combined gradient from two ``torch.autograd.grad`` passes, A-GEM done by hand in float64 on the
    flattened gradients (missing ones count as zero); also cos(g_act, g_ret)."""
    params, model = retainer.params, retainer.model
    g_act = torch.autograd.grad(retainer.task_loss(model, task), params, allow_unused=True)
    inputs = {k: v for k, v in anchor.items() if k != "target_features"}
    feats = retainer.student(inputs)["target_features"]
    g_ret = torch.autograd.grad(retention_loss(feats, anchor["target_features"]), params, allow_unused=True)

    def flat(grads) -> torch.Tensor:  # (N,) float64
        pairs = zip(params, grads, strict=True)
        return torch.cat([(torch.zeros_like(p) if g is None else g).double().flatten() for p, g in pairs])

    a, r = flat(g_act), flat(g_ret)
    dot = float(a @ r)
    coef = dot / (float(r @ r) + retainer.config.delta) if dot < 0 else 0.0
    want = []
    for p, ga, gr in zip(params, g_act, g_ret, strict=True):
        if ga is None and gr is None:
            want.append(None)
            continue
        ga = torch.zeros_like(p, dtype=torch.float64) if ga is None else ga.double()
        gr = torch.zeros_like(p, dtype=torch.float64) if gr is None else gr.double()
        want.append(ga - coef * gr + lam * gr)
    return want, dot / float(a.norm() * r.norm())


def check_retention(mp: types.ModuleType, c: types.ModuleType, llm: str, steps: int = 3, sgd_lr: float = 1e-6) -> None:
    """The CRaFT retention step on the real model: a student and a frozen teacher copy, teacher features cached
    under no_grad, ``Retainer.backward`` (two backward passes) then AdamW."""
    student = build(mp, llm, "sdpa").train()
    teacher = build(mp, llm, "sdpa")
    teacher.load_state_dict(student.state_dict())
    teacher.requires_grad_(False)
    mid = len(student.language_model.model.layers) // 2
    anchor, task = training_batch(c, seed=0), training_batch(c, seed=1)
    with torch.no_grad():
        anchor["target_features"] = student_features(teacher, c, mid)(anchor)["target_features"].float()  # (B, 2D)
    config = RetentionConfig(method="craft", epsilon=0.0, lam=0.0, lam_lr=1.0)
    retainer = Retainer(student, action_token_loss(c), student_features(student, c, mid), config)
    llm_params = list(student.language_model.parameters())
    stats = {}

    with row(llm, "retention: keep_graph student features == teacher copy's; L_ret == 0 at step 0") as r:
        inputs = {k: v for k, v in anchor.items() if k != "target_features"}
        feats = retainer.student(inputs)["target_features"]
        l_ret = retainer.retention(anchor)
        d = student.language_model.config.hidden_size
        ok = float(l_ret) == 0.0 and feats.requires_grad and tuple(feats.shape) == (2, 2 * d)
        value = f"features {tuple(feats.shape)} from llm.layers.{mid}.out (task) + llm.layers.-1.out (action), "
        r.update(ok=ok, value=value + f"grad {feats.requires_grad}, L_ret {float(l_ret):.1e}")

    with row(llm, "Retainer.backward (craft, ε=0): finite .grad in every LLM parameter") as r:
        stats = retainer.backward(task, anchor)
        grads = [p.grad for p in llm_params]
        finite = sum(g is not None and bool(torch.isfinite(g).all()) for g in grads)
        ok = finite == len(llm_params) and bool(torch.isfinite(stats["loss_act"])) and float(stats["loss_ret"]) == 0
        r.update(
            ok=ok,
            value=f"{finite}/{len(llm_params)} LLM parameters, L_act {float(stats['loss_act']):.3f}, "
            f"L_ret {float(stats['loss_ret']):.1e}, λ {float(stats['lam']):.1e}",
        )

    with row(llm, f"{steps} AdamW steps (lr 1e-3): L_ret > 0 and λ moved (craft, ε=0)") as r:
        optimizer = torch.optim.AdamW(retainer.params, lr=1e-3)
        history = [float(stats["loss_ret"])]
        for k in range(steps):
            if k:
                stats = retainer.backward(task, anchor)
                history.append(float(stats["loss_ret"]))
            torch.nn.utils.clip_grad_norm_(retainer.params, 1.0)
            optimizer.step()
        with torch.no_grad():
            after = float(retainer.retention(anchor))
        ok = after > 0 and retainer.dual.lam > 0 and all(h > 0 for h in history[1:])
        shown = ", ".join(f"{h:.1e}" for h in [*history, after])
        r.update(ok=ok, value=f"L_ret {shown}; λ 0 → {retainer.dual.lam:.1e}")

    with row(llm, "conflicting step: Retainer's .grad == A-GEM on separate autograd.grad passes (rtol 1e-5)") as r:
        # the student back at the teacher, then one plain SGD step on the task alone: θ1 - θ0 = -η g_act, so
        # g_ret(θ1) ≈ -η JᵀJ g_act (Gauss-Newton, exact at L_ret = 0) and the two conflict to first order; η is
        # small (|g_act| ~ 30 at init: at η = 1e-4 the step already leaves the linear regime and cos turns ~0)
        student.load_state_dict(teacher.state_dict())
        params = [p for p in student.parameters() if p.requires_grad]
        g_act = torch.autograd.grad(retainer.task_loss(student, task), params, allow_unused=True)
        with torch.no_grad():
            for p, g in zip(params, g_act, strict=True):
                if g is not None:
                    p.sub_(sgd_lr * g)
        lam = 0.5
        config = RetentionConfig(method="craft", epsilon=0.0, lam=lam)
        retainer = Retainer(student, action_token_loss(c), student_features(student, c, mid), config)
        want, cos = agem_reference(retainer, task, anchor, lam)
        stats = retainer.backward(task, anchor)
        worst = scale = 0.0
        for p, w in zip(retainer.params, want, strict=True):
            if (p.grad is None) != (w is None):
                raise AssertionError(f"gradient present in one of the two only (shape {tuple(p.shape)})")
            if w is not None:
                worst = max(worst, (p.grad.double() - w).abs().max().item())
                scale = max(scale, w.abs().max().item())
        ok = float(stats["projected"]) == 1.0 and cos < 0 and worst <= 1e-5 * scale
        r.update(
            ok=ok,
            value=f"after one SGD step (lr {sgd_lr:g}): L_ret {float(stats['loss_ret']):.1e}, cos(g_act, g_ret) "
            f"{cos:.2f} (projected {int(stats['projected'])}), λ {lam}, "
            f"max abs diff {worst:.1e} (largest gradient entry {scale:.1e})",
        )


def table() -> str:
    lines = ["| model | check | result | value | detail |", "| --- | --- | --- | --- | --- |"]
    for r in ROWS:
        cells = [r["model"], r["check"], "PASS" if r["ok"] else "FAIL", r["value"], r["detail"]]
        lines.append("| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in cells) + " |")
    passed = sum(r["ok"] for r in ROWS)
    lines.append(f"\n{passed} passed, {len(ROWS) - passed} failed")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vla-adapter-src", type=Path, required=True, help="a VLA-Adapter checkout (holds prismatic/)")
    parser.add_argument("--llm", nargs="+", choices=sorted(LLMS), default=["qwen2", "llama"])
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = parser.parse_args()
    mp = import_prismatic(args.vla_adapter_src.resolve())
    c, tu = sys.modules["prismatic.vla.constants"], sys.modules["prismatic.training.train_utils"]
    versions = {p: metadata.version(p) for p in ("torch", "transformers", "tokenizers", "timm")}
    print(f"versions: {versions} (timm module {timm.__version__})", file=sys.stderr)
    for llm in args.llm:
        check_model(mp, c, tu, llm)
    text = f"versions: {', '.join(f'{k} {v}' for k, v in versions.items())}\n\n{table()}"
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0 if all(r["ok"] for r in ROWS) else 1


if __name__ == "__main__":
    sys.exit(main())
