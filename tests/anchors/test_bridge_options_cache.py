"""``cache build --kind bridge`` with the bridge options, from the library and the CLI: the
manifest records them (and ``build_command`` gives them back), the stored features equal an
independent reference on the shipped tiny_vla, bad values fail in one line before the policy
loads where they can, and a store built with other options is not resumed."""

import json

import pytest
import torch
from _bridge_reference import reference_features
from typer.testing import CliRunner

import policylens.models
from policylens.anchors import build_cache
from policylens.cli._cache import BRIDGE_POOLING_CHOICES as CLI_POOLINGS
from policylens.cli._cache import app, build_command
from policylens.models import load_model
from policylens.store import StoreError, open_store, read_manifest

runner = CliRunner()
N = 3  # samples


def _one_line(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)  # as build_cache loads it
    return load_model("tiny_vla").eval()


@pytest.fixture
def no_policy(monkeypatch):
    def load(*_a, **_k):
        raise AssertionError("the policy was loaded before the inputs were checked")

    monkeypatch.setattr(policylens.models, "load_model", load)


def _samples(model, n: int) -> dict:
    return {
        k: torch.cat([model.example_batch(1, seed=i)[k] for i in range(n)])
        for k in ("pixel_values", "input_ids", "attention_mask", "state")
    }


def test_library_build_records_the_options_and_matches_the_reference(teacher, tmp_path):
    out = tmp_path / "steps"
    options = {"flow_steps": (0, 4, 9), "action": True}
    m = build_cache("tiny_vla", f"synthetic:{N}", str(out), kind="bridge", dtype="float32", batch_size=2,
                    progress=False, bridge=options)  # fmt: skip
    assert m["meta"]["bridge"]["flow_steps"] == [0, 4, 9] and m["meta"]["bridge"]["action"] is True
    assert m["meta"]["taps"] == ["llm.layers.2.out", "expert.layers.3.out", "action_out.out"]
    width = 128 + 3 * 64 + 3 * 8 * 7  # C_R, C_AQ at 3 steps, the (8, 7) velocity at 3 steps
    assert m["fields"]["target_features"]["shape"] == [width]
    assert build_command(str(out)) == (
        f"policylens cache build --policy tiny_vla --dataset synthetic:{N} --kind bridge --bridge-flow-steps 0,4,9 "
        f"--bridge-action --dtype float32 --batch-size 2 --out {out}"
    )
    stored = open_store(out)[list(range(N))]["target_features"]
    want = reference_features(teacher, _samples(teacher, N), range(N), raw_layer=2, query_layer=3,
                              steps=[0, 4, 9], action=True)  # fmt: skip
    torch.testing.assert_close(stored.double(), want, atol=1e-5, rtol=1e-5)
    again = build_cache("tiny_vla", f"synthetic:{N}", str(out), kind="bridge", dtype="float32", batch_size=2,
                        progress=False, bridge=dict(options))  # fmt: skip
    assert again["complete"] == [[0, N]]  # the same options resume


def test_a_store_built_with_other_bridge_options_is_refused_before_the_policy_loads(tmp_path, monkeypatch):
    out = str(tmp_path / "b")
    build_cache("tiny_vla", "synthetic:2", out, kind="bridge", batch_size=2, progress=False)

    def load(*_a, **_k):
        raise AssertionError("the policy was loaded before the store's settings were compared")

    monkeypatch.setattr(policylens.models, "load_model", load)
    with pytest.raises(StoreError, match=r"other bridge settings \(flow_steps \(0,\) vs 'all'; action False vs True\)"):
        build_cache("tiny_vla", "synthetic:2", out, kind="bridge", bridge={"flow_steps": "all", "action": True})
    res = runner.invoke(app, ["build", "--kind", "bridge", "--dataset", "synthetic:2", "--batch-size", "2",
                              "--bridge-pooling", "none", "--out", out])  # fmt: skip
    assert res.exit_code == 2 and "pooling 'masked_mean' vs 'none'" in _one_line(res.output)


def test_cli_builds_every_step_unpooled_with_the_action_and_the_reference_agrees(teacher, tmp_path):
    out = tmp_path / "all"
    args = ["build", "--kind", "bridge", "--dataset", "synthetic:2", "--dtype", "float32", "--batch-size", "2",
            "--bridge-flow-steps", "all", "--bridge-pooling", "none", "--bridge-action", "--out", str(out)]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "torch threads: 1" in res.output
    m = read_manifest(out)
    assert {k: m["meta"]["bridge"][k] for k in ("flow_steps", "pooling", "action")} == {
        "flow_steps": "all",
        "pooling": "none",
        "action": True,
    }
    width = 128 * 128 + 10 * 8 * 64 + 10 * 8 * 7  # 2 cameras x 64 patches, 8 queries, 10 steps, (8, 7) velocities
    assert m["fields"]["target_features"]["shape"] == [width]
    assert "--bridge-flow-steps all --bridge-pooling none --bridge-action" in build_command(str(out))
    stored = open_store(out)[[0, 1]]["target_features"]
    want = reference_features(teacher, _samples(teacher, 2), [0, 1], raw_layer=2, query_layer=3, steps=range(10),
                              pooling="none", action=True)  # fmt: skip
    torch.testing.assert_close(stored.double(), want, atol=1e-5, rtol=1e-5)


