"""The ``policylens`` entry point: demo, taps, version."""

import pytest
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
    result = run_demo(batch_size=1, jobs=False)
    assert [r["tap"] for r in result.rows][1] == "llm.layers.-2.out"
    expert = next(r for r in result.rows if r["tap"].startswith("expert"))
    assert expert["calls"] == 10 and expert["shape"] == (1, 9, 64)
    per_image = load_model("tiny_vla").config.tokens_per_image
    assert result.span_counts["image[hand_camera]"] == [per_image]
    assert result.actions.shape == (1, 8, 7)


def test_demo_jobs_write_a_verified_cache_and_a_bac_timing(tmp_path):
    import json

    from policylens.store import open_store

    result = run_demo(batch_size=1, out=tmp_path / "demo")
    assert result.out == tmp_path / "demo"
    store = open_store(tmp_path / "demo" / "anchors", check=True)
    assert len(store) == result.cache["num_samples"] > 2 and store[0]["target_features"].shape == (128,)
    assert len(list((tmp_path / "demo" / "episodes").rglob("trajectory.h5"))) == 2
    bac = json.loads((tmp_path / "demo" / "bac.json").read_text())
    assert bac["speedup"] == pytest.approx(bac["original_ms"] / bac["uniform_S10_ms"])
    assert 0 < bac["action_mse"] < 1  # the cached chunk stays near the uncached one
    assert (tmp_path / "demo" / "attention" / "report.html").is_file() and result.attention["keyframes"] >= 2
    steps = json.loads((tmp_path / "demo" / "retain.json").read_text())
    assert len(steps) == 3 and steps[0]["loss_ret"] < 1e-6 and result.retain["lambda"] >= 0


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
    assert result.exit_code == 2
    assert result.stderr.startswith("error: load_model: '/no/such/model' is neither a built-in policy")


def test_taps_of_the_diffusion_policy_fire(tmp_path):
    """Every tap `policylens taps tiny_diffusion_policy` lists records once per denoising step."""
    from policylens.tap import capture, list_taps
    from zoo import tiny_diffusion_policy

    result = runner.invoke(app, ["taps", "tiny_diffusion_policy"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "cross.layers.5.attn.probs" in result.output and "model.decoder.layers.5.multihead_attn" in result.output
    for n_cond_layers in (0, 1):
        policy = tiny_diffusion_policy(steps=3, n_cond_layers=n_cond_layers)
        names = [t.name for t in list_taps(policy)]
        assert ("encoder.layers.0.attn.probs" in names) == (n_cond_layers > 0)
        with torch.no_grad(), capture(policy, names) as cap:
            policy.predict_action(torch.rand(2, 2, 4), generator=torch.Generator().manual_seed(0))
        assert {n: len(cap.calls(n)) for n in names} == dict.fromkeys(names, 3)
        probs = cap.calls("cross.layers.1.attn.probs")[0]  # (B, H, horizon, 1 + n_obs_steps)
        assert probs.shape == (2, 2, 8, 3)
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, 2, 8))
        # causal memory mask: action token 0 sees the time token and the first observation only
        assert probs[:, :, 0, 2].abs().max() == 0
        assert cap.calls("memory.out")[0].shape == (2, 3, 16)
        assert torch.equal(cap.calls("cross.layers.0.out")[0], cap.calls("decoder.layers.0.out")[0])
    # plain reference: the same call of the cross-attention with need_weights=True
    reference = []
    mha = policy.model.decoder.layers[1].multihead_attn

    def pre(m, args, kwargs):
        q, k, v = args
        out = m.forward(q, k, v, attn_mask=kwargs.get("attn_mask"), need_weights=True, average_attn_weights=False)
        reference.append(out[1])

    handle = mha.register_forward_pre_hook(pre, with_kwargs=True)
    with torch.no_grad(), capture(policy, ["cross.layers.1.attn.probs"]) as cap:
        policy.predict_action(torch.rand(2, 2, 4), generator=torch.Generator().manual_seed(0))
    handle.remove()
    torch.testing.assert_close(cap.stacked("cross.layers.1.attn.probs"), torch.stack(reference), atol=1e-6, rtol=1e-5)
