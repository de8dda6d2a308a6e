"""The store-kind and recipe registries: a job registers its kinds and recipes, the manifest names
the registering package, and a fresh process that opens the store imports it (old manifests
without that record too); the store and tap sources name none of the jobs' concepts."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import policylens.align  # registers patch_grid / point_cloud
import policylens.anchors  # noqa: F401  (registers the recipe bridge)
from policylens.store import (
    KINDS,
    RECIPES,
    StoreError,
    StoreMeta,
    build_store,
    open_store,
    read_manifest,
    recipe_hook,
    recipe_settings,
    register_recipe,
    register_store_kind,
    verify_store,
)

SRC = Path(__file__).resolve().parents[2] / "src" / "policylens"
JOBS = ("anchors", "retain", "align", "accel", "attention")

register_store_kind("toy_grid", field="toy_features", rank=2, description="toy_features [H, W]", module=__name__)


def _toy(batch):
    return {"target_features": batch["x"][:, None] * torch.ones(1, 4)}


def toy_student(model, manifest):
    return ("student", manifest["meta"]["toy_recipe"]["scale"])


register_recipe("toy_recipe", kind="hidden_feature", module=__name__, student=toy_student)


def _build_grid(root: Path, meta: StoreMeta, field: str, shape: tuple) -> dict:
    data = torch.arange(5 * int(torch.tensor(shape).prod())).float().view(5, *shape)
    return build_store(root, [{"i": i} for i in range(5)], lambda b: {field: data[b["i"]]}, meta, progress=False)


def test_a_registered_kind_is_written_detected_and_verified(tmp_path):
    m = _build_grid(tmp_path / "s", StoreMeta(kind="toy_grid", dtype="float32"), "toy_features", (2, 3))
    assert m["kind"] == "toy_grid" and m["modules"] == [__name__]
    ds = open_store(tmp_path / "s")
    assert ds.kind == "toy_grid" and ds[4]["toy_features"].shape == (2, 3)
    assert verify_store(tmp_path / "s").ok
    with pytest.raises(StoreError, match=r"kind='toy_grid' expects toy_features \[H, W\] \(rank 2\)"):
        _build_grid(tmp_path / "r", StoreMeta(kind="toy_grid", dtype="float32"), "toy_features", (6,))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "toy_grid2", "field": "target_features"}, "field 'target_features' is kind 'hidden_feature'"),
        ({"name": "hidden_feature", "field": "other"}, "'hidden_feature' is already registered by None"),
        ({"name": "toy_grid", "field": "toy_features", "module": "elsewhere"}, "already registered by test_kinds"),
        ({"name": "toy3", "field": "f3", "rank": 0}, "rank=0; expected >= 1"),
        ({"name": "toy3", "field": "f3", "module": "not a module"}, "module='not a module'"),
    ],
)
def test_registering_a_kind_refuses_clashes(kwargs, message):
    args = {"rank": 1, "description": "d", "module": __name__, **kwargs}
    with pytest.raises(StoreError, match=re.escape(message)):
        register_store_kind(args.pop("name"), **args)
    assert "toy3" not in KINDS and "toy_grid2" not in KINDS


def test_a_recipe_keeps_its_settings_opaque_and_hands_out_its_functions(tmp_path):
    meta = StoreMeta(kind="hidden_feature", pooling="toy_recipe", recipe={"toy_recipe": {"scale": 3, "deep": [1]}})
    m = build_store(tmp_path / "s", [{"x": float(i)} for i in range(4)], _toy, meta, progress=False)
    assert m["meta"]["toy_recipe"] == {"scale": 3, "deep": [1]} and "recipe" not in m["meta"]
    assert m["modules"] == [__name__]
    manifest = open_store(tmp_path / "s").manifest
    assert recipe_settings(manifest, "toy_recipe") == {"scale": 3, "deep": [1]}
    assert recipe_hook(manifest, "toy_recipe", "student")(None, manifest) == ("student", 3)
    build_store(tmp_path / "s", [{"x": float(i)} for i in range(4)], _toy, meta, progress=False)  # same: resumes
    other = StoreMeta(kind="hidden_feature", pooling="toy_recipe", recipe={"toy_recipe": {"scale": 4, "deep": [1]}})
    with pytest.raises(StoreError, match="built with different settings.*meta.toy_recipe"):
        build_store(tmp_path / "s", [{"x": float(i)} for i in range(4)], _toy, other, progress=False)
    with pytest.raises(StoreError, match="recipe 'toy_recipe' has no 'source' function; it has \\['student'\\]"):
        recipe_hook(manifest, "toy_recipe", "source")
    plain = StoreMeta(kind="hidden_feature")
    build_store(tmp_path / "p", [{"x": float(i)} for i in range(4)], _toy, plain, progress=False)
    with pytest.raises(StoreError, match="was not built with recipe 'toy_recipe'"):
        recipe_hook(read_manifest(tmp_path / "p"), "toy_recipe", "student", where=f"store {tmp_path / 'p'}")


@pytest.mark.parametrize(
    ("recipe", "message"),
    [
        ({"unknown_recipe": {}}, "'unknown_recipe', which no imported module registers"),
        ({"taps": {}}, "StoreMeta.recipe['taps'] must be a dict of settings under a name of its own"),
        ({"toy_recipe": 3}, "StoreMeta.recipe['toy_recipe'] must be a dict"),
    ],
)
def test_store_meta_checks_its_recipe(recipe, message):
    with pytest.raises(StoreError, match=re.escape(message)):
        StoreMeta(kind="hidden_feature", recipe=recipe)
    with pytest.raises(StoreError, match="writes kind='hidden_feature' stores, not kind='hidden_state'"):
        StoreMeta(kind="hidden_state", recipe={"toy_recipe": {}})
    with pytest.raises(StoreError, match="kind='pooled' is not a store kind"):
        StoreMeta(kind="pooled")


def _fresh_open(root: Path) -> list[str]:
    code = (
        "import sys; from policylens.store import open_store; "
        f"ds = open_store({str(root)!r}); print(ds.kind, 'policylens.align' in sys.modules, "
        "'policylens.accel' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_a_fresh_process_opens_a_job_kind_by_importing_its_package(tmp_path):
    """The manifest names policylens.align; a manifest written before that record (no ``modules``)
    opens too: policylens's subpackages are imported, those quoting the kind first, until one
    registers it."""
    meta = StoreMeta(kind="patch_grid", dtype="float32")
    m = _build_grid(tmp_path / "s", meta, "patch_features", (1, 2, 2, 3))
    assert m["modules"] == ["policylens.align"]
    assert _fresh_open(tmp_path / "s") == ["patch_grid", "True", "False"]
    path = tmp_path / "s" / "manifest.json"
    old = json.loads(path.read_text())
    del old["modules"]
    path.write_text(json.dumps(old))
    # the packages that quote the kind come first: accel, before align alphabetically, stays unimported
    assert _fresh_open(tmp_path / "s") == ["patch_grid", "True", "False"]


def test_only_policylens_packages_are_imported_from_a_manifest(tmp_path):
    _build_grid(tmp_path / "s", StoreMeta(kind="toy_grid", dtype="float32"), "toy_features", (2, 3))
    path = tmp_path / "s" / "manifest.json"
    m = json.loads(path.read_text())
    assert "this" not in sys.modules  # `import this` prints; it must stay unimported
    path.write_text(json.dumps({**m, "kind": "toy_unknown", "modules": ["this", "policylens.no_such_package"]}))
    with pytest.raises(StoreError, match=r"field 'kind' is 'toy_unknown', which no imported module registers") as err:
        open_store(tmp_path / "s")
    assert "importing policylens.no_such_package: No module named 'policylens.no_such_package'" in str(err.value)
    assert "this" not in sys.modules


def test_store_and_tap_sources_name_no_job_concept():
    """The core never names a job's kinds or recipes, nor imports a job."""
    concepts = sorted({k for k, v in KINDS.items() if v.module and v.module.startswith("policylens.")} | set(RECIPES))
    concepts = [c for c in concepts if not c.startswith("toy")]
    assert {"patch_grid", "point_cloud", "bridge"} <= set(concepts)
    words = re.compile(r"\b(" + "|".join(concepts) + r")\b|policylens\.(" + "|".join(JOBS) + r")\b")
    relative = re.compile(r"from \.\.(" + "|".join(JOBS) + r")\b")
    found = [
        f"{p.relative_to(SRC)}:{i}: {line.strip()}"
        for room in ("store", "tap")
        for p in sorted((SRC / room).glob("*.py"))
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if words.search(line) or relative.search(line)
    ]
    assert found == []