def test_cli_builds_the_action_output_alone_and_the_reference_agrees(teacher, tmp_path):
    out = tmp_path / "action"
    args = ["build", "--kind", "bridge", "--dataset", "synthetic:2", "--dtype", "float32", "--batch-size", "2",
            "--bridge-action-only", "--out", str(out)]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    m = read_manifest(out)
    assert m["meta"]["bridge"]["hidden"] is False and m["meta"]["bridge"]["action"] is True
    assert m["fields"]["target_features"]["shape"] == [8 * 7]  # the (8, 7) velocity at step 0, no C_R / C_AQ
    assert build_command(str(out)).endswith("--kind bridge --bridge-action-only --dtype float32 --batch-size 2 "
                                            f"--out {out}")  # fmt: skip
    stored = open_store(out)[[0, 1]]["target_features"]
    full = reference_features(teacher, _samples(teacher, 2), [0, 1], raw_layer=2, query_layer=3, steps=[0],
                              action=True)  # fmt: skip
    torch.testing.assert_close(stored.double(), full[:, 128 + 64 :], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bridge-flow-steps", "0,x"], "error: --bridge-flow-steps '0,x': expected comma-separated flow-step"),
        (["--bridge-flow-steps", "4,0"], "error: BridgeSpec.flow_steps=(4, 0); expected increasing flow-step indices"),
        (["--bridge-flow-steps", "-1"], "error: BridgeSpec.flow_steps=(-1,); expected increasing flow-step indices"),
        (["--bridge-pooling", "median"], "'median' is not one of 'masked_mean', 'first', 'last', 'none'"),
        (["--kind", "hidden_feature", "--bridge-action"], "--bridge-* options (action) apply to --kind bridge"),
    ],
)
def test_bad_bridge_options_fail_in_one_line_before_the_policy_loads(tmp_path, no_policy, args, message):
    out = tmp_path / "never"
    res = runner.invoke(app, ["build", "--kind", "bridge", "--dataset", "synthetic:2", *args, "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert message in _one_line(res.output)
    assert "Traceback" not in res.output and not out.exists()


def test_the_library_checks_bridge_options_before_loading(tmp_path, no_policy):
    out = str(tmp_path / "never")
    for kind, bridge, match in (
        ("hidden_feature", {"pooling": "none"}, r"bridge options apply to kind='bridge' only \(got kind='hidden_featu"),
        ("bridge", {"raw_layer": 1}, r"bridge options \['raw_layer'\] are not BridgeSpec settings; expected any of"),
        ("bridge", {"action": 1}, "BridgeSpec.action=1; expected true or false"),
        ("bridge", {"flow_steps": "every"}, r"BridgeSpec.flow_steps='every'; expected .* or 'all'"),
    ):
        with pytest.raises(StoreError, match=match):
            build_cache("tiny_vla", "synthetic:2", out, kind=kind, bridge=bridge, progress=False)


def test_steps_past_the_models_schedule_fail_before_the_store_exists(tmp_path):
    out = tmp_path / "late"
    res = runner.invoke(app, ["build", "--kind", "bridge", "--dataset", "synthetic:2", "--bridge-flow-steps", "0,10",
                              "--out", str(out)])  # fmt: skip
    assert res.exit_code == 2
    assert "BridgeSpec.flow_steps=[0, 10]: the model runs 10 flow steps (indices 0..9)" in _one_line(res.output)
    assert not out.exists()


def test_the_cli_offers_the_specs_poolings():
    from policylens.anchors import BRIDGE_POOLING_CHOICES

    assert CLI_POOLINGS == BRIDGE_POOLING_CHOICES


def test_a_default_bridge_manifest_is_the_one_written_before(tmp_path):
    out = tmp_path / "d"
    build_cache("tiny_vla", "synthetic:1", str(out), kind="bridge", batch_size=1, progress=False)
    recorded = json.loads((out / "manifest.json").read_text())["meta"]["bridge"]
    assert sorted(recorded) == sorted(
        ["raw_layer", "query_layer", "raw_positions", "query_positions", "pooling", "noise_seed", "noise_per_sample"]
    )
    assert build_command(str(out)).endswith(f"--kind bridge --dtype float16 --batch-size 1 --out {out}")
