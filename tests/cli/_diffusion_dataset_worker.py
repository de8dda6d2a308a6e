"""``policylens train diffusion --dataset DATASET --out OUT`` (4 steps, global batch 4) in this process, run by
test_train_diffusion_dataset.py as 2 torchrun ranks and as one plain process. Dropout is switched off in
the reach config first (each rank draws its own masks), so the two runs must give the same weights.
Exits with the command's exit code and prints its output."""

import sys

from typer.testing import CliRunner

from policylens.cli.main import app
from policylens.models.diffusion import REACH_CONFIG

REACH_CONFIG["p_drop_attn"] = 0.0
dataset, out = sys.argv[1:3]
args = ["train", "diffusion", "--dataset", dataset, "--out", out, "--steps", "4", "--batch-size", "4"]
result = CliRunner().invoke(app, [*args, "--save-every", "100", "--lr", "1e-4"])
print(result.output)
if result.exception is not None and not isinstance(result.exception, SystemExit):
    raise result.exception
sys.exit(result.exit_code)
