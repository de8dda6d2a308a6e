"""``policy_train`` (``retain train --policy DIR``) on LeRobot 0.4.4's real SmolVLA, pi0 and pi0.5, outside CI::

    /tmp/lerobot_venv/bin/pip install --no-deps -e .
    /tmp/lerobot_venv/bin/python scripts/lerobot_retain_interop.py [--pi-transformers DIR] [--out DIR]

For each policy: builds a tiny random one offline (``lerobot_builders.py``) and saves it as a LeRobot checkpoint,
records a LeRobot dataset of the simulated reach task with policylens, builds the teacher's bridge cache from the
checkpoint, loads it again with ``load_model`` (LeRobot's ``from_pretrained`` + saved pre-processor) and runs a
few CRaFT steps through LeRobot's own training ``forward``. Checks (PASS / FAIL; exit 1 on any FAIL):
``training_loss`` is the policy's ``forward`` loss on the same batch (SmolVLA: the same noise and time; pi0 /
pi0.5, which draw their own: the same torch seed); L_ret = 0 at step 0; every loss finite; L_act on a fixed batch
falls; the saved ``OUT/policy`` reloads with the trained weights. pi0 / pi0.5 need LeRobot's patched transformers
(``--pi-transformers DIR``; they run in a child process with it first on ``PYTHONPATH``); without it they are
reported as skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lerobot_builders as lb
import numpy as np
import torch

CAMERA_MAP = {"varied_camera_1": "observation.images.front", "hand_camera": "observation.images.wrist"}
ROWS: list[tuple[str, str, bool, str]] = []  # policy, check, ok, detail


def check(kind: str, name: str, ok: bool, detail: str) -> None:
    ROWS.append((kind, name, bool(ok), detail))


def fixed_batch(model, eps, n=4, seed=1):
    ep, chunk = eps[0], model.config.chunk_size
    idx = [np.minimum(np.arange(t, t + chunk), len(ep["action"]) - 1) for t in range(n)]
    images = {c: torch.as_tensor(np.stack([ep["images"][c][t] for t in range(n)])) for c in model.config.cameras}
    actions = torch.as_tensor(np.stack([ep["action"][i] for i in idx])).float()
    batch = model.make_batch(images, [ep["instruction"]] * n, torch.as_tensor(ep["state"][:n]), actions=actions)
    batch.update(model.training_noise(n, torch.Generator().manual_seed(seed), np.random.default_rng(seed)))
    return batch


def policy_loss(model, batch, seed: int = 3) -> float:
    """``model.training_loss(batch)`` from a fixed torch seed (pi0 / pi0.5 draw their noise and time from it)."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        return float(model.training_loss(batch))


def own_forward_loss(model, batch, seed: int = 3) -> float:
    """The policy's own ``forward`` on the same inputs: SmolVLA given the batch's noise and time, pi0 / pi0.5
    from the same torch seed as :func:`policy_loss`."""
    inputs = {k: v for k, v in batch.items() if k not in ("noise", "time")}
    kwargs = (
        {"noise": batch["noise"], "time": batch["time"]} if "smolvla" in type(model.policy).__name__.lower() else {}
    )
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        out = model.policy.forward(inputs, **kwargs)
    loss = out[0] if isinstance(out, tuple) else out
    return float(loss.mean())


