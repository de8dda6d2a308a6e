"""Check policylens on LeRobot 0.4.4's real SmolVLA, pi0 and pi0.5 (tiny, random, built offline by
``lerobot_builders.py``), outside CI: lerobot pins torch and transformers, so it is never a policylens dependency::

    /tmp/lerobot_venv/bin/pip list > /tmp/pins_before.txt   # the venv with lerobot, before policylens goes in
    /tmp/lerobot_venv/bin/pip install -e .
    /tmp/lerobot_venv/bin/python scripts/lerobot_policies_interop.py \
        [--pi-transformers /tmp/pi_transformers] [--pins-before /tmp/pins_before.txt] [--out DIR]

pi0 / pi0.5 need LeRobot's patched transformers (what its ``pi`` extra installs): given, they run in a child
interpreter with it first on PYTHONPATH. Checks (a PASS / FAIL table; exit 1 on any FAIL):

1. every tap of ``list_taps(policy)`` fires on ``predict_action_chunk`` or the training ``forward``, and the
   llm / expert ``in``, ``out``, ``attn.out``, ``mlp.out`` taps equal LeRobot's own values exactly, recorded by
   wrapping LeRobot's functions (pi training: ``compute_layer_complete``; pi inference: the Gemma decoder layers;
   SmolVLA: the ``inputs_embeds`` of ``forward_attn_layer`` / ``forward_cross_attn_layer`` and the final norm);
2. pi0 / pi0.5 ``attn.probs`` equal the weights of Gemma's ``eager_attention_forward`` (wrapped outside the
   capture) on the first call after building (sdpa at attach), a later call and the joint training pass;
   SmolVLA's llm / expert ``attn.probs`` equal the ``softmax`` output inside its own ``eager_attention_forward``
   (split by query rows in ``q_proj`` call order) on ``select_action``, ``predict_action_chunk`` and ``forward``,
   for the default layers (cross-attention every other layer), ``attention_mode=self_attn``, 2 expert layers for 4
   LLM layers, and the default with the attention output computed by SDPA; the capture leaves the actions and the
   model's methods as they were; the attention job's ``extract_attention`` runs on it through ``LeRobotTeacher``;
3. the layout equals the one the policy's own ``embed_prefix`` builds (``lerobot_builders.prefix_layout``);
4. ``build_cache`` on a saved checkpoint and a policylens-made LeRobot dataset stores what a direct capture
   computes on the same pre-processed frames (``hidden_feature`` and ``bridge``: its flow from each frame's own noise);
5. installing policylens kept lerobot's torch / transformers / tokenizers;
6. ``LeRobotTeacher.image_transform`` finds the bars the policy's own image preprocessing drew and maps its
   input back onto the frame (the attention job's overlays);
7. BAC caching (``policylens.accel``) applies to the policy's action expert through ``LeRobotTeacher`` (SmolVLA's
   layers called in pieces: ``o_proj`` / ``mlp`` outputs; pi0 / pi0.5: the expert's Gemma layers), is
   bit-identical to the uncached policy with every flow step updated, and ``compare_modes`` (10 flow steps, one
   torch thread, B=1) gives the expert's speed-up and the action error of uniform schedules against the
   uncached chunk; a uniform S=1 row with and without skipping the attention function measures a skipped step.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lerobot_builders as lb
import torch

COMPONENTS = ("llm", "expert")
LAYER_TAP = re.compile(r"(llm|expert)\.layers\.\d+\.(in|out|attn\.out|mlp\.out)")  # checked against LeRobot's values
CAMERA_MAP = {"varied_camera_1": "observation.images.front", "hand_camera": "observation.images.wrist"}
LAYOUT_CASES = {  # label, builder options, cameras present (None: both "top" and "wrist")
    "smolvla": [
        ("default", {}, None),
        ("first camera missing, empty_cameras=0", {}, ["wrist"]),
        ("add_image_special_tokens=True", {"add_image_special_tokens": True}, None),
        ("prefix_length=160", {"prefix_length": 160}, None),
        ("resize_imgs_with_padding=(256, 256)", {"resize_imgs_with_padding": (256, 256)}, None),
        ("empty_cameras=1, first camera missing", {"empty_cameras": 1}, ["wrist"]),
    ],
    "pi0": [("first of two cameras missing", {}, ["wrist"])],
    "pi05": [("default: state inside the prompt", {}, None)],
}
BUILD = {"smolvla": lb.build_smolvla, "pi0": lb.build_pi0, "pi05": lb.build_pi05}  # pi: on the imported transformers
ROWS: list[dict] = []


@contextlib.contextmanager
def row(policy: str, check: str):
    """One table row; the body fills ``ok`` / ``value`` / ``detail``. An exception is a FAIL with its message."""
    r = {"policy": policy, "check": check, "ok": False, "value": "", "detail": ""}
    t0 = time.perf_counter()
    try:
        yield r
    except Exception as exc:  # any crash is a FAIL of this check; the others still run
        r.update(ok=False, detail=f"{type(exc).__name__}: {exc}"[:400])
    r["seconds"] = round(time.perf_counter() - t0, 2)
    ROWS.append(r)
    print(f"[{policy}] {check}: {'PASS' if r['ok'] else 'FAIL'} {r['value']} {r['detail']}", file=sys.stderr)


def maxdiff(a, b) -> float:
    if a.shape != b.shape:
        return float("inf")
    return (a.double() - b.double()).abs().max().item() if a.numel() else 0.0


def compare(got: dict, ref: dict) -> tuple[float, list[str]]:
    """Max |diff| over every call of every tap, and the taps whose call counts differ from the reference."""
    worst, bad = 0.0, []
    for name in sorted({*ref, *(n for n, calls in got.items() if calls)}):
        have, want = got.get(name, []), ref.get(name, [])
        if len(have) != len(want):
            bad.append(f"{name}: {len(have)} calls, reference {len(want)}")
        else:
            worst = max([worst, *(maxdiff(h, w) for h, w in zip(have, want, strict=True))])
    return worst, bad


@contextlib.contextmanager
def spied(obj, name: str, after):
    """While open, ``obj.name`` (a module's function or an instance's method) also calls ``after(args, result)``."""
    had, original = name in vars(obj), getattr(obj, name)

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        after(args, result)
        return result

    setattr(obj, name, spy)
    try:
        yield
    finally:
        setattr(obj, name, original) if had else delattr(obj, name)


def hooked(stack: contextlib.ExitStack, module, hook, pre: bool = False) -> None:
    h = module.register_forward_pre_hook(hook, with_kwargs=True) if pre else module.register_forward_hook(hook)
    stack.callback(h.remove)


def stacks(policy) -> dict:
    """``{"llm": ..., "expert": ...}``: the two transformers (``.layers``, ``.norm``) as LeRobot holds them."""
    if policy.name == "smolvla":
        m = policy.model.vlm_with_expert
        return {"llm": m.get_vlm_model().text_model, "expert": m.lm_expert}
    m = policy.model.paligemma_with_expert
    return {"llm": m.paligemma.model.language_model, "expert": m.gemma_expert.model}


def entry_points(policy, batch) -> dict:
    def train():
        policy.train()
        policy.forward(dict(batch))
        policy.eval()

    return {"predict_action_chunk": lambda: policy.predict_action_chunk(dict(batch)), "forward": train}


# ---- 1. taps fire, and equal LeRobot's own values -----------------------------------------------------------------


def summarize(counts: dict[str, int]) -> str:
    """``{"llm.layers.0.in": 1, ...}`` -> ``"llm.*.{in,out}x1, ..."``: layers folded, x calls per tap."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for name, n in counts.items():
        m = re.match(r"(\w+)\.layers\.\d+\.(.+)", name)
        comp, point = (f"{m[1]}.*", m[2]) if m else tuple(name.rsplit(".", 1))
        groups[comp, n] += [point] * (point not in groups[comp, n])
    return ", ".join(f"{c}.{{{','.join(p)}}}x{n}" if len(p) > 1 else f"{c}.{p[0]}x{n}" for (c, n), p in groups.items())


