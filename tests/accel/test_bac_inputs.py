"""`policylens accel` inputs and settings: damaged --obs files fail in one line naming the file,
threads and settings are printed, the quick default calibration, progress over denoising steps,
and the float32 l1 matrix against a float64 loop."""

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from policylens.accel import calibrate, evaluate_mode, load_observations, step_matrices
from policylens.accel._eval import predict
from policylens.cli._accel import QUICK_OBS, QUICK_SEEDS, app
from zoo import tiny_diffusion_policy

runner = CliRunner()


@pytest.fixture(autouse=True)
def keep_threads():
    """The commands set torch's threads for the whole process; put the suite's setting back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def pol_dir(tmp_path):
    return tiny_diffusion_policy(steps=4).save_pretrained(tmp_path / "pol")


def _one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def _bad_obs_files(tmp_path) -> dict:
    ok = torch.rand(3, 2, 4)
    files = {
        "garbage": (tmp_path / "garbage.safetensors", "damaged"),
        "truncated": (tmp_path / "truncated.safetensors", "damaged"),
        "no_key": (tmp_path / "no_key.safetensors", "has no tensor 'obs'"),
        "shape": (tmp_path / "shape.safetensors", r"shape \(3, 4\); expected \(N, 2, 4\)"),
        "obs_dim": (tmp_path / "obs_dim.safetensors", r"shape \(3, 2, 5\); expected \(N, 2, 4\)"),
        "nan": (tmp_path / "nan.safetensors", "NaN or inf"),
    }
    files["garbage"][0].write_bytes(b"\x00\x01 not safetensors at all")
    save_file({"obs": ok}, str(files["truncated"][0]))
    data = files["truncated"][0].read_bytes()
    files["truncated"][0].write_bytes(data[:-7])
    save_file({"observations": ok}, str(files["no_key"][0]))
    save_file({"obs": torch.rand(3, 4)}, str(files["shape"][0]))
    save_file({"obs": torch.rand(3, 2, 5)}, str(files["obs_dim"][0]))
    save_file({"obs": torch.full((3, 2, 4), float("nan"))}, str(files["nan"][0]))
    return files


def test_bad_obs_files_fail_in_one_line_naming_the_file(pol_dir, tmp_path):
    for name, (path, why) in _bad_obs_files(tmp_path).items():
        for command in (["calibrate", "--out", str(tmp_path / "cal.json")], ["eval", "--calls", "1"]):
            result = runner.invoke(app, [*command, "--policy", str(pol_dir), "--obs", str(path)])
            line = _one_error_line(result)
            assert str(path) in line and re.search(why, line), (name, line)
    assert not (tmp_path / "cal.json").exists()


def test_load_observations_names_the_file(pol_dir, tmp_path):
    files = _bad_obs_files(tmp_path)
    policy = tiny_diffusion_policy(steps=4)
    for name, (path, why) in files.items():
        with pytest.raises((ValueError, KeyError)) as info:
            load_observations(path, policy=policy)
        text = info.value.args[0]
        assert str(path) in text and re.search(why, text), (name, text)
    good = tmp_path / "good.safetensors"
    obs = torch.arange(24, dtype=torch.int64).reshape(3, 2, 4)
    save_file({"obs": obs}, str(good))
    assert torch.equal(load_observations(good, policy=policy), obs.float())  # ints are read as floats


def test_obs_with_fewer_rows_than_the_batch_is_refused(pol_dir, tmp_path):
    path = tmp_path / "two.safetensors"
    save_file({"obs": torch.rand(2, 2, 4)}, str(path))
    result = runner.invoke(app, ["eval", "--policy", str(pol_dir), "--obs", str(path), "--batch", "3"])
    line = _one_error_line(result)
    assert str(path) in line and "holds 2 observations; --batch 3" in line


def test_out_that_is_a_directory_is_refused_before_loading(tmp_path):
    (tmp_path / "cal").mkdir()
    result = runner.invoke(app, ["calibrate", "--policy", str(tmp_path / "nothing"), "--out", str(tmp_path / "cal")])
    line = _one_error_line(result)
    assert "--out" in line and "is a directory" in line


def test_quick_default_calibration_prints_threads_and_settings(pol_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("POLICYLENS_THREADS", raising=False)
    torch.set_num_threads(2)
    result = runner.invoke(app, ["calibrate", "--policy", str(pol_dir), "--out", str(tmp_path / "cal.json")])
    assert result.exit_code == 0, result.output
    assert torch.get_num_threads() == 1
    text = " ".join(result.stdout.split())
    assert "torch threads: 1" in text
    samples = QUICK_OBS * QUICK_SEEDS
    assert f"{QUICK_OBS} observations (random in the policy's range) x {QUICK_SEEDS} noise seeds = {samples}" in text
    assert "4 denoising steps, S=10, metric cosine, n_bu 0" in text
    assert re.search(r"wrote \S+cal\.json in \d+\.\d s", text)
    assert json.loads((tmp_path / "cal.json").read_text())["num_samples"] == samples == 16


def test_threads_option_and_environment(pol_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("POLICYLENS_THREADS", raising=False)
    args = ["eval", "--policy", str(pol_dir), "--calls", "1", "--mode", "uniform", "--num-updates", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "torch threads: 1" in text and "batch 1 (random in the policy's range), 1 timed calls per mode" in text
    # more threads are set before the policy loads (a missing policy ends the command there: no slow timing)
    missing = ["--policy", str(tmp_path / "missing")]
    for command in (["eval", "--calls", "1"], ["calibrate", "--out", str(tmp_path / "c.json")]):
        assert runner.invoke(app, [*command, *missing, "--threads", "2"]).exit_code == 2
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("POLICYLENS_THREADS", "3")
        assert runner.invoke(app, [*command, *missing]).exit_code == 2
        assert torch.get_num_threads() == 3
        monkeypatch.delenv("POLICYLENS_THREADS")
        assert runner.invoke(app, [*command, *missing]).exit_code == 2
        assert torch.get_num_threads() == 1


def test_progress_counts_denoising_steps(capsys):
    policy = tiny_diffusion_policy(steps=10)
    calibrate(policy, torch.randn(4, 2, 4), num_updates=2, batch_size=2, num_seeds=1, progress=True)
    err = capsys.readouterr().err
    assert "BAC calibration (4 obs x 1 seeds, batch 2)" in err and "20/20" in err

    def run_ddim(p, o, g):  # 6 steps per run, not the policy's 10: the total is corrected after run one
        p.predict_action(o, generator=g, sampler="ddim", num_inference_steps=6)

    calibrate(policy, torch.randn(4, 2, 4), num_updates=2, batch_size=2, run_fn=run_ddim, progress=True)
    err = capsys.readouterr().err
    assert "12/12" in err and "20/20" not in err


def test_calibrate_checks_its_arguments_first():
    policy = tiny_diffusion_policy(steps=4)
    for kwargs, match in (
        ({"batch_size": 0}, "batch_size=0"),
        ({"num_seeds": 0}, "num_seeds=0"),
        ({"num_updates": 0}, "num_updates=0"),
        ({"n_bu": -1}, "n_bu=-1"),
    ):
        with pytest.raises(ValueError, match=match):
            calibrate(policy, torch.randn(2, 2, 4), progress=False, **kwargs)
    with pytest.raises(ValueError, match="observations is empty"):
        calibrate(policy, torch.randn(0, 2, 4), progress=False)


def test_l1_matrix_against_a_float64_loop():
    g = torch.Generator().manual_seed(0)
    K, B, F = 7, 3, 300
    scale = torch.logspace(-3, 2, F, dtype=torch.float64)  # features of very different sizes
    feats = (torch.randn(K, B, F, generator=g, dtype=torch.float64) * scale).float()
    got = step_matrices(feats, ("l1",))["l1"]
    x = feats.double().numpy()
    want = np.zeros((K, K))
    for a in range(K):
        for t in range(K):
            total = 0.0
            for b in range(B):
                total += sum(abs(float(x[a, b, f]) - float(x[t, b, f])) for f in range(F)) / F
            want[a, t] = total / B
    assert got.dtype == torch.float64 and got.shape == (K, K)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=0)
    assert np.array_equal(got.numpy(), got.numpy().T) and not got.diagonal().any()
    # float64 features stay float64 all the way
    np.testing.assert_allclose(step_matrices(feats.double(), ("l1",))["l1"].numpy(), want, rtol=1e-12)


def test_evaluate_mode_with_a_given_reference_measures_the_same_error():
    from policylens.accel import BACConfig

    policy = tiny_diffusion_policy(steps=6)
    obs = torch.randn(2, 2, 4)
    reference = predict(policy, obs, 3)
    cfg = BACConfig(mode="uniform", num_updates=2)
    a = evaluate_mode(policy, cfg, obs, calls=1, seed=3)
    b = evaluate_mode(policy, cfg, obs, calls=1, seed=3, reference=reference, warmup=0)
    assert a["mse"] == b["mse"] > 0 and a["max_abs"] == b["max_abs"] and a["skipped"] == b["skipped"] > 0
    plain = evaluate_mode(policy, None, obs, calls=1, seed=3, reference=reference)
    assert plain["mse"] == 0 and plain["skipped"] == 0
    with pytest.raises(ValueError, match="calls=0"):
        evaluate_mode(policy, None, obs, calls=0)
