"""``cache build`` checks every input it can before the policy loads: a missing dataset path, an
unknown kind, pooling or dtype, a malformed camera map, a store at --out built with other settings.
Each fails in one line, exit 2, and leaves no store behind."""

import pytest
from typer.testing import CliRunner

import policylens.models
from policylens.anchors import build_cache
from policylens.cli._cache import app
from policylens.store import StoreError

runner = CliRunner()


@pytest.fixture
def no_policy(monkeypatch):
    """Loading the policy is the long work: it must not be reached."""

    def load_model(*_a, **_k):
        raise AssertionError("the policy was loaded before the inputs were checked")

    monkeypatch.setattr(policylens.models, "load_model", load_model)


def _one_line(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--dataset", "droid:/no/such/folder"], "error: --dataset='droid:/no/such/folder': /no/such/folder does not"),
        (["--dataset", "no/such/folder"], "error: --dataset='no/such/folder': no/such/folder does not exist"),
        (["--dataset", "synthetic:many"], "N of synthetic:N must be a whole number >= 1"),
        (["--kind", "pooled"], "'pooled' is not one of 'hidden_feature', 'hidden_state', 'token_level', 'bridge'"),
        (["--pooling", "avg"], "'avg' is not one of 'mean_image_tokens', 'masked_mean', 'first', 'last', 'none'"),
        (["--dtype", "float64"], "'float64' is not one of 'float16', 'bfloat16', 'float32'"),
        (["--camera-map", "side"], "error: camera_map='side': entry 'side' is not DATASET_CAMERA=POLICY_CAMERA"),
        (["--camera-map", "side=hand_camera"], "so camera_map does not apply"),
    ],
)
def test_bad_input_fails_before_the_policy_loads(tmp_path, no_policy, args, message):
    out = tmp_path / "never"
    res = runner.invoke(app, ["build", "--dataset", "synthetic:4", *args, "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert message in _one_line(res.output)
    assert "Traceback" not in res.output and "AssertionError" not in res.output
    assert not out.exists()


def test_the_library_checks_the_same_before_loading(tmp_path, no_policy):
    out = str(tmp_path / "never")
    for kwargs, match in (
        ({"pooling": "avg"}, r"pooling='avg'; expected one of \['mean_image_tokens'"),
        ({"dtype": "int8"}, r"dtype='int8'; the store keeps features in one of \['float16', 'bfloat16', 'float32'\]"),
        ({"batch_size": 0}, "batch_size=0; expected >= 1"),
        ({"kind": "patch_grid"}, "align extract"),
    ):
        with pytest.raises(StoreError, match=match):
            build_cache("tiny_vla", "synthetic:4", out, **kwargs)


def test_a_store_built_with_other_settings_is_refused_before_the_policy_loads(tmp_path, monkeypatch):
    out = str(tmp_path / "s")
    assert runner.invoke(app, ["build", "--dataset", "synthetic:2", "--batch-size", "2", "--out", out]).exit_code == 0

    def load_model(*_a, **_k):
        raise AssertionError("the policy was loaded before the store's settings were compared")

    monkeypatch.setattr(policylens.models, "load_model", load_model)
    res = runner.invoke(app, ["build", "--dataset", "synthetic:2", "--dtype", "float32", "--layer", "1", "--out", out])
    assert res.exit_code == 2
    assert "built with different settings (meta.dtype 'float16' vs 'float32'; meta.layers [-2] vs [1])" in res.output
    res = runner.invoke(app, ["build", "--dataset", "synthetic:3", "--out", out])
    assert res.exit_code == 2 and "meta.dataset_id 'synthetic:2' vs 'synthetic:3'" in res.output