def record_layers(kind: str, policy, entry: str, ref: dict, stack: contextlib.ExitStack) -> None:
    """Fill ``ref[tap name]`` (a copy per call) from LeRobot's own functions while ``stack`` is open."""
    layers = {c: list(s.layers) for c, s in stacks(policy).items()}

    def keep(name: str, pick=lambda args: args[-1]):  # copies: LeRobot adds to o_proj / mlp outputs in place
        return lambda *args: ref[name].append(pick(args).clone())

    for comp, ls in layers.items():
        for i, layer in enumerate(ls):
            hooked(stack, layer.self_attn.o_proj, keep(f"{comp}.layers.{i}.attn.out"))
            hooked(stack, layer.mlp, keep(f"{comp}.layers.{i}.mlp.out"))
            if kind != "smolvla" and entry == "predict_action_chunk":  # prefix pass, denoising steps: layer modules
                first = lambda a: a[1][0] if a[1] else a[2]["hidden_states"]  # noqa: E731  (module, args, kwargs)
                hooked(stack, layer, keep(f"{comp}.layers.{i}.in", first), pre=True)
                hooked(stack, layer, keep(f"{comp}.layers.{i}.out", lambda a: a[-1][0]))
    if kind != "smolvla" and entry == "forward":  # the joint pass: compute_layer_complete(layer_idx, inputs_embeds)

        def joint(args, out):
            for comp, x, y in zip(COMPONENTS, args[1], out, strict=True):
                ref[f"{comp}.layers.{args[0]}.in"].append(x.clone())
                ref[f"{comp}.layers.{args[0]}.out"].append(y.clone())

        stack.enter_context(spied(sys.modules[type(policy).__module__], "compute_layer_complete", joint))
    elif kind == "smolvla":  # a layer's output is the next layer's inputs_embeds, the last one's the final norm's input
        pending: dict[str, str | None] = dict.fromkeys(COMPONENTS)

        def seen(comp: str, x, layer: int | None) -> None:
            if pending[comp]:
                ref[pending[comp]].append(x.clone())
            if layer is not None:
                ref[f"{comp}.layers.{layer}.in"].append(x.clone())
            pending[comp] = None if layer is None else f"{comp}.layers.{layer}.out"

        def layer_call(args, _out):  # (model_layers, inputs_embeds, layer_idx, ...)
            for k, comp in enumerate(COMPONENTS):
                layer = args[0][k][args[2]]
                if k < len(args[1]) and args[1][k] is not None and layer is not None:
                    seen(comp, args[1][k], layers[comp].index(layer))

        for method in ("forward_attn_layer", "forward_cross_attn_layer"):
            stack.enter_context(spied(policy.model.vlm_with_expert, method, layer_call))
        for comp, s in stacks(policy).items():
            stack.enter_context(spied(s.norm, "forward", lambda args, _out, c=comp: seen(c, args[0], None)))


