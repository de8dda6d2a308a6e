"""Heavy optional dependencies load only where they are used: importing the package and its
models does not import TensorBoard, pybullet or lerobot, nor the metaworld extra (metaworld,
mujoco, gymnasium), whose subpackage imports it only when a function needs the simulator."""

import subprocess
import sys


def test_importing_models_and_tap_loads_no_optional_heavyweights():
    code = (
        "import sys, policylens, policylens.models, policylens.tap, policylens.anchors, policylens.store; "
        "import policylens.data, policylens.sim.metaworld, policylens.models.diffusion; "
        "heavy = ('tensorboard', 'torch.utils.tensorboard', 'pybullet', 'lerobot', 'metaworld', 'mujoco', "
        "'gymnasium'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
