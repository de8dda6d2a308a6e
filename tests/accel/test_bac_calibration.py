"""BAC calibration: averaged matrices, JSON round trip, mismatch errors, optimal mode, plots."""

import json

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
    optimal_update_steps,
    remove_cache,
    save_plots,
    step_matrices,
)
from zoo import tiny_diffusion_policy


def _policy(seed=0, steps=12):
    return tiny_diffusion_policy(seed=seed, steps=steps)


@pytest.fixture(scope="module")
def calibrated():
    p = _policy()
    obs = torch.randn(8, 2, 4)
    return p, calibrate(p, obs, num_updates=4, n_bu=1, batch_size=2, num_seeds=2, progress=False)


def test_step_matrices_against_plain_formulas():
    f = torch.randn(3, 2, 5)  # (K, B, F)
    m = step_matrices(f, ("cosine", "l1", "l2", "mse"))
    a, b = f[0], f[2]
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1).mean()
    assert m["cosine"][0, 2].item() == pytest.approx(cos.item(), abs=1e-6)
    assert m["l1"][0, 2].item() == pytest.approx((a - b).abs().mean().item(), abs=1e-6)
    assert m["l2"][0, 2].item() == pytest.approx((a - b).norm(dim=-1).mean().item(), abs=1e-5)
    assert m["mse"][0, 2].item() == pytest.approx((a - b).square().mean().item(), abs=1e-5)


def test_calibration_contents(calibrated):
    _, cal = calibrated
    assert cal.num_steps == 12 and cal.num_samples == 16 and len(cal.block_names) == 6
    for name in cal.block_names:
        m = cal.matrices["cosine"][name]
        assert m.shape == (12, 12) and np.allclose(np.diag(m), 1.0)
        assert cal.schedule[name][0] == 0
    base = optimal_update_steps(cal.matrices["cosine"][cal.block_names[0]], 4)
    assert set(base) <= set(cal.schedule[cal.block_names[0]])
    assert cal.stability["num_subsets"] == 2 and len(cal.stability["mean_jaccard_vs_full"]) == 2


def test_json_roundtrip_and_optimal_mode(calibrated, tmp_path):
    p, cal = calibrated
    path = cal.save(tmp_path / "cal.json")
    data = json.loads(path.read_text())
    assert {"num_steps", "block_names", "model_hash", "schedule", "stability", "matrices"} <= set(data)
    back = Calibration.load(path)
    assert back.schedule == cal.schedule and back.model_hash == cal.model_hash
    obs = torch.randn(2, 2, 4)
    ref = p.predict_action(obs, generator=torch.Generator().manual_seed(0))
    with cache_context(p, BACConfig(mode="optimal", calibration=str(path))):
        info = cache_info(p)
        a = p.predict_action(obs, generator=torch.Generator().manual_seed(0))
    assert info["schedule"] == cal.schedule and 0 < info["skipped_fraction"] < 1
    assert a.shape == ref.shape and not torch.equal(a, ref)
    with cache_context(p, BACConfig(mode="optimal", calibration=cal, num_updates=12, n_bu=0)):
        assert torch.equal(p.predict_action(obs, generator=torch.Generator().manual_seed(0)), ref)


def test_mismatches_fail_clearly(calibrated):
    _, cal = calibrated
    with pytest.raises(ValueError, match="other weights"):
        apply_cache(_policy(seed=1), BACConfig(mode="optimal", calibration=cal))
    with pytest.raises(ValueError, match="made for 12 denoising steps"):
        apply_cache(_policy(steps=10), BACConfig(mode="optimal", calibration=cal))
    p = _policy()
    with pytest.raises(ValueError, match="made for 12 denoising steps"):
        apply_cache(p, BACConfig(mode="optimal", calibration=cal, num_steps=100))
    remove_cache(p)
    with cache_context(p, BACConfig(mode="uniform", every=2)), pytest.raises(RuntimeError, match="remove_cache"):
        calibrate(p, torch.randn(2, 2, 4), progress=False)
    with pytest.raises(ValueError, match="needs calibration"):
        BACConfig(mode="optimal")
    with pytest.raises(ValueError, match="mode='fast'"):
        BACConfig(mode="fast")


def test_plots_written(calibrated, tmp_path):
    _, cal = calibrated
    paths = save_plots(cal, tmp_path)
    assert [p.name for p in paths] == ["similarity.png", "schedule.png", "bu_scores.png"]
    assert all(p.stat().st_size > 1000 and p.read_bytes()[:4] == b"\x89PNG" for p in paths)


def test_bac_on_ddim_schedule_for_another_step_count():
    """A schedule calibrated on DDIM-6 runs of a DDPM policy runs with BACConfig(num_steps=6): every
    step updated equals plain DDIM-6 exactly; the policy's own default (DDPM) is refused with the fix."""
    p = tiny_diffusion_policy()
    obs = torch.randn(4, 2, 4)

    def run_ddim(policy, o, g):
        policy.predict_action(o, generator=g, sampler="ddim", num_inference_steps=6)

    cal = calibrate(p, obs, num_updates=6, batch_size=2, run_fn=run_ddim, progress=False)
    assert cal.num_steps == 6
    g = lambda: torch.Generator().manual_seed(1)  # noqa: E731
    ref = p.predict_action(obs, generator=g(), sampler="ddim", num_inference_steps=6)
    with cache_context(p, BACConfig(mode="optimal", calibration=cal, num_steps=6)):
        same = p.predict_action(obs, generator=g(), sampler="ddim", num_inference_steps=6)
    assert torch.equal(same, ref)
    with cache_context(p, BACConfig(mode="optimal", calibration=cal, num_steps=6, num_updates=2)):
        cached = p.predict_action(obs, generator=g(), sampler="ddim", num_inference_steps=6)
        assert cache_info(p)["skipped_fraction"] > 0.4
    assert not torch.equal(cached, ref) and torch.isfinite(cached).all()
    with pytest.raises(ValueError, match=r"BACConfig\(num_steps=6\)"):
        apply_cache(p, BACConfig(mode="optimal", calibration=cal))