def check_taps(kind: str, policy, batch) -> None:
    """Per entry point, one capture of every listed tap, with LeRobot's own values recorded beside it."""
    from policylens.tap import capture, list_taps

    names, fired = [t.name for t in list_taps(policy)], set()
    layer_taps = [n for n in names if LAYER_TAP.fullmatch(n)]
    for entry, run in entry_points(policy, batch).items():
        ref: dict = defaultdict(list)
        with row(kind, f"1 taps fired by {entry}") as r:
            with contextlib.ExitStack() as stack, torch.no_grad():
                record_layers(kind, policy, entry, ref, stack)
                with capture(policy, names, missing="ignore") as cap:
                    run()
            calls = {n: len(cap.calls(n)) for n in names if cap.calls(n)}
            fired |= set(calls)
            r.update(ok=bool(calls), value=f"{len(calls)}/{len(names)}", detail=summarize(calls))
        with row(kind, f"1 llm/expert in,out,attn.out,mlp.out == LeRobot's ({entry})") as r:
            worst, bad = compare({n: cap.calls(n) for n in layer_taps}, ref)
            n = sum(map(len, ref.values()))
            r.update(ok=not bad and worst == 0 and n > 0, value=f"{worst:g}", detail=f"{n} tensors " + "; ".join(bad))
    with row(kind, "1 every listed tap fires on some entry point") as r:
        silent = [n for n in names if n not in fired]
        r.update(ok=not silent, value=f"{len(fired)}/{len(names)}", detail=f"silent: {silent}" * bool(silent))


# ---- 2. attention probabilities (pi0 / pi0.5) ----------------------------------------------------------------------


def check_attention(kind: str, policy, batch) -> None:
    """Run on a freshly built policy: its first ``predict_action_chunk`` starts with sdpa configured."""
    from transformers.models.gemma import modeling_gemma

    from policylens.tap import capture

    owner = {
        id(l.self_attn): f"{c}.layers.{i}.attn.probs" for c, s in stacks(policy).items() for i, l in enumerate(s.layers)
    }
    infer, train = entry_points(policy, batch).values()
    for label, run in {
        "predict_action_chunk, 1st call": infer,
        "predict_action_chunk, 2nd": infer,
        "forward": train,
    }.items():
        impl = "/".join(s.config._attn_implementation for s in stacks(policy).values())
        with row(kind, f"2 attn.probs == eager weights ({label})") as r:
            ref: dict = defaultdict(list)
            keep = lambda args, out, ref=ref: ref[owner[id(args[0])]].append(out[1].clone())  # noqa: E731
            with (  # capture inside: its routing wraps our spy
                torch.no_grad(),
                spied(modeling_gemma, "eager_attention_forward", keep),
                capture(policy, list(owner.values()), missing="ignore") as cap,
            ):
                run()
            got = {n: cap.calls(n) for n in owner.values()}
            worst, bad = compare(got, ref)
            shapes = {n.split(".")[0]: tuple(v[0].shape) for n, v in got.items() if v}
            fired = summarize({n: len(v) for n, v in got.items() if v})
            detail = f"llm/expert {impl} at attach; {fired}; (B, H, Tq, Tk) {shapes} " + "; ".join(bad)
            r.update(ok=not bad and worst == 0 and bool(ref), value=f"{worst:g}", detail=detail)


# ---- 2. attention probabilities (SmolVLA) --------------------------------------------------------------------------

SMOLVLA_ATTENTION = {  # label -> (SmolVLAConfig options, attention run by SDPA instead of LeRobot's eager function)
    "default: cross_attn, self_attn_every_n_layers=2": ({}, False),
    "default, the model's attention run by SDPA": ({}, True),
    "attention_mode=self_attn": ({"attention_mode": "self_attn"}, False),
    # expert layers 0 and 1 at LLM layers 0 (self) and 2 (cross). LeRobot's own forward fails with every 2 (expert
    # layer 1 gets cross-attention k/v while LLM layer 2 runs self-attention) or 3 (LLM layer 3 self-attends
    # with no expert layer in the denoising steps); every 4 keeps them in step
    "num_expert_layers=2 of 4, self_attn_every_n_layers=4": (
        {"num_expert_layers": 2, "self_attn_every_n_layers": 4},
        False,
    ),
}
SMOLVLA_METHODS = (
    "forward_attn_layer",
    "forward_cross_attn_layer",
    "get_attention_interface",
    "eager_attention_forward",
)