def run_policy(kind: str, work: Path) -> None:
    from policylens.anchors import build_cache
    from policylens.data import dataset_training_episodes
    from policylens.models import LeRobotTeacher, load_model
    from policylens.retain import PolicyTrainConfig, RetentionConfig, policy_train
    from policylens.sim.pybullet import generate_episodes

    build = {"smolvla": lb.build_smolvla, "pi0": lb.build_pi0, "pi05": lb.build_pi05}[kind]
    policy, pre, post = build(cameras=("front", "wrist"), image_shape=(3, 32, 32), state_dim=7, action_dim=7,
                              chunk_size=4, assets_dir=work)  # fmt: skip
    ckpt = lb.save_checkpoint(policy, pre, post, work / kind)
    generate_episodes("reach", 2, work / "data", seed=0, fmt="lerobot", image_size=32, progress=False)
    dataset = f"lerobot:{work / 'data'}"
    with lb.at_tiny_sizes(kind, ckpt):
        build_cache(str(ckpt), dataset, str(work / "bridge"), kind="bridge", dtype="float32", batch_size=4,
                    camera_map=CAMERA_MAP, progress=False)  # fmt: skip
        torch.manual_seed(0)
        model = load_model(ckpt)
    name = type(model.policy).__name__
    check(
        kind,
        "load_model(DIR) is a LeRobotTeacher",
        isinstance(model, LeRobotTeacher),
        f"{type(model).__name__}({name})",
    )
    eps = dataset_training_episodes(model, dataset, CAMERA_MAP)
    batch = fixed_batch(model, eps)
    ours, theirs = policy_loss(model, batch), own_forward_loss(model, batch)
    check(
        kind,
        f"training_loss == {name}.forward",
        abs(ours - theirs) <= 1e-6 * abs(theirs),
        f"{ours:.6f} vs {theirs:.6f}",
    )
    config = PolicyTrainConfig(steps=8, batch_size=4, anchor_batch_size=4, lr=1e-3, warmup=1, log_every=1)
    with lb.at_tiny_sizes(kind, ckpt):  # the run reloads nothing, but saves OUT/policy for the reload below
        summary = policy_train(model, eps, work / "run", config, RetentionConfig(), anchors=work / "bridge",
                               progress=False)  # fmt: skip
    series = json.loads((work / "run" / "train_state.json").read_text())["extra"]["series"]
    act, ret = np.asarray(series["loss_act"]), np.asarray(series["loss_ret"])
    check(kind, "L_ret = 0 at step 0", ret[0] < 1e-8, f"L_ret[0] = {ret[0]:.2e}; L_ret = {np.round(ret, 6).tolist()}")
    finite = np.isfinite(act).all() and np.isfinite(ret).all()
    check(kind, "losses finite", finite, f"L_act = {np.round(act, 4).tolist()}")
    after = policy_loss(model, batch)
    check(
        kind,
        "L_act on a fixed batch falls",
        after < ours,
        f"{ours:.4f} -> {after:.4f} after {summary['steps_run']} steps",
    )
    with lb.at_tiny_sizes(kind, ckpt):
        again = load_model(work / "run" / "policy")
    same = all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values(), strict=True))
    check(kind, "OUT/policy reloads the trained weights", same, str(work / "run" / "policy"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="work directory (default: a temporary one)")
    lb.add_policy_arguments(parser)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    work = Path(args.out or tempfile.mkdtemp(prefix="policylens-retain-interop-")).resolve()
    kinds, tpath = args.only.split(","), lb.pi_transformers_path(args.pi_transformers)
    torch.set_num_threads(2)
    if args.rows:  # the pi child: the patched transformers is first on its path
        for kind in kinds:
            run_policy(kind, work / kind)
        Path(args.rows).write_text(json.dumps(ROWS))
        return 0
    pi = [k for k in kinds if k != "smolvla"]
    if "smolvla" in kinds:
        run_policy("smolvla", work / "smolvla")
    if pi and tpath:  # one transformers per process: pi0 / pi0.5 in a child with the patched one first
        rc, rows = lb.run_pi_child(__file__, pi, work, tpath)
        ROWS.extend(tuple(r) for r in rows)
        check(",".join(pi), "child process (pi0 / pi0.5)", rc == 0 and bool(rows), f"rc={rc}")
    elif pi:
        print("pi0 / pi0.5: SKIPPED (they need LeRobot's patched transformers: --pi-transformers DIR)")
    import lerobot
    import transformers

    print(f"lerobot {getattr(lerobot, '__version__', '?')}, torch {torch.__version__}, "
          f"transformers {transformers.__version__} (pi0 / pi0.5: the one at {tpath or '-'})")  # fmt: skip
    for kind, name, ok, detail in ROWS:
        print(f"{'PASS' if ok else 'FAIL'}  [{kind}] {name}: {detail}")
    print(f"work directory {work}")
    return 0 if all(ok for _, _, ok, _ in ROWS) else 1


if __name__ == "__main__":
    sys.exit(main())
