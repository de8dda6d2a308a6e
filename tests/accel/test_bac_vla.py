"""BAC on a flow-matching VLA (``TinyVLA``): only the action expert's layers are cached, the state resets
at every ``sample_actions`` (one chunk), every-step-updated schedules are bit-identical to the uncached
policy, the whole-expert shortcut at fully skipped steps is bit-identical to running its layers,
calibration runs over the flow steps, ``compare_modes`` splits prefix from expert and scores the
executed part of the chunk, and the agent passes ``steps`` through."""

import numpy as np
import pytest
import torch

from policylens.accel import (
    BACConfig,
    Calibration,
    apply_cache,
    cache_context,
    cache_info,
    calibrate,
    compare_modes,
    discover_branches,
    model_hash,
)
from policylens.models import TinyVLA, TinyVLAConfig
from policylens.sim import vla_agent

SEED = 5
EXPERT = ["expert.layers.0.self_attn", "expert.layers.0.mlp", "expert.layers.1.self_attn", "expert.layers.1.mlp"]
STAGGERED = {  # steps 6..9 reuse every branch: the whole expert is one sum there
    "expert.layers.0.self_attn": [0, 3],
    "expert.layers.0.mlp": [0, 1, 4],
    "expert.layers.1.self_attn": [0, 5],
    "expert.layers.1.mlp": [0, 2],
}


@pytest.fixture(scope="module")
def vla():
    torch.manual_seed(0)
    policy = TinyVLA(TinyVLAConfig(image_size=28, patch_size=14, layers=2)).eval()
    with torch.no_grad():  # a fresh expert's norms are identity and its output small: make every weight matter
        for p in policy.expert.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return policy


def _sample(policy, batch, **kwargs):
    return policy.sample_actions(batch, generator=torch.Generator().manual_seed(SEED), **kwargs)


def _calibration(policy, schedule, steps=10) -> Calibration:
    zero = {n: np.zeros((steps, steps)) for n in schedule}
    return Calibration(
        num_steps=steps,
        block_names=list(schedule),
        kinds={n: "ffn" if n.endswith("mlp") else "attn" for n in schedule},
        layers={n: int(n.split(".")[-2]) for n in schedule},
        model_hash=model_hash(policy),
        metric="cosine",
        num_updates=2,
        n_bu=0,
        matrices={"cosine": zero, "l1": zero},
        schedule=schedule,
    )


def test_only_the_expert_is_cached(vla):
    assert [b.name for b in discover_branches(vla, "expert")] == EXPERT
    assert len(discover_branches(vla, "")) == 8  # the prefix's Gemma layers are blocks too
    with cache_context(vla, BACConfig(mode="uniform", every=2)):
        assert sorted(cache_info(vla)["schedule"]) == sorted(EXPERT)
        wrapped = [path for path, m in vla.named_modules() if "forward" in m.__dict__]
        assert "expert" in wrapped and all(path.split(".")[0] == "expert" for path in wrapped)  # expert: the stack
    assert not [path for path, m in vla.named_modules() if "forward" in m.__dict__]
    with pytest.raises(ValueError, match=r"root='decoder'.*children are \['paligemma', 'expert'"):
        apply_cache(vla, BACConfig(mode="uniform", every=2, root="decoder"))


def test_every_step_updated_is_bit_identical(vla):
    batch = vla.example_batch(3, seed=1)
    want = _sample(vla, batch)
    every = {n: list(range(10)) for n in EXPERT}
    for config in (
        BACConfig(mode="uniform", every=1),
        BACConfig(mode="optimal", calibration=_calibration(vla, every)),
        BACConfig(mode="original"),
    ):
        with cache_context(vla, config):
            assert torch.equal(_sample(vla, batch), want)


def _reference(policy, batch, schedule):
    """Plain caching written here, fresh per chunk: each expert branch module recomputes at its update
    steps and returns its stored value otherwise (gates run every step; their output is not read then)."""
    step, store, patched = {}, {}, []
    for name, steps in schedule.items():
        module = policy.get_submodule(name)
        orig = module.forward

        def forward(*args, _orig=orig, _name=name, _steps=steps, **kwargs):
            k = step[_name] = step.get(_name, -1) + 1
            if k in _steps:
                store[_name] = _orig(*args, **kwargs)
            return store[_name]

        module.forward = forward
        patched.append(module)
    try:
        return _sample(policy, batch)
    finally:
        for module in patched:
            del module.forward


def test_each_chunk_starts_afresh_and_matches_a_plain_cache(vla):
    a, b = vla.example_batch(2, seed=2), vla.example_batch(2, seed=3)
    want_b = _reference(vla, b, STAGGERED)
    assert (want_b - _sample(vla, b)).abs().max() > 1e-3  # the cache changes the actions
    config = BACConfig(mode="optimal", calibration=_calibration(vla, STAGGERED))
    with cache_context(vla, config):
        _sample(vla, a)  # another chunk first: nothing of it may reach the next one
        got_b = _sample(vla, b)
        assert torch.equal(_sample(vla, b), got_b)
    torch.testing.assert_close(got_b, want_b, rtol=0, atol=1e-6)


def test_trimmed_skipped_steps_equal_the_untrimmed_path(vla):
    batch = vla.example_batch(3, seed=4)
    layer_calls = []
    handle = vla.expert.layers[0].register_forward_pre_hook(lambda *_: layer_calls.append(1))
    results = {}
    try:
        for schedule in (STAGGERED, {n: [0, 5] for n in EXPERT}):
            for fuse in (True, False):
                layer_calls.clear()
                cal = _calibration(vla, schedule)
                with cache_context(vla, BACConfig(mode="optimal", calibration=cal, fuse_skipped_stacks=fuse)):
                    results[fuse] = _sample(vla, batch)
                results[f"calls {fuse}"] = len(layer_calls)
            assert torch.equal(results[True], results[False])
            assert results["calls False"] == 10
            assert results["calls True"] == (6 if schedule is STAGGERED else 2)
    finally:
        handle.remove()