def sdpa_attention(core):
    """An attention function with the signature of SmolVLA's eager one that computes its output with
    ``scaled_dot_product_attention``; it also calls the eager function (its output dropped), so that
    :func:`eager_weights` records the eager weights of the same call."""

    def attention(mask, batch_size, head_dim, q, k, v):  # q: (B, Tq, H, d); k, v: (B, Tk, Hkv, d); mask (B, Tq, Tk)
        core.eager_attention_forward(mask, batch_size, head_dim, q, k, v)
        groups = core.num_attention_heads // core.num_key_value_heads
        q, k, v = (x.transpose(1, 2).float() for x in (q, k, v))  # (B, H, T, d)
        k, v = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
        add = torch.where(mask[:, None], 0.0, torch.finfo(torch.float32).min)  # fully masked rows: uniform, as eager
        out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=add)
        return out.transpose(1, 2).reshape(batch_size, -1, core.num_attention_heads * head_dim)

    return attention


@contextlib.contextmanager
def eager_weights(policy, ref: dict):
    """While open, ``ref[tap]`` gets, per attention call, the rows of the probabilities that SmolVLA's own
    ``eager_attention_forward`` computes (its ``softmax`` output) which belong to that layer's queries. Which rows
    are whose comes from the order of the ``q_proj`` calls (a layer's queries are projected before the call that
    uses them), not from policylens' reading of LeRobot's layer methods."""
    core, pending = policy.model.vlm_with_expert, []
    original, softmax = core.eager_attention_forward, torch.nn.functional.softmax
    with contextlib.ExitStack() as stack:
        for comp, s in stacks(policy).items():
            for i, layer in enumerate(s.layers):
                tap = f"{comp}.layers.{i}.attn.probs"
                hooked(stack, layer.self_attn.q_proj, lambda _m, _a, out, tap=tap: pending.append((tap, out.shape[1])))

        def recording(*args, **kwargs):
            seen = []
            torch.nn.functional.softmax = lambda *a, **k: seen.append(softmax(*a, **k)) or seen[-1]
            try:
                out = original(*args, **kwargs)
            finally:
                torch.nn.functional.softmax = softmax
            (probs,) = seen  # (B, H, Tq, Tk)
            if sum(n for _, n in pending) != probs.shape[2]:
                raise AssertionError(f"query rows {pending} do not add up to the call's {probs.shape[2]}")
            start = 0
            for tap, n in pending:
                ref[tap].append(probs[:, :, start : start + n].clone())
                start += n
            pending.clear()
            return out

        core.eager_attention_forward = recording
        stack.callback(delattr, core, "eager_attention_forward")
        yield


def check_smolvla_attention(label: str, options: dict, sdpa: bool) -> None:
    """llm / expert ``attn.probs`` against the eager weights, per entry point; the capture changes no action and
    leaves the model's methods as they were."""
    from policylens.tap import capture, list_taps

    policy, pre, _ = lb.build_smolvla(**options)
    batch, core = lb.example_batch(policy, pre), policy.model.vlm_with_expert
    if sdpa:
        core.get_attention_interface = lambda: sdpa_attention(core)
    names = [t.name for t in list_taps(policy) if t.name.endswith("attn.probs") and t.name.split(".")[0] in COMPONENTS]
    cfg = policy.config
    noise = torch.randn(2, cfg.chunk_size, cfg.max_action_dim, generator=torch.Generator().manual_seed(0))
    runs = {
        "select_action": lambda: (policy.reset(), policy.select_action(dict(batch), noise=noise))[1],
        "predict_action_chunk": lambda: policy.predict_action_chunk(dict(batch), noise=noise),
        "forward": entry_points(policy, batch)["forward"],
    }
    for entry, run in runs.items():
        with row("smolvla", f"2 attn.probs == eager weights ({entry}; {label})") as r:
            ref: dict = defaultdict(list)
            methods = {m: vars(core).get(m) for m in SMOLVLA_METHODS}
            with torch.no_grad():
                plain = run()
                with eager_weights(policy, ref), capture(policy, names, missing="ignore") as cap:
                    tapped = run()
            got = {n: cap.calls(n) for n in names}
            worst, bad = compare(got, ref)
            if plain is not None and not torch.equal(plain, tapped):
                bad.append("the capture changed the actions")
            changed = [m for m, f in methods.items() if vars(core).get(m) is not f]
            bad += [f"the capture left {changed} changed on the model"] * bool(changed)
            shapes = sorted({f"{n.split('.')[0]}{tuple(v[0].shape)}" for n, v in got.items() if v})
            fired = summarize({n: len(v) for n, v in got.items() if v})
            detail = f"{fired}; (B, H, Tq, Tk) {', '.join(shapes)} " + "; ".join(bad)
            r.update(ok=not bad and worst == 0 and bool(ref), value=f"{worst:g}", detail=detail)


