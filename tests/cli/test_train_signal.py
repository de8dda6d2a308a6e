"""A real `policylens train diffusion` process stopped by SIGTERM saves its state; the rerun resumes."""

import json
import os
import signal
import subprocess
import sys
import time

from typer.testing import CliRunner

from policylens.cli.main import app


def test_sigterm_saves_state_and_the_same_command_resumes(tmp_path):
    out = tmp_path / "dp"
    args = ["train", "diffusion", "--out", str(out), "--episodes", "2", "--batch-size", "4", "--save-every", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "policylens.cli.main", *args, "--steps", "1000000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    state = out / "train_state.json"
    deadline = time.monotonic() + 120
    while not state.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    step = json.loads(state.read_text())["step"]
    assert step >= 1 and f"interrupted: SIGTERM at step {step}: state saved in {out}" in stderr
    assert (out / "run.json").is_file()

    result = CliRunner().invoke(app, [*args, "--steps", str(step + 2)])
    assert result.exit_code == 0, result.output
    assert f"trained to step {step + 2}" in result.output
    assert json.loads(state.read_text())["step"] == step + 2
