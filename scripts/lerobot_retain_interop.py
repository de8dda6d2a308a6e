"""``policy_train`` (``retain train --policy DIR``) on LeRobot 0.4.4's real SmolVLA, outside CI::

    /tmp/lerobot_venv/bin/pip install --no-deps -e .
    /tmp/lerobot_venv/bin/python scripts/lerobot_retain_interop.py [--pi-transformers DIR] [--out DIR]

Builds a tiny random SmolVLA offline (``lerobot_builders.py``) and saves it as a LeRobot checkpoint, records
a LeRobot dataset of the simulated reach task with policylens, builds the teacher's bridge cache from the
checkpoint, loads it again with ``load_model`` (LeRobot's ``from_pretrained`` + saved pre-processor) and runs a
few CRaFT steps through LeRobot's own training ``forward``. Checks (PASS / FAIL; exit 1 on any FAIL):
``training_loss`` is ``SmolVLAPolicy.forward``'s loss on the same batch, noise and time; L_ret = 0 at step 0;
every loss finite; L_act on a fixed batch falls; the saved ``OUT/policy`` reloads with the trained weights.
pi0 / pi0.5 need LeRobot's patched transformers (``--pi-transformers``); without it they are reported as
skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lerobot_builders as lb
import numpy as np
import torch

CAMERA_MAP = {"varied_camera_1": "observation.images.front", "hand_camera": "observation.images.wrist"}
ROWS: list[tuple[str, bool, str]] = []


def check(name: str, ok: bool, detail: str) -> None:
    ROWS.append((name, bool(ok), detail))


def fixed_batch(model, eps, n=4, seed=1):
    ep, chunk = eps[0], model.config.chunk_size
    idx = [np.minimum(np.arange(t, t + chunk), len(ep["action"]) - 1) for t in range(n)]
    images = {c: torch.as_tensor(np.stack([ep["images"][c][t] for t in range(n)])) for c in model.config.cameras}
    actions = torch.as_tensor(np.stack([ep["action"][i] for i in idx])).float()
    batch = model.make_batch(images, [ep["instruction"]] * n, torch.as_tensor(ep["state"][:n]), actions=actions)
    batch.update(model.training_noise(n, torch.Generator().manual_seed(seed), np.random.default_rng(seed)))
    return batch


def run_smolvla(work: Path) -> None:
    from policylens.anchors import build_cache
    from policylens.data import dataset_training_episodes
    from policylens.models import LeRobotTeacher, load_model
    from policylens.retain import PolicyTrainConfig, RetentionConfig, policy_train
    from policylens.sim.pybullet import generate_episodes

    policy, pre, post = lb.build_smolvla(cameras=("front", "wrist"), image_shape=(3, 32, 32), state_dim=7,
                                         action_dim=7, chunk_size=4, assets_dir=work)  # fmt: skip
    ckpt = lb.save_checkpoint(policy, pre, post, work / "smolvla")
    generate_episodes("reach", 2, work / "data", seed=0, fmt="lerobot", image_size=32, progress=False)
    dataset = f"lerobot:{work / 'data'}"
    build_cache(str(ckpt), dataset, str(work / "bridge"), kind="bridge", dtype="float32", batch_size=4,
                camera_map=CAMERA_MAP, progress=False)  # fmt: skip
    torch.manual_seed(0)
    model = load_model(ckpt)
    check("load_model(DIR) is a LeRobotTeacher", isinstance(model, LeRobotTeacher), type(model).__name__)
    eps = dataset_training_episodes(model, dataset, CAMERA_MAP)
    batch = fixed_batch(model, eps)
    with torch.no_grad():
        ours = float(model.training_loss(batch))
        inputs = {k: v for k, v in batch.items() if k not in ("noise", "time")}
        theirs = float(model.policy.forward(inputs, noise=batch["noise"], time=batch["time"])[0])
    same = abs(ours - theirs) <= 1e-6 * abs(theirs)
    check("training_loss == SmolVLAPolicy.forward", same, f"{ours:.6f} vs {theirs:.6f}")
    config = PolicyTrainConfig(steps=8, batch_size=4, anchor_batch_size=4, lr=1e-3, warmup=1, log_every=1)
    summary = policy_train(model, eps, work / "run", config, RetentionConfig(), anchors=work / "bridge",
                           progress=False)  # fmt: skip
    series = json.loads((work / "run" / "train_state.json").read_text())["extra"]["series"]
    act, ret = np.asarray(series["loss_act"]), np.asarray(series["loss_ret"])
    check("L_ret = 0 at step 0", ret[0] < 1e-8, f"L_ret[0] = {ret[0]:.2e}; L_ret = {np.round(ret, 6).tolist()}")
    check("losses finite", np.isfinite(act).all() and np.isfinite(ret).all(), f"L_act = {np.round(act, 4).tolist()}")
    with torch.no_grad():
        after = float(model.training_loss(batch))
    check("L_act on a fixed batch falls", after < ours, f"{ours:.4f} -> {after:.4f} after {summary['steps_run']} steps")
    again = load_model(work / "run" / "policy")
    same = all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values(), strict=True))
    check("OUT/policy reloads the trained weights", same, str(work / "run" / "policy"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pi-transformers", default=None, help="LeRobot's patched transformers (pi0 / pi0.5)")
    parser.add_argument("--out", default=None, help="work directory (default: a temporary one)")
    args = parser.parse_args(argv)
    work = Path(args.out or tempfile.mkdtemp(prefix="policylens-retain-interop-"))
    torch.set_num_threads(2)
    run_smolvla(work / "smolvla")
    if not lb.pi_transformers_path(args.pi_transformers):
        print("pi0 / pi0.5: SKIPPED (they need LeRobot's patched transformers: --pi-transformers DIR)")
    else:
        print("pi0 / pi0.5: not run by this script yet; SmolVLA only")
    import lerobot
    import transformers

    print(f"lerobot {lerobot.__version__ if hasattr(lerobot, '__version__') else '?'}, torch {torch.__version__}, "
          f"transformers {transformers.__version__}")  # fmt: skip
    for name, ok, detail in ROWS:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    return 0 if all(ok for _, ok, _ in ROWS) else 1


if __name__ == "__main__":
    sys.exit(main())