def check_smolvla_attention_job() -> None:
    """The attention job on SmolVLA: prefix (text -> image) and suffix (action -> image) maps of two layers."""
    from policylens.attention import extract_attention
    from policylens.models import LeRobotTeacher

    with row("smolvla", "2 extract_attention(LeRobotTeacher): prefix + suffix maps, layers 0 (self), 1 (cross)") as r:
        policy, pre, _ = lb.build_smolvla()
        teacher = LeRobotTeacher(policy, pre, "smolvla")
        maps = extract_attention(teacher, lb.example_batch(policy, pre, with_action=False), layers=[0, 1])
        shapes, bad = set(), []
        for (phase, layer), m in maps.items():
            shapes |= {tuple(t.shape) for t in m.maps.values()}
            total = sum(m.mass[k] for k in ("image", "text", "state", "pad", "suffix"))
            if (total - 1).abs().max() > 2e-3:  # float16 maps
                bad.append(f"{phase} layer {layer}: mass sums to {total.min():.4f}..{total.max():.4f}")
        steps = {len(m.steps[c]) for m in maps.values() for c in m.steps}
        detail = f"maps (B, H, rows, cols) {sorted(shapes)}; suffix steps {sorted(steps)} " + "; ".join(bad)
        r.update(ok=not bad and len(maps) == 4, value=f"{len(maps)} maps", detail=detail)


# ---- 3. layouts ----------------------------------------------------------------------------------------------------


def expected_layout(policy, lay: dict) -> dict:
    """Span masks of prefix and suffix from ``lerobot_builders.prefix_layout``: what the policy itself built."""
    pad, seg = lay["prefix_pad_mask"].bool(), lay["segments"]
    b, t = pad.shape

    def span(a: int, z: int, width: int = t):
        m = torch.zeros(b, width, dtype=torch.bool)
        m[:, a:z] = True
        return m

    prefix = {f"image[{k}]": span(*seg.get(f"image[{k}]", (0, 0))) & pad for k in policy.config.image_features}
    if any(k.startswith("special[") for k in seg):
        prefix["image_special"] = torch.stack([span(*ab) for k, ab in seg.items() if k.startswith("special[")]).any(0)
    prefix["state"] = span(*seg.get("state", (0, 0)))
    for i, ab in enumerate(lay.get("state_in_text") or []):  # pi0.5: the state numbers inside the prompt
        prefix["state"][i, slice(*ab)] = True
    prefix["text"] = span(*seg["text"]) & pad & ~prefix["state"]
    prefix["valid"] = pad
    n = lay["suffix_len"]
    suffix = {"state": span(*lay["suffix"].get("state", (0, 0)), n), "action": span(*lay["suffix"]["actions"], n)}
    return {"prefix": prefix, "suffix": suffix}


def layout_diff(want: dict, got) -> list[str]:
    """The spans of ``got`` (a policylens Layout) that differ from ``want``, shown as position runs of sample 0."""

    def runs(mask) -> str:  # [0, 1, 1, 0, 1] -> "1:3,4:5"
        edges = torch.diff(torch.cat([mask.new_zeros(1), mask, mask.new_zeros(1)]).int()).nonzero().flatten().tolist()
        return (
            ",".join(f"{a}:{b}" for a, b in zip(edges[::2], edges[1::2], strict=True)) or "-"
        ) + f" (T={mask.numel()})"

    bad = []
    for seq, spans in want.items():
        for name, mask in spans.items():
            have = got[seq].masks.get(name)
            if have is None or have.shape != mask.shape or not torch.equal(have, mask):
                bad.append(f"{seq} {name}: expected {runs(mask[0])}, got {'absent' if have is None else runs(have[0])}")
    return bad


def check_layouts(kind: str) -> None:
    from policylens.models import LeRobotTeacher, lerobot_layout

    for label, options, present in LAYOUT_CASES[kind]:
        for given in (False, True)[: 2 if kind == "pi05" else 1]:  # pi0.5: also with the tokenizer handed over
            with row(kind, f"3 layout: {label}" + ", tokenizer= given" * given) as r:
                policy, pre, _ = BUILD[kind](**options)
                batch = lb.example_batch(policy, pre, cameras_present=present, with_action=False)
                want = expected_layout(policy, lb.prefix_layout(policy, batch, pre))
                if given:
                    got = lerobot_layout(kind, policy, batch, tokenizer=lb._tokenizer_step(pre).input_tokenizer)
                else:
                    got = LeRobotTeacher(policy, pre, kind).token_layout(batch)
                bad, t = layout_diff(want, got), want["prefix"]["valid"].shape[1]
                r.update(ok=not bad, value=f"{len(bad)} differ", detail="; ".join(bad) or f"prefix T={t}")


# ---- 4. cache build, end to end ------------------------------------------------------------------------------------


