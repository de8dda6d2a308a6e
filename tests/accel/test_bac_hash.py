"""A calibration is tied to its weights by the one weights hash; calibration files written before it
(a 16-hex-digit ``model_hash``) keep loading, checked against the hash they were written with."""

import dataclasses
import hashlib

import numpy as np
import pytest
import torch

from policylens.accel import BACConfig, Calibration, apply_cache, calibrate, model_hash, remove_cache
from policylens.accel._hash import calibration_hash, legacy_model_hash
from policylens.runs import weights_hash
from zoo import tiny_diffusion_policy


def _old_hash(model) -> str:
    """The 16 hex digits calibrations recorded before: entries sorted by name, each its name, dtype and
    flattened shape, then its bytes (numpy's view of the float32 values)."""
    h = hashlib.sha256()
    for name in sorted(model.state_dict()):
        t = model.state_dict()[name]
        arr = np.ascontiguousarray(t.detach().cpu().numpy()).reshape(-1)
        h.update(f"{name}|{t.dtype}|({arr.size},)|".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:16]


@pytest.fixture(scope="module")
def calibrated():
    policy = tiny_diffusion_policy(steps=4)
    cal = calibrate(policy, torch.randn(2, 2, 4), num_updates=2, batch_size=2, num_seeds=1, progress=False)
    return policy, cal


def test_a_new_calibration_records_the_weights_hash(calibrated):
    policy, cal = calibrated
    assert cal.model_hash == weights_hash(policy) == model_hash(policy)
    assert cal.model_hash.startswith("sha256:") and len(cal.model_hash) == len("sha256:") + 64


def test_the_legacy_hash_is_the_old_computation():
    policy = tiny_diffusion_policy(steps=4)
    assert all(t.dtype == torch.float32 for t in policy.state_dict().values())  # what _old_hash reads
    assert legacy_model_hash(policy) == _old_hash(policy)
    assert calibration_hash(policy, "0123456789abcdef") == _old_hash(policy)
    assert calibration_hash(policy, "sha256:00") == weights_hash(policy)


def test_a_calibration_file_from_before_still_loads_and_refuses_other_weights(calibrated, tmp_path):
    policy, cal = calibrated
    old = dataclasses.replace(cal, model_hash=_old_hash(policy))
    path = old.save(tmp_path / "old.json")
    back = Calibration.load(path)
    assert back.model_hash == _old_hash(policy)
    apply_cache(policy, BACConfig(mode="optimal", calibration=str(path)))  # the same weights: accepted
    remove_cache(policy)
    other = tiny_diffusion_policy(seed=1, steps=4)
    refused = f"model_hash='{_old_hash(policy)}' but this model hashes to '{_old_hash(other)}'"
    with pytest.raises(ValueError, match=refused):
        apply_cache(other, BACConfig(mode="optimal", calibration=str(path)))
    wrong = dataclasses.replace(cal, model_hash="ffffffffffffffff")
    with pytest.raises(ValueError, match="other weights"):
        apply_cache(policy, BACConfig(mode="optimal", calibration=wrong))
