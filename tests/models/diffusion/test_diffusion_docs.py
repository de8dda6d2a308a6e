"""The docs examples of the diffusion policy and BAC run, and the shipped reach checkpoint loads."""

import json
from pathlib import Path

import pytest
import torch

from docs_blocks import python_blocks
from policylens.models.diffusion import TinyDiffusionPolicy
from policylens.models.diffusion._reach import ASSET_DIR
from policylens.sim.pybullet import STATE_DIM

DOCS = Path(__file__).resolve().parents[3] / "docs"


def test_diffusion_policy_doc_example(tmp_path, monkeypatch):
    (block,) = python_blocks(DOCS / "diffusion_policy.md", "Example")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(block.compile(), scope)
    assert scope["actions"].shape == (4, 16, 7)
    assert json.loads((tmp_path / "my_policy" / "config.json").read_text())["type"] == "tiny_diffusion_policy"


@pytest.mark.skipif(not (ASSET_DIR / "config.json").is_file(), reason="reach checkpoint not generated")
def test_shipped_checkpoint_and_bac_doc_example(tmp_path, monkeypatch):
    policy = TinyDiffusionPolicy.from_pretrained(ASSET_DIR)
    assert policy.config.num_inference_steps == 100 and policy.config.obs_dim == STATE_DIM
    assert sum(f.stat().st_size for f in ASSET_DIR.iterdir()) < 20 * 2**20
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    scope: dict = {}
    exec(python_blocks(DOCS / "bac.md")[0].compile(), scope)
    assert scope["actions"].shape == (1, 16, 7) and (tmp_path / "runs" / "bac_calibration.json").is_file()