def direct_features(teacher, dataset: Path, cache_kind: str, cameras: dict, batch_size: int = 8, noise_seed: int = 0):
    """The cache's features computed here: frames -> ``teacher.make_batch`` -> capture, averaged over the image
    (bridge: and action) positions of the layout the policy itself built. The bridge's flow starts from frame
    ``i``'s own noise: a standard normal ``(chunk_size, max_action_dim)`` from a generator seeded
    ``noise_seed + i`` (the bridge recipe's per-sample noise), handed to ``predict_action_chunk``."""
    import numpy as np

    from policylens.data.lerobot import open_dataset
    from policylens.tap import capture

    data = open_dataset(str(dataset))
    frames = [(ep, t) for ep in (data[i] for i in range(len(data))) for t in range(len(ep))]
    n = len(stacks(teacher.policy)["llm"].layers)
    bridge = [f"llm.layers.{n // 2}.out", f"expert.layers.{n - 1}.out"]  # BridgeSpec.for_layers(n)
    taps = bridge if cache_kind == "bridge" else [f"llm.layers.{n - 2}.out"]
    out = []
    for s in range(0, len(frames), batch_size):
        chunk = frames[s : s + batch_size]
        images = {  # policy key -> (B, H, W, 3) uint8
            key: torch.stack([torch.as_tensor(np.asarray(ep.frame(cam, t))) for ep, t in chunk])
            for key, cam in cameras.items()
        }
        state = torch.stack([torch.as_tensor(np.asarray(ep.proprio[t], dtype=np.float32)) for ep, t in chunk])
        batch = teacher.make_batch(images, [ep.instruction for ep, _ in chunk], state)
        masks = expected_layout(teacher.policy, lb.prefix_layout(teacher.policy, batch))
        image = torch.stack([m for k, m in masks["prefix"].items() if k.startswith("image[")]).any(0)
        config = teacher.policy.config
        shape = (config.chunk_size, config.max_action_dim)
        seeds = range(noise_seed + s, noise_seed + s + len(chunk))
        noise = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(i)) for i in seeds])
        with torch.random.fork_rng(devices=[]), torch.no_grad(), capture(teacher.policy, taps) as cap:
            torch.manual_seed(0)  # LeRobotTeacher.sample_actions' noise for a generator seeded 0
            teacher.policy.predict_action_chunk(batch, **({"noise": noise} if cache_kind == "bridge" else {}))
        pairs = [(cap.calls(taps[0])[0], image)]
        if cache_kind == "bridge":  # the expert's first call is the first denoising step
            pairs.append((cap.calls(taps[1])[0], masks["suffix"]["action"]))
        out.append(torch.cat([(h.float() * m[..., None]).sum(1) / m.sum(1, keepdim=True) for h, m in pairs], -1))
    return torch.cat(out)


def check_cache(kind: str, dataset: Path, out: Path) -> None:
    from safetensors.torch import load_file

    from policylens.anchors import build_cache
    from policylens.models import load_model
    from policylens.store import open_store

    cameras = {policy: dataset for dataset, policy in CAMERA_MAP.items()}  # policy key -> dataset camera
    with row(kind, "4 load_model(checkpoint) has the saved weights") as r:
        names = [k.rsplit(".", 1)[-1] for k in cameras]
        policy, pre, post = BUILD[kind](cameras=names, image_shape=(3, 64, 64), state_dim=7)
        checkpoint = lb.save_checkpoint(policy, pre, post, out / f"{kind}-checkpoint")
        with lb.at_tiny_sizes(kind, checkpoint):
            teacher = load_model(str(checkpoint))
        saved, state = load_file(checkpoint / "model.safetensors"), teacher.policy.state_dict()
        wrong = [k for k, v in saved.items() if k not in state or not torch.equal(state[k], v)]
        what = f"{type(teacher).__name__}({type(teacher.policy).__name__})"
        r.update(ok=not wrong, value=f"{len(wrong)} differ", detail=what)
    for cache_kind in ("hidden_feature", "bridge"):
        with row(kind, f"4 build_cache({cache_kind}) == direct capture") as r:
            store = out / f"{kind}-{cache_kind}"
            with lb.at_tiny_sizes(kind, checkpoint):
                source = f"lerobot:{dataset}"
                build_cache(
                    str(checkpoint), source, str(store), cache_kind, [-2], progress=False, camera_map=CAMERA_MAP
                )
            ds = open_store(store)
            stored = ds[list(range(len(ds)))]["target_features"]
            diff = maxdiff(stored, direct_features(teacher, dataset, cache_kind, cameras).to(stored.dtype))
            detail = f"{len(ds)} frames -> {tuple(stored.shape)} {stored.dtype}; camera_map {CAMERA_MAP}"
            r.update(ok=diff == 0, value=f"{diff:g}", detail=detail)


# ---- 6. the attention job's token -> pixel map undoes the policy's own image resize ---------------------------------


