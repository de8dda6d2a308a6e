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