def _old_way_calibration(policy, observations, num_updates, n_bu, batch_size, num_seeds, seed=0, run_fn=None):
    """The calibration as it was recorded before it went through tap.capture: raw forward hooks on
    each branch's output module (kept here only as the reference), the same averaging and stability."""
    from policylens.accel import discover_branches, model_hash
    from policylens.accel._calibrate import _stability

    run_fn = run_fn or (lambda p, o, g: p.predict_action(o, generator=g))
    keep = ("cosine", "l1")
    branches = discover_branches(policy)
    feats = {b.name: [] for b in branches}

    def make_hook(name):
        def hook(module, args, output):
            out = output[0] if isinstance(output, tuple) else output
            feats[name].append(out.detach().reshape(out.shape[0], -1).float().cpu())  # (B, F)

        return hook

    handles = [b.output.register_forward_hook(make_hook(b.name)) for b in branches]
    runs, weights = [], []
    try:
        with torch.no_grad():
            for s in range(num_seeds):
                for i in range(0, len(observations), batch_size):
                    for v in feats.values():
                        v.clear()
                    obs = observations[i : i + batch_size]
                    run_fn(policy, obs, torch.Generator(device="cpu").manual_seed(seed + 1000 * s + i))
                    run = {m: {} for m in keep}
                    for name, v in feats.items():
                        for m, mat in step_matrices(torch.stack(v), keep).items():
                            run[m][name] = mat.numpy()
                    runs.append(run)
                    weights.append(len(obs))
    finally:
        for h in handles:
            h.remove()
    K = len(next(iter(feats.values())))

    def average(idx):
        w = np.asarray([weights[j] for j in idx], dtype=np.float64)
        w /= w.sum()
        return {m: {n: sum(wj * runs[j][m][n] for wj, j in zip(w, idx, strict=True)) for n in feats} for m in keep}

    common = {
        "num_steps": K,
        "block_names": [b.name for b in branches],
        "kinds": {b.name: b.kind for b in branches},
        "layers": {b.name: b.layer for b in branches},
        "model_hash": model_hash(policy),
        "metric": "cosine",
        "num_updates": min(num_updates, K),
        "n_bu": n_bu,
    }
    cal = Calibration(**common, matrices=average(list(range(len(runs)))), num_samples=int(sum(weights)))
    cal.stability = _stability(cal, runs, average, 2, common)
    return cal


def _ddim6(policy, obs, g):
    policy.predict_action(obs, generator=g, sampler="ddim", num_inference_steps=6)


@pytest.mark.parametrize(
    ("n_cond_layers", "num_obs", "batch_size", "num_seeds", "run_fn"),
    [(0, 5, 2, 2, None), (1, 4, 4, 1, None), (0, 3, 2, 1, _ddim6)],  # a short last batch; encoder branches; DDIM
)
def test_calibration_through_capture_equals_the_raw_hook_recording(
    n_cond_layers, num_obs, batch_size, num_seeds, run_fn
):
    p = tiny_diffusion_policy(seed=3, steps=10, n_cond_layers=n_cond_layers)
    obs = torch.randn(num_obs, 2, 4, generator=torch.Generator().manual_seed(5))
    kw = {"num_updates": 4, "n_bu": 1, "batch_size": batch_size, "num_seeds": num_seeds}
    want = _old_way_calibration(p, obs, **kw, run_fn=run_fn)
    got = calibrate(p, obs, **kw, progress=False, **({"run_fn": run_fn} if run_fn else {}))
    assert got.block_names == want.block_names and len(got.block_names) == 6 + 2 * n_cond_layers
    assert (
        (got.num_steps, got.num_samples)
        == (want.num_steps, want.num_samples)
        == (6 if run_fn else 10, num_obs * num_seeds)
    )
    assert set(got.matrices) == set(want.matrices) == {"cosine", "l1"}
    for m in want.matrices:
        for name in want.block_names:
            assert np.array_equal(got.matrices[m][name], want.matrices[m][name]), (m, name)
    assert got.schedule == want.schedule and got.bu_scores == want.bu_scores
    assert got.stability == want.stability
    assert json.dumps(got.to_dict()) == json.dumps(want.to_dict())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in p.modules())  # all removed


def test_calibration_reads_through_tap_only(monkeypatch):
    """Every read hook that calibration installs is installed by policylens.tap."""
    import inspect
    from pathlib import Path

    import policylens.tap

    tap_dir = Path(policylens.tap.__file__).parent
    callers = []
    original = torch.nn.Module.register_forward_hook

    def spy(self, *args, **kwargs):
        callers.append(Path(inspect.stack()[1].filename))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "register_forward_hook", spy)
    calibrate(_policy(steps=4), torch.randn(2, 2, 4), num_updates=2, batch_size=2, progress=False)
    assert len(callers) == 6 and all(c.parent == tap_dir for c in callers), callers