def check_image_transform(kind: str, policy, pre) -> None:
    """A white square on a wide grey frame through the policy's own image preprocessing; the teacher's
    ``image_transform`` must find the bars it drew and map the model input back onto the square."""
    from policylens.models import LeRobotTeacher

    with row(kind, "6 image_transform == the policy's resize-with-pad") as r:
        teacher, (h, w) = LeRobotTeacher(policy, pre, kind), (48, 120)
        frame = torch.full((1, 3, h, w), 0.5)
        frame[..., 18:30, 20:40] = 1.0
        own = policy._preprocess_images if hasattr(policy, "_preprocess_images") else policy.prepare_images
        x = own({teacher.config.cameras[0]: frame})[0][0][0, 0].float().cpu()  # (h', w') in [-1, 1], bars < -1
        t = teacher.image_transform((h, w))
        bars = (x < -0.5).float()
        bars_ok = abs(t.padding_mass(bars) - 1.0) < 1e-6 and t.padding_mass(1 - bars) == 0.0
        back, square = t.grid_to_frame((x > 0.5).float(), mode="bilinear") > 0.5, frame[0, 0] > 0.75
        iou = float((back & square).sum() / (back | square).sum())
        r.update(ok=bars_ok and iou > 0.7, value=f"IoU {iou:.2f}", detail=f"pad {t.pad}, input {tuple(x.shape)}")


# ---- 5. installing policylens kept lerobot's pins ------------------------------------------------------------------


def check_pins(before: str | None) -> None:
    """Versions against the ``pip list`` recorded before policylens went in, and ``pip check`` (which holds every
    installed package, lerobot included, to its requirements: lerobot's torch<2.11, transformers<5 ...)."""
    with row("env", "5 pip install policylens keeps lerobot's pins") as r:
        have = {p: metadata.version(p) for p in ("torch", "transformers", "tokenizers")}
        bad = []
        if before:
            old = {w[0].lower(): w[1] for w in map(str.split, Path(before).read_text().splitlines()[2:]) if len(w) > 1}
            bad = [f"{p} {old.get(p)} -> {v}" for p, v in have.items() if old.get(p) != v]
        check = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
        bad += [f"pip check: {check.stdout.strip()}"] * bool(check.returncode)
        shown = ", ".join(f"{p} {v}" for p, v in have.items())
        detail = f"{shown}; lerobot {metadata.version('lerobot')}, policylens {metadata.version('policylens')}"
        detail += "; pip check: ok" if not check.returncode else ""
        r.update(ok=not bad, value="unchanged" * bool(before and not bad), detail="; ".join([detail, *bad]))


def run_policy(kind: str, dataset: Path, out: Path, bac_only: bool = False) -> None:
    if bac_only:
        check_bac(kind, out)
        return
    policy, pre, _ = BUILD[kind]()
    batch = lb.example_batch(policy, pre)
    if kind != "smolvla":
        check_attention(kind, policy, batch)  # first, while the policy has never run
    else:
        for label, (options, sdpa) in SMOLVLA_ATTENTION.items():
            check_smolvla_attention(label, options, sdpa)
        check_smolvla_attention_job()
    check_taps(kind, policy, batch)
    check_image_transform(kind, policy, pre)
    check_layouts(kind)
    check_cache(kind, dataset, out)
    check_bac(kind, out)


BAC_CALLS = 20