def test_calibration_over_the_flow_steps(vla):
    batch = vla.example_batch(4, seed=6)
    cal = calibrate(vla, batch, num_updates=3, batch_size=2, progress=False)
    assert cal.num_steps == 10 and cal.block_names == EXPERT and cal.num_samples == 4
    assert cal.model_hash == model_hash(vla) and all(len(s) == 3 and s[0] == 0 for s in cal.schedule.values())
    five = calibrate(
        vla, batch, num_updates=2, progress=False, run_fn=lambda p, o, g: p.sample_actions(o, generator=g, steps=5)
    )
    assert five.num_steps == 5
    with cache_context(vla, BACConfig(mode="optimal", calibration=five, num_steps=5)):
        assert _sample(vla, batch, steps=5).shape == (4, 8, 7)
    with pytest.raises(ValueError, match="different step counts"):  # the prefix runs once, the expert 10x
        calibrate(vla, batch, root="", progress=False)


def test_another_step_count_is_refused(vla):
    batch = vla.example_batch(1)
    with cache_context(vla, BACConfig(mode="uniform", every=2)):
        with pytest.raises(ValueError, match="steps=5, but the BAC schedule was made for 10"):
            _sample(vla, batch, steps=5)
        with pytest.raises(ValueError, match="steps=4, but the BAC schedule was made for 10"):
            vla.sample_actions(batch, None, 4)  # positional


def _errors(reference, actions):
    ref, act = reference.double().flatten().tolist(), actions.double().flatten().tolist()
    total, worst = 0.0, 0.0
    for r, a in zip(ref, act, strict=True):
        total += (a - r) ** 2
        worst = max(worst, abs(a - r))
    return total / len(ref), worst


def test_compare_modes_splits_prefix_and_expert_and_scores_the_executed_part(vla):
    batch = vla.example_batch(2, seed=7)
    configs = {"original": None, "uniform": BACConfig(mode="uniform", num_updates=2), "steps 2": None}
    rows = compare_modes(vla, configs, batch, calls=2, warmup=1, seed=SEED, predict_kwargs={"steps 2": {"steps": 2}})
    ref = _sample(vla, batch)
    with cache_context(vla, configs["uniform"]):
        cached = _sample(vla, batch)
    fewer = _sample(vla, batch, steps=2)
    for row, actions, steps in zip(rows, (ref, cached, fewer), (10, 10, 2), strict=True):
        assert row["steps"] == steps and 0 < row["prefix_ms"] < row["median_ms"]
        assert row["expert_step_ms"] == pytest.approx(row["expert_ms"] / steps)
        mse, worst = _errors(ref, actions)
        assert row["mse"] == pytest.approx(mse, rel=1e-5, abs=1e-12)
        mse, worst = _errors(ref[:, :4], actions[:, :4])  # the agent runs the first chunk_size // 2 actions
        assert row["mse_executed"] == pytest.approx(mse, rel=1e-5, abs=1e-12)
        assert row["max_abs_executed"] == pytest.approx(worst, rel=1e-5, abs=1e-12)
    assert rows[1]["mse"] > 0 and rows[2]["mse"] > 0 and rows[0]["expert_speedup"] == 1.0
    with pytest.raises(ValueError, match="the baseline 'original' must run as is"):
        compare_modes(vla, configs, batch, predict_kwargs={"original": {"steps": 2}})


def test_the_agent_passes_steps_to_sample_actions(vla):
    rng = np.random.default_rng(0)
    obs = {
        "images": {c: rng.integers(0, 256, (28, 28, 3), dtype=np.uint8) for c in vla.config.cameras},
        "instruction": "reach the red cube",
        "state": rng.normal(size=7).astype(np.float32),
    }
    chunks = {}
    for steps in (None, 3):
        agent = vla_agent(vla, seed=1, **({} if steps is None else {"steps": steps}))
        agent.reset([0], episodes=[0])
        chunks[steps] = agent.inner.predict_batch([[obs]], [0])
    batch = vla.make_batch(
        {c: torch.from_numpy(obs["images"][c])[None] for c in vla.config.cameras},
        [obs["instruction"]],
        torch.from_numpy(obs["state"])[None],
    )
    noise = torch.randn(vla.noise_shape, generator=torch.Generator().manual_seed(1 * 1_000_003 + 0))[None]
    assert np.array_equal(chunks[3], vla.sample_actions(batch, noise=noise, steps=3).numpy())
    assert np.array_equal(chunks[None], vla.sample_actions(batch, noise=noise).numpy())
    assert not np.array_equal(chunks[3], chunks[None])


def test_accel_eval_on_a_vla_splits_the_chunk_and_refuses_obs_files(vla, tmp_path):
    from typer.testing import CliRunner

    from policylens.cli._accel import app
    from policylens.runs import save_checkpoint

    before = torch.get_num_threads()
    directory = save_checkpoint(vla, tmp_path / "vla")
    runner = CliRunner()
    try:
        args = ["eval", "--policy", str(directory), "--calls", "1", "--batch", "2"]
        result = runner.invoke(app, args, env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        text = " ".join(result.stdout.split())
        assert "10 denoising steps (expert: expert; its prefix runs once per chunk)" in text
        assert "expert ms/step" in text and "executed MSE (actions 0..3)" in text
        assert "uniform" in text and "1.00x" in text
        result = runner.invoke(app, [*args, "--obs", str(tmp_path / "obs.safetensors")])
        assert result.exit_code == 2 and "observation files are for diffusion policies" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    finally:
        torch.set_num_threads(before)
