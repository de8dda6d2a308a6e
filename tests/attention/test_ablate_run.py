"""The ablation battery end to end on a tiny TinyVLA: open loop over simulated episodes and closed loop
in the simulator (paired on the same layouts and noise), resumable, summaries and the plot, the
unablated closed loop equal to the simulator's own VLA agent, and the commands with their errors."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from policylens.attention import AblatedChunks, AblationConfig, run_ablation
from policylens.attention import _ablate as ablate_mod
from policylens.attention._ablate_conditions import Condition
from policylens.models import TinyVLA, TinyVLAConfig
from policylens.runs import RunDirError, save_checkpoint
from policylens.sim import VLAChunks

CONDS = ("hand_camera:black", "hand_camera:time", "instruction:other", "cameras:swap", "hand_camera:removed")
CFG = AblationConfig(conditions=CONDS, layers=(0, 1), every=3, sim_episodes=2, sim_batch=2, max_steps=4)


@pytest.fixture(scope="module")
def vla():
    torch.manual_seed(0)
    return TinyVLA(TinyVLAConfig(image_size=28, patch_size=14, layers=2, flow_steps=3)).eval()


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    from policylens.sim.pybullet import generate_episodes

    root = tmp_path_factory.mktemp("ablate") / "eps"
    generate_episodes("reach", 2, root, seed=0, fmt="droid", image_size=28, progress=False)
    return f"droid:{root}"


@pytest.fixture(scope="module")
def run(vla, episodes, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablate_out")
    return out, run_ablation(vla, episodes, out, CFG, progress=False, n_boot=50)


def test_outputs_conditions_and_tables(run):
    out, result = run
    assert json.loads((out / "ablation.json").read_text()) == json.loads(json.dumps(result))
    assert (out / "ablation.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (out / "ablation" / "episodes").iterdir()) == ["000000.json", "000001.json"]
    notes = {c["condition"]: c for c in result["conditions"]}
    assert not notes["hand_camera:removed"]["available"] and "missing-camera" in notes["hand_camera:removed"]["note"]
    ran = [c for c in CONDS if c != "hand_camera:removed"]
    assert [r["condition"] for r in result["closed_loop"]] == ["unablated", *ran]
    assert all(r["n"] == 2 and r["n_episodes"] == 2 for r in result["closed_loop"])
    rows = result["open_loop"]["rows"]
    assert [r["condition"] for r in rows] == ["noise floor (seed + 1)", *ran] and result["open_loop"][
        "origin"
    ] == "state"
    assert rows[0]["si_mse"]["estimate"] > 0  # two noise seeds differ
    attention = {(r["condition"], r["layer"]) for r in result["attention"]}
    assert attention == {(c, li) for c in ["unablated", *ran] for li in (0, 1)}
    black = next(r for r in result["attention"] if r["condition"] == "hand_camera:black" and r["layer"] == 1)
    assert black["ablated cameras"] is not None and black["pad"]["estimate"] < 1e-6
    assert {(b["other"], b["mode"]) for b in result["black_vs_others"]} == {
        ("hand_camera:time", "closed loop"), ("hand_camera:time", "open loop"),
    }  # fmt: skip


def test_each_episode_record_holds_every_keyframe(run):
    out, _ = run
    rec = json.loads((out / "ablation" / "episodes" / "000000.json").read_text())
    n = len(rec["keyframes"])
    assert rec["keyframes"][:2] == [0, 3] and rec["other_instruction"] != rec["instruction"]
    assert len(rec["noise_floor"]["si_mse"]) == n and len(rec["change"]["cameras:swap"]["cosine"]) == n
    assert set(rec["mass"]) == {"none", *(c for c in CONDS if c != "hand_camera:removed")}
    assert set(rec["mass"]["none"]["L1"]) == {"pad", "sink", "instruction", "image[varied_camera_1]",
                                              "image[hand_camera]"}  # fmt: skip


def test_a_rerun_resumes_and_other_settings_are_refused(run, vla, episodes, monkeypatch):
    out, result = run

    def boom(*a, **k):
        raise AssertionError("recomputed a finished part")

    monkeypatch.setattr(ablate_mod, "measure_episode", boom)
    monkeypatch.setattr(ablate_mod, "rollout_condition", boom)
    again = run_ablation(vla, episodes, out, CFG, progress=False, n_boot=50)
    assert again["closed_loop"] == result["closed_loop"] and again["open_loop"] == result["open_loop"]
    (out / "ablation" / "episodes" / "000001.json").unlink()  # as if killed before the episode finished
    with pytest.raises(AssertionError, match="recomputed"):
        run_ablation(vla, episodes, out, CFG, progress=False)
    other = AblationConfig(**{**CFG.__dict__, "seed": 1})
    with pytest.raises(RunDirError, match="run.json"):
        run_ablation(vla, episodes, out, other, progress=False)


def test_closed_loop_pairs_episodes_on_the_same_layouts(vla, tmp_path, monkeypatch):
    seen: dict = {}
    original = AblatedChunks.predict_batch

    def record(self, windows, slots):
        for w, s in zip(windows, slots, strict=True):
            key = (self.condition.name if self.condition else "none", self.inner.episodes[s])
            seen.setdefault(key, (w[-1]["instruction"], np.asarray(w[-1]["proprio"]).round(6).tolist()))
        return original(self, windows, slots)

    monkeypatch.setattr(AblatedChunks, "predict_batch", record)
    cfg = AblationConfig(conditions=("hand_camera:black",), layers=(1,), sim_episodes=3, sim_batch=2, max_steps=2)
    run_ablation(vla, None, tmp_path, cfg, progress=False, n_boot=20)
    for episode in range(3):  # the first observation of episode i is the same layout under both conditions
        assert seen[("none", episode)] == seen[("hand_camera:black", episode)]
    assert len({str(seen[("none", e)]) for e in range(3)}) == 3  # three different layouts


def test_unablated_chunks_equal_the_simulators_vla_agent_and_other_names_a_layout_object(vla):
    rng = np.random.default_rng(0)
    obs = [{"images": {c: rng.integers(0, 256, (28, 28, 3), dtype=np.uint8) for c in vla.config.cameras},
            "proprio": rng.normal(size=7).astype(np.float32), "instruction": "reach the red cube"}
           for _ in range(2)]  # fmt: skip
    plain, ours = VLAChunks(vla, seed=3), AblatedChunks(VLAChunks(vla, seed=3), None, "reach", 3)
    for p in (plain, ours):
        p.reset([0, 1], episodes=[4, 7])
    a, b = plain.predict_batch([[o] for o in obs], [0, 1]), ours.predict_batch([[o] for o in obs], [0, 1])
    assert np.array_equal(a, b)
    from policylens.sim.pybullet import SimEnv

    with SimEnv("reach", image_size=28, seed=3) as env:  # the evaluator's layout of episode 0 under seed 3
        from policylens.sim._seeds import eval_layout_seed

        spec = env.sample_layout(eval_layout_seed(3, 0))
    instruction = f"reach the {spec.objects[spec.target].name}"
    other = AblatedChunks(VLAChunks(vla, seed=3), Condition("instruction", "other"), "reach", 3)
    other.reset([0], episodes=[0])
    text = other._other(instruction, 0)
    assert text != instruction and text.removeprefix("reach the ") in [o.name for o in spec.objects]
    with pytest.raises(RuntimeError, match="layout seeds changed"):
        other._other("reach the nothing", 0)


def test_errors_are_checked_before_any_work(vla, episodes, tmp_path):
    with pytest.raises(ValueError, match="nothing to do"):
        run_ablation(vla, None, tmp_path / "a", AblationConfig(), progress=False)
    with pytest.raises(ValueError, match=r"layers=\[9\]"):
        run_ablation(vla, episodes, tmp_path / "a", AblationConfig(layers=(9,)), progress=False)
    with pytest.raises(ValueError, match="names no condition"):
        run_ablation(vla, episodes, tmp_path / "a", AblationConfig(conditions=("wrist:black",)), progress=False)
    with pytest.raises(ValueError, match="AblationConfig.every=0"):
        AblationConfig(every=0)
    assert not (tmp_path / "a").exists()


def test_ablate_command(vla, episodes, tmp_path):
    from policylens.cli.main import app

    ckpt = save_checkpoint(vla, tmp_path / "vla")
    runner = CliRunner()
    res = runner.invoke(app, ["attention", "ablate", "--out", str(tmp_path / "o"), "--policy", str(ckpt)])
    assert res.exit_code == 2 and "nothing to ablate" in res.output
    res = runner.invoke(app, ["attention", "ablate", "--out", str(tmp_path / "o"), "--episodes", episodes,
                              "--policy", str(ckpt), "--conditions", "wrist:black"])  # fmt: skip
    assert res.exit_code == 2 and "names no condition" in res.output and "Traceback" not in res.output
    args = ["attention", "ablate", "--out", str(tmp_path / "o"), "--episodes", episodes, "--policy", str(ckpt),
            "--conditions", "instruction:empty", "--layers", "1", "--every", "4", "--threads", "1",
            "--n-boot", "20"]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "torch threads: 1" in res.output and (tmp_path / "o" / "ablation.json").is_file()
    assert (tmp_path / "o" / "ablation.png").is_file()


def test_faithfulness_command(vla, episodes, tmp_path):
    from policylens.cli.main import app

    ckpt = save_checkpoint(vla, tmp_path / "vla")
    args = ["attention", "faithfulness", "--episodes", episodes, "--out", str(tmp_path / "f"), "--policy", str(ckpt),
            "--layers", "1", "--n-random", "1", "--threads", "1"]  # fmt: skip
    res = CliRunner().invoke(app, [*args, "--no-control"])
    assert res.exit_code == 0, res.output
    assert "torch threads: 1" in res.output and "| trained | 1 |" in res.output and "high − random" in res.output
    saved = json.loads((tmp_path / "f" / "faithfulness.json").read_text())
    assert [r["model"] for r in saved["rows"]] == ["trained"] and len(saved["tests"]) == 4
    res = CliRunner().invoke(app, [*args[:6], "--layers", "9"])
    assert res.exit_code == 2 and "layers=[9]" in res.output and "Traceback" not in res.output, res.output