def check_bac(kind: str, out: Path) -> None:
    """Check 7: BAC on the policy's action expert, 10 flow steps, executed part n_action_steps=5. The speed-up
    is reported, not checked (timings on a shared machine move both ways)."""
    from dataclasses import replace

    from policylens.accel import BACConfig, cache_context, cache_info, compare_modes, discover_branches
    from policylens.accel import register_policy as register
    from policylens.accel._lerobot import TEACHER, teacher_profile
    from policylens.models import LeRobotTeacher

    steps = "num_steps" if kind == "smolvla" else "num_inference_steps"
    policy, pre, _ = BUILD[kind](num_steps=10, n_action_steps=5)
    teacher = LeRobotTeacher(policy.eval(), pre, kind)
    batch = lb.example_batch(policy, pre, batch_size=1, with_action=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with row(kind, "7 BAC finds the expert's branches (SmolVLA: o_proj / mlp)") as r:
            branches = discover_branches(teacher, teacher_profile(teacher).root)
            outputs = sorted({type(b.output).__name__ for b in branches})
            r.update(ok=len(branches) > 0 and getattr(policy.config, steps) == 10, value=str(len(branches)))
            r["detail"] = f"{branches[0].name} ... outputs {outputs}"
        with row(kind, "7 BAC every flow step updated == uncached, bit for bit") as r:
            plain = teacher.sample_actions(batch, generator=torch.Generator().manual_seed(0))
            with cache_context(teacher, BACConfig(mode="uniform", every=1)):
                every = teacher.sample_actions(batch, generator=torch.Generator().manual_seed(0))
                fired = cache_info(teacher)["num_steps"] == 10
            diff = maxdiff(plain, every)
            r.update(ok=fired and torch.equal(plain, every), value=f"{diff:.1e}")
        with row(kind, "7 BAC uniform schedules: expert speed-up, action error vs uncached") as r:
            configs = {
                "original": None,
                **{f"uniform S={s}": BACConfig(mode="uniform", num_updates=s) for s in (5, 3, 1)},
            }
            rows = compare_modes(teacher, configs, batch, calls=BAC_CALLS, seed=0)
            if kind == "smolvla":  # the same S=1 with the attention function run on skipped steps
                register(TEACHER, lambda t: replace(teacher_profile(t), attention_interface=None))
                try:
                    extra = compare_modes(teacher, {"original": None, "S=1, attention run": configs["uniform S=1"]},
                                          batch, calls=BAC_CALLS, seed=0)  # fmt: skip
                finally:
                    register(TEACHER, teacher_profile)
                rows.append(extra[1])
            out.mkdir(parents=True, exist_ok=True)
            (out / f"bac-{kind}.json").write_text(json.dumps(rows, indent=1))
            print_bac(kind, rows)
            s5 = rows[1]
            r.update(ok=s5["skipped"] == 0.5 and 0 < s5["mse"] < float("inf"), value=f"{s5['expert_speedup']:.2f}x")
            r["detail"] = f"S=5: expert {s5['expert_speedup']:.2f}x, e2e {s5['speedup']:.2f}x, "
            r["detail"] += f"MSE executed {s5['mse_executed']:.2e}"
    finally:
        torch.set_num_threads(threads)


def print_bac(kind: str, rows: list[dict]) -> None:
    print(f"\nBAC on {kind} (10 flow steps, B=1, 1 torch thread, medians of {BAC_CALLS} calls):")
    print("| mode | ms per chunk = prefix + 10 x expert step | x e2e | x expert | skipped ", end="")
    print("| MSE chunk | MSE executed | max abs |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ms = f"{r['median_ms']:.1f} = {r['prefix_ms']:.1f} + 10 x {r['expert_step_ms']:.2f}"
        print(
            f"| {r['mode']} | {ms} | {r['speedup']:.2f} | {r['expert_speedup']:.2f} | {r['skipped']:.0%} | "
            f"{r['mse']:.2e} | {r['mse_executed']:.2e} | {r['max_abs']:.2e} |"
        )


def print_table(rows: list[dict]) -> None:
    width = max(len(r["check"]) for r in rows)
    print(f"{'policy':8} {'check':{width}} result {'max|diff|':>10} {'s':>5}  detail")
    for r in rows:
        ok, value = "PASS" if r["ok"] else "FAIL", r["value"]
        print(f"{r['policy']:8} {r['check']:{width}} {ok:6} {value:>10} {r['seconds']:5.1f}  {r['detail']}")
    print(f"{sum(r['ok'] for r in rows)} passed, {sum(not r['ok'] for r in rows)} failed")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    lb.add_policy_arguments(ap)
    ap.add_argument("--out", help="work directory: dataset, checkpoints, caches (default: a temp dir)")
    ap.add_argument("--pins-before", help="`pip list` of this venv recorded before installing policylens")
    ap.add_argument("--bac-only", action="store_true", help="run check 7 (BAC caching) only")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    t0 = time.perf_counter()
    out = Path(args.out or tempfile.mkdtemp(prefix="policylens-lerobot-interop-")).resolve()
    dataset, tpath, rows = out / "reach-lerobot", lb.pi_transformers_path(args.pi_transformers), out / "rows-pi.json"
    kinds, half = args.only.split(","), max(1, (os.cpu_count() or 2) // 2)
    if args.rows:  # the pi child, running beside SmolVLA in the parent: half the cores each
        torch.set_num_threads(half)
        for kind in kinds:
            run_policy(kind, dataset, out, args.bac_only)
        Path(args.rows).write_text(json.dumps(ROWS))
        return 0
    from policylens.sim.pybullet import generate_episodes

    if not args.bac_only:
        generate_episodes("reach", 2, dataset, fmt="lerobot", image_size=64, progress=False, if_exists="overwrite")
        check_pins(args.pins_before)
    pi, child = [k for k in kinds if k != "smolvla"], None
    here = [k for k in kinds if k == "smolvla" or (not tpath and lb.pi_transformers_available())]
    if pi and tpath:  # one transformers per process: pi0 / pi0.5 in a child with the patched one first
        rows.unlink(missing_ok=True)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [tpath, os.environ.get("PYTHONPATH")]))}
        cmd = [sys.executable, __file__, "--only", ",".join(pi), "--out", str(out), "--rows", str(rows)]
        cmd += ["--bac-only"] * args.bac_only
        child = subprocess.Popen(cmd, env=env)
        torch.set_num_threads(half)
    for kind in here:
        run_policy(kind, dataset, out, args.bac_only)
    if child is not None:
        rc = child.wait()
        ROWS.extend(json.loads(rows.read_text()) if rows.exists() else [])
        with row(",".join(pi), "child process (pi0 / pi0.5)") as r:
            r.update(ok=rc == 0 and rows.exists(), value=f"rc={rc}")
    print_table(ROWS)
    skipped = [k for k in pi if k not in here and not tpath]
    print(f"work directory {out}; {time.perf_counter() - t0:.0f}s")
    print(f"not run: {skipped} (they need LeRobot's patched transformers: --pi-transformers DIR)" * bool(skipped))
    return int(not all(r["ok"] for r in ROWS))


if __name__ == "__main__":
    sys.exit(main())
