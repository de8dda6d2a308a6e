"""A truncated or foreign ``model.safetensors`` fails in one line naming the file and the fix."""

import json
import re

import pytest
import torch
from typer.testing import CliRunner

from policylens.cli import _accel, _cache
from policylens.models import TinyVLA, TinyVLAConfig, load_model, load_policy, save_policy
from policylens.runs import check_safetensors, read_safetensors
from zoo import tiny_diffusion_policy, tiny_paligemma

runner = CliRunner()
SMALL_VLA = {"image_size": 28, "vision_layers": 1, "layers": 2, "max_text_tokens": 12, "chunk_size": 4, "flow_steps": 3}


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path):
    path.write_bytes(b"this is not a safetensors file\n" * 4)


DAMAGE = {"truncated": _truncate, "garbage": _garbage}


@pytest.fixture
def diffusion_dir(tmp_path):
    return tiny_diffusion_policy(steps=4).save_pretrained(tmp_path / "pol")


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_library_names_the_damaged_weights(diffusion_dir, damage):
    weights = diffusion_dir / "model.safetensors"
    DAMAGE[damage](weights)
    for load in (load_policy, load_model):
        with pytest.raises(ValueError, match="damaged") as info:
            load(diffusion_dir)
        msg = str(info.value)
        assert str(weights) in msg and "re-save or re-download it" in msg and "\n" not in msg
    with pytest.raises(ValueError, match=re.escape(str(weights))):
        read_safetensors(weights)
    with pytest.raises(ValueError, match=re.escape(str(weights))):
        check_safetensors(weights)


def test_an_empty_weights_file_is_damaged_too(diffusion_dir):
    weights = diffusion_dir / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match="damaged"):
        load_policy(diffusion_dir)


def test_an_intact_checkpoint_still_loads(diffusion_dir):
    ref = tiny_diffusion_policy(steps=4)
    loaded = load_policy(diffusion_dir)
    for key, value in ref.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    check_safetensors(diffusion_dir / "model.safetensors")  # no error


def test_weights_that_do_not_fit_the_config_name_both_files(diffusion_dir):
    config = json.loads((diffusion_dir / "config.json").read_text())
    config["n_emb"] = 8  # another width: every weight has another shape
    (diffusion_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="does not fit") as info:
        load_policy(diffusion_dir)
    assert str(diffusion_dir / "model.safetensors") in str(info.value)
    assert str(diffusion_dir / "config.json") in str(info.value)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_accel_cli_prints_one_line_and_exits_2(diffusion_dir, tmp_path, damage):
    weights = diffusion_dir / "model.safetensors"
    DAMAGE[damage](weights)
    for args in (
        ["calibrate", "--policy", str(diffusion_dir), "--out", str(tmp_path / "cal.json")],
        ["eval", "--policy", str(diffusion_dir), "--calls", "1"],
    ):
        result = runner.invoke(_accel.app, args)
        assert result.exit_code == 2, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and str(weights) in lines[0]
        assert "damaged" in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "cal.json").exists()


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_cache_build_prints_one_line_and_exits_2(tmp_path, damage):
    torch.manual_seed(0)
    directory = save_policy(TinyVLA(TinyVLAConfig(**SMALL_VLA)).eval(), tmp_path / "vla")
    weights = directory / "model.safetensors"
    DAMAGE[damage](weights)
    args = ["build", "--policy", str(directory), "--dataset", "synthetic:4", "--out", str(tmp_path / "store")]
    result = runner.invoke(_cache.app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(weights) in lines[0] and "damaged" in lines[0]


def test_hf_checkpoint_with_truncated_weights_names_the_file(tmp_path):
    tiny_paligemma().save_pretrained(tmp_path / "pg")
    weights = tmp_path / "pg" / "model.safetensors"
    _truncate(weights)
    with pytest.raises(ValueError, match="damaged") as info:
        load_model(tmp_path / "pg")
    assert str(weights) in str(info.value)
