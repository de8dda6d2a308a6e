"""The ``policylens`` entry point: demo, taps, version."""

import torch
from typer.testing import CliRunner

from policylens._demo import run_demo
from policylens.cli.main import app
from policylens.models import TinyVLA, load_model
from zoo import tiny_paligemma

runner = CliRunner()


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "taps", "version"):
        assert command in result.output


def test_demo_captures_every_default_tap():
    result = run_demo(batch_size=1)
    assert [r["tap"] for r in result.rows][1] == "llm.layers.-2.out"
    expert = next(r for r in result.rows if r["tap"].startswith("expert"))
    assert expert["calls"] == 10 and expert["shape"] == (1, 9, 64)
    per_image = load_model("tiny_vla").config.tokens_per_image
    assert result.span_counts["image[hand_camera]"] == [per_image]
    assert result.actions.shape == (1, 8, 7)


def test_taps_command_on_an_hf_checkpoint_directory(tmp_path):
    model = tiny_paligemma()
    model.save_pretrained(tmp_path / "pg")
    loaded = load_model(tmp_path / "pg")
    assert type(loaded).__name__ == "PaliGemmaForConditionalGeneration"
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    result = runner.invoke(app, ["taps", str(tmp_path / "pg")])
    assert result.exit_code == 0, result.output
    assert "llm.layers.2.attn.probs" in result.output and "model.language_model.layers.2.self_attn" in result.output


def test_taps_command_on_builtin_policy():
    assert isinstance(load_model("tiny_vla"), TinyVLA)
    result = runner.invoke(app, ["taps", "tiny_vla"])
    assert result.exit_code == 0 and "expert.layers.3.attn.probs" in result.output


def test_taps_command_on_missing_path_fails_clearly():
    result = runner.invoke(app, ["taps", "/no/such/model"])
    assert result.exit_code != 0
    assert "neither a built-in policy" in str(result.exception)
