"""Features are stored in one of the store's three dtypes: anything else is refused where a store is
described (``StoreMeta``) and by the CLI's choices, and ``verify`` fails a store whose arrays or
manifest disagree with that dtype (an ``--dtype int8`` store, written before the check, included)."""

import json

import pytest
from _store_fixtures import build
from typer.testing import CliRunner

from policylens.cli._cache import app
from policylens.store import STORE_DTYPES, StoreError, StoreMeta, verify_store

runner = CliRunner()


def _unboxed(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def test_the_three_dtypes_and_nothing_else():
    assert STORE_DTYPES == ("float16", "bfloat16", "float32")
    for dtype in STORE_DTYPES:
        assert StoreMeta(kind="hidden_feature", dtype=dtype).dtype == dtype
    for dtype in ("int8", "float64", "int64", "uint8"):  # storable as fields, not as the feature dtype
        with pytest.raises(StoreError, match=rf"StoreMeta.dtype='{dtype}'.*\['float16', 'bfloat16', 'float32'\]"):
            StoreMeta(kind="hidden_feature", dtype=dtype)


def test_cache_build_refuses_int8_before_anything_runs(tmp_path):
    out = tmp_path / "s"
    res = runner.invoke(app, ["build", "--dataset", "synthetic:2", "--dtype", "int8", "--out", str(out)])
    assert res.exit_code == 2
    text = _unboxed(res.output)
    assert "Invalid value for '--dtype'" in text and "'int8' is not one of 'float16', 'bfloat16', 'float32'" in text
    assert not out.exists()
    page = runner.invoke(app, ["build", "--help"], env={"COLUMNS": "250"}).output
    assert f"--dtype [{'|'.join(STORE_DTYPES)}] " in " ".join(page.split())  # the help lists the tuple


def _manifest(root):
    return json.loads((root / "manifest.json").read_text())


def test_verify_fails_a_store_whose_dtype_the_store_does_not_support(tmp_path):
    """What an ``--dtype int8`` build used to write: int8 features ({-1, 0, 1}), manifest dtype int8."""
    root = tmp_path / "s"
    build(root, "hidden_feature", "float16")
    assert verify_store(root).ok
    m = _manifest(root)
    m["meta"]["dtype"] = "int8"
    (root / "manifest.json").write_text(json.dumps(m))
    rep = verify_store(root)
    assert not rep.ok
    assert any(
        p.startswith("manifest meta.dtype is 'int8', not a dtype the store keeps features in") and "NEW_PATH" in p
        for p in rep.problems
    ), rep.problems
    assert any(
        "field 'target_features': the manifest's field dtype float16 differs from the store's dtype" in p
        for p in rep.problems
    )
    res = runner.invoke(app, ["verify", str(root)])
    assert res.exit_code == 1 and "meta.dtype is 'int8'" in res.output and "OK" not in res.output


def test_verify_names_an_array_stored_in_another_dtype(tmp_path):
    root = tmp_path / "s"
    build(root, "hidden_feature", "float16", store_inputs=["input_ids"])
    zarr_json = root / "data" / "target_features" / "zarr.json"
    z = json.loads(zarr_json.read_text())
    z["data_type"] = "int16"  # same item size: only the dtype disagrees
    zarr_json.write_text(json.dumps(z))
    rep = verify_store(root)
    assert not rep.ok
    (problem,) = rep.problems
    assert problem.startswith(f"field 'target_features': array {zarr_json} has dtype int16, but the manifest says ")
    assert "float16 (stored as float16)" in problem and "policylens cache build ... --out NEW_PATH" in problem
