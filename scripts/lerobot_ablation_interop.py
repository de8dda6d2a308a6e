"""Check ``policylens attention ablate`` on LeRobot 0.4.4's real SmolVLA, pi0 and pi0.5 (tiny, random, built
offline by ``lerobot_builders.py``), open loop over a policylens-made LeRobot dataset, outside CI (lerobot pins
torch and transformers, so it is never a policylens dependency)::

    /tmp/lerobot_venv/bin/pip install --no-deps -e .          # once, if policylens is not importable there
    /tmp/lerobot_venv/bin/python scripts/lerobot_ablation_interop.py [--pi-transformers DIR] [--out DIR] [--threads 2]

The command runs in this process (``policylens attention ablate --episodes lerobot:DATASET --policy CKPT
--camera-map ...``) while the batch handed to ``LeRobotTeacher.sample_actions`` and what the policy's own image
preparation returns (SmolVLA ``prepare_images``, pi0 / pi0.5 ``_preprocess_images``) are recorded for every
forward. The forwards of one keyframe batch come in a known order (the reference, the noise floor, then each
condition as ``ablation/episodes/*.json`` lists them), so each condition's inputs are compared with the
reference's. Checks (a PASS / FAIL table; exit 1 on any FAIL):

1. the command ends with ``ablation.json``; every camera's and the instruction's conditions ran, and
   ``cameras:removed`` is reported unavailable (LeRobot refuses a batch with no camera);
2. the noise floor's inputs equal the reference's (only the flow noise differs);
3. each condition changes only what it names: a camera condition that camera's image only, ``cameras:*`` the
   two images only (``swap``: each camera shows the other's reference image), ``instruction:*`` the language
   tokens only; the state is never touched;
4. ``CAMERA:removed`` goes through the policy's own missing-camera path: the camera's key is absent from the
   batch and the policy's image preparation (LeRobot's code) returns the other cameras' reference images, bit
   for bit: SmolVLA one image fewer; pi0 / pi0.5 the present cameras first, then the missing one as an image of
   -1 with its mask False;
5. the attention masses (layers 0, 1) were read for every condition and the removed camera's tokens get none.

pi0 / pi0.5 need LeRobot's patched transformers (``--pi-transformers DIR``, made by
``scripts/make_pi_transformers.sh``): they run in a child process with it first on ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lerobot_builders as lb
import torch

CAMERA_MAP = {"varied_camera_1": "observation.images.front", "hand_camera": "observation.images.wrist"}
ROWS: list[dict] = []


KIND = ["smolvla"]  # the policy the rows below are about
# kind -> (module, policy class, the method that turns the batch's camera keys into the model's images)
IMAGE_PREP = {
    "smolvla": ("lerobot.policies.smolvla.modeling_smolvla", "SmolVLAPolicy", "prepare_images"),
    "pi0": ("lerobot.policies.pi0.modeling_pi0", "PI0Policy", "_preprocess_images"),
    "pi05": ("lerobot.policies.pi05.modeling_pi05", "PI05Policy", "_preprocess_images"),
}
BUILD = {"smolvla": lb.build_smolvla, "pi0": lb.build_pi0, "pi05": lb.build_pi05}


@contextlib.contextmanager
def row(check: str):
    """One table row; the body fills ``ok`` / ``value`` / ``detail``. An exception is a FAIL with its message."""
    r = {"policy": KIND[0], "check": check, "ok": False, "value": "", "detail": ""}
    try:
        yield r
    except Exception as exc:  # any crash is a FAIL of this check; the others still run
        r.update(ok=False, detail=f"{type(exc).__name__}: {exc}"[:400])
    ROWS.append(r)
    print(f"[{KIND[0]}] {check}: {'PASS' if r['ok'] else 'FAIL'} {r['value']} {r['detail']}", file=sys.stderr)


@contextlib.contextmanager
def recording(calls: list[dict], kind: str):
    """Record, per ``LeRobotTeacher.sample_actions`` call, its batch and what the policy's image preparation
    returned."""
    import importlib

    from policylens.models import LeRobotTeacher

    module, cls_name, method = IMAGE_PREP[kind]
    cls = getattr(importlib.import_module(module), cls_name)
    sample, prepare, make = LeRobotTeacher.sample_actions, getattr(cls, method), LeRobotTeacher.make_batch
    texts: list = [None]

    def make_spy(self, images, instructions, *args, **kwargs):
        texts[0] = tuple(instructions)  # the words handed to the pre-processor
        return make(self, images, instructions, *args, **kwargs)

    def sample_spy(self, batch, *args, **kwargs):
        calls.append({"batch": {"task": texts[0], **{k: v.clone() for k, v in batch.items()}}, "images": None})
        return sample(self, batch, *args, **kwargs)

    def prepare_spy(self, batch):
        images, masks = prepare(self, batch)
        calls[-1]["images"] = ([i.clone() for i in images], [m.clone() for m in masks])
        return images, masks

    LeRobotTeacher.sample_actions, LeRobotTeacher.make_batch = sample_spy, make_spy
    setattr(cls, method, prepare_spy)
    try:
        yield
    finally:
        LeRobotTeacher.sample_actions, LeRobotTeacher.make_batch = sample, make
        setattr(cls, method, prepare)


def same(a, b) -> bool:
    return torch.equal(a, b) if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) else a == b


def differing(a: dict, b: dict) -> set[str]:
    """Keys whose values differ (or that only one batch has); ``task``: the words before tokenizing."""
    return {k for k in a.keys() | b.keys() if k not in a or k not in b or not same(a[k], b[k])}


def expected(name: str, cams: list[str]) -> tuple[set[str], set[str]]:
    """(keys the condition may change, keys it must change) of the batch handed to the policy."""
    target = name.rsplit(":", 1)[0]
    if target == "instruction":  # the tokens change unless the tokenizer maps both word lists to the same ids
        return {"task", "observation.language.tokens", "observation.language.attention_mask"}, {"task"}
    keys = set(cams) if target == "cameras" else {target}
    return keys, keys


def removed_images(prepared: tuple, reference: tuple, cams: list[str], cam: str) -> list[str]:
    """What is wrong with the images the policy prepared with ``cam`` left out of the batch, against the
    reference's: SmolVLA drops the camera; pi0 / pi0.5 keep the present cameras in order and then fill the
    missing one with an image of -1 and a False mask."""
    (images, masks), (ref_images, _) = prepared, reference
    others = [ref_images[cams.index(c)] for c in cams if c != cam]
    kept = images[: len(others)]
    problems = []
    if not all(torch.equal(a, b) for a, b in zip(kept, others, strict=False)) or len(kept) != len(others):
        problems.append(f"the first {len(others)} prepared images are not the other cameras' reference ones")
    if KIND[0] == "smolvla":
        if len(images) != len(cams) - 1:
            problems.append(f"prepare_images gave {len(images)} images, not {len(cams) - 1}")
    elif len(images) != len(cams) or not (images[-1] == -1).all() or masks[-1].any():
        problems.append(f"{len(images)} images; the last is not the -1 image with a False mask of a missing camera")
    return problems


def check_conditions(out: Path, calls: list[dict], cams: list[str], batch_size: int) -> None:
    records = [json.loads(p.read_text()) for p in sorted((out / "ablation" / "episodes").glob("*.json"))]
    plan = []  # (condition or "reference" / "noise floor", index of its reference call)
    for rec in records:
        conds = list(rec["change"])
        for _ in range(0, len(rec["keyframes"]), batch_size):
            ref = len(plan)
            plan += [("reference", ref), ("noise floor", ref)] + [(c, ref) for c in conds]
    with row("2 recorded forwards follow the plan; noise floor inputs == reference inputs") as r:
        floors = [
            differing(calls[i]["batch"], calls[ref]["batch"]) for i, (n, ref) in enumerate(plan) if n == "noise floor"
        ]
        bad = [d for d in floors if d]
        r.update(ok=len(calls) == len(plan) and floors and not bad, value=f"{len(calls)} forwards",
                 detail=f"planned {len(plan)}; {len(records)} episodes; differing: {bad[:2]}")  # fmt: skip
    seen: dict[str, list[str]] = {}
    tokens_same: set[str] = set()
    for i, (name, ref) in enumerate(plan):
        if name in ("reference", "noise floor") or i >= len(calls):
            continue
        got, base = calls[i]["batch"], calls[ref]["batch"]
        may, must = expected(name, cams)
        changed, problems = differing(got, base), []
        if changed - may:
            problems.append(f"changed {sorted(changed - may)}")
        if must - changed:
            problems.append(f"left {sorted(must - changed)} as it was")
        if name == "cameras:swap" and not all(
            torch.equal(got[a], base[b]) for a, b in zip(cams, cams[::-1], strict=True)
        ):
            problems.append("the cameras do not show each other's reference image")
        if name.endswith(":removed"):
            cam = name.rsplit(":", 1)[0]
            if cam in got:
                problems.append(f"{cam} still in the batch")
            problems += removed_images(calls[i]["images"], calls[ref]["images"], cams, cam)
        if name.startswith("instruction:") and "observation.language.tokens" not in changed:
            tokens_same.add(name)
        seen.setdefault(name, []).extend(problems)
    for name, problems in seen.items():
        what = "4 removed through the policy's missing-camera path" if name.endswith(":removed") else "3 changes"
        note = ["the tokens equal at some keyframe (words outside the tiny vocabulary are <unk>)"] * (
            name in tokens_same
        )
        with row(f"{what}: {name}") as r:
            detail = "; ".join(sorted(set(problems)) + note)[:300]
            r.update(ok=not problems, value=f"{len(problems)} problems", detail=detail)


def run_policy(kind: str, out: Path, dataset: Path, threads: int) -> None:
    """``attention ablate`` on a saved ``kind`` checkpoint over ``dataset``, recorded and checked (rows 1-5)."""
    from typer.testing import CliRunner

    from policylens.cli.main import app

    KIND[0] = kind
    names = [k.rsplit(".", 1)[-1] for k in CAMERA_MAP.values()]
    with lb._quiet():
        policy, pre, post = BUILD[kind](cameras=names, image_shape=(3, 64, 64), state_dim=7)
        checkpoint = lb.save_checkpoint(policy, pre, post, out / f"{kind}-checkpoint")
    cams = lb.camera_keys(policy)
    cmap = ",".join(f"{d}={p}" for d, p in CAMERA_MAP.items())
    run = out / f"ablation-{kind}"
    command = ["attention", "ablate", "--episodes", f"lerobot:{dataset}", "--policy", str(checkpoint), "--out",
               str(run), "--camera-map", cmap, "--layers", "0,1", "--every", "8", "--n-boot", "200",
               "--threads", str(threads), "--overwrite"]  # fmt: skip
    print("policylens " + " ".join(command), file=sys.stderr)
    calls: list[dict] = []
    with row(f"1 attention ablate (open loop) on {type(policy).__name__} writes ablation.json") as r:
        with recording(calls, kind), lb.at_tiny_sizes(kind, checkpoint):
            res = CliRunner().invoke(app, command)
        result = json.loads((run / "ablation.json").read_text()) if res.exit_code == 0 else {}
        notes = {c["condition"]: c for c in result.get("conditions", [])}
        ran = sorted(c for c, n in notes.items() if n["available"])
        want_off = notes.get("cameras:removed", {}).get("available") is False
        r.update(ok=res.exit_code == 0 and want_off and len(ran) >= 14, value=f"{len(ran)} conditions ran",
                 detail=f"exit {res.exit_code}; cameras:removed: {notes.get('cameras:removed', {}).get('note')}; "
                        f"{res.output[-300:] if res.exit_code else ''}")  # fmt: skip
    if calls:
        check_conditions(run, calls, cams, batch_size=8)
    with row("5 attention mass read for every condition (layers 0, 1); a removed camera has no tokens") as r:
        rec = json.loads(next((run / "ablation" / "episodes").glob("*.json")).read_text())
        layers = {c: sorted(m) for c, m in rec["mass"].items()}
        removed = f"{cams[0]}:removed"
        empty = rec["mass"][removed]["L1"].get(f"image[{cams[0]}]")  # None: no span of its own in the layout
        bad = [c for c, ls in layers.items() if ls != ["L0", "L1"]]
        own = "no span of its own" if empty is None else f"mass on its own image tokens {empty[:3]}"
        r.update(ok=not bad and all(v == 0 for v in empty or []), value=f"{len(layers)} conditions",
                 detail=f"{removed}: {own}; wrong layers {bad}")  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="work directory: dataset, checkpoints, ablations (default: a temp dir)")
    ap.add_argument("--threads", type=int, default=2)
    lb.add_policy_arguments(ap)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from policylens.sim.pybullet import generate_episodes

    t0 = time.perf_counter()
    out = Path(args.out or tempfile.mkdtemp(prefix="policylens-lerobot-ablation-")).resolve()
    dataset, kinds = out / "reach-lerobot", args.only.split(",")
    tpath = lb.pi_transformers_path(args.pi_transformers)
    if args.rows:  # the pi child: the patched transformers is first on its path
        for kind in kinds:
            run_policy(kind, out, dataset, args.threads)
        Path(args.rows).write_text(json.dumps(ROWS))
        return 0
    generate_episodes("reach", 2, dataset, fmt="lerobot", image_size=64, progress=False, if_exists="overwrite")
    if "smolvla" in kinds:
        run_policy("smolvla", out, dataset, args.threads)
    pi = [k for k in kinds if k != "smolvla"]
    if pi and tpath:  # one transformers per process: pi0 / pi0.5 in a child with the patched one first
        rc, rows = lb.run_pi_child(__file__, pi, out, tpath, "--threads", str(args.threads))
        ROWS.extend(rows)
        KIND[0] = ",".join(pi)
        with row("child process (pi0 / pi0.5)") as r:
            r.update(ok=rc == 0 and bool(rows), value=f"rc={rc}")
    width = max(len(r["check"]) for r in ROWS)
    for r in ROWS:
        print(f"{r['policy']:8s} {r['check']:{width}s}  {'PASS' if r['ok'] else 'FAIL'}  {r['value']}  {r['detail']}")
    skipped = " (pi0 / pi0.5 not checked: they need LeRobot's patched transformers, --pi-transformers DIR)"
    print(f"work directory {out}; {time.perf_counter() - t0:.0f}s" + skipped * bool(pi and not tpath))
    return int(not all(r["ok"] for r in ROWS))


if __name__ == "__main__":
    sys.exit(main())
