"""``_layout``: stores written with ``align`` layout version 1 (``hidden_state``, ``teacher_hidden``)
read exactly like version-2 ones (``patch_grid`` / ``point_cloud``) through ``grid_of``,
``AlignDataset``, ``make_loader`` and ``verify_align``, mixed or not; a layout from the future, one
whose kind does not match its version, or a grid that does not match the stored shape fail clearly."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from policylens.align import (
    AlignDataset,
    PatchEncoder,
    PreprocessRecord,
    build_encoder,
    extract_features,
    grid_of,
    ingest_depth,
    make_loader,
    register_encoder,
    verify_align,
)
from policylens.data import CameraCalibration, Episode
from policylens.store import StoreMeta, build_store, open_store

H, W = 24, 32


class Pair(PatchEncoder):
    """Two-frame encoder: patch (r, c) of slot j -> [frame mean, pair mean, r + c]."""

    name, patch_size, window, mean, std = "pair", 8, 2, (0.0,) * 3, (1.0,) * 3

    def __init__(self, model=None):
        self.model = None

    def record(self, frame_size):
        return PreprocessRecord.resize(frame_size, 16, 8, encoder=self.name)

    def features(self, pixels):  # (B, T, 3, 16, 16) -> (B, T, 2, 2, 3)
        b, t = pixels.shape[:2]
        m = pixels.mean((2, 3, 4))[..., None, None].expand(b, t, 2, 2)
        rc = (torch.arange(2.0)[:, None] + torch.arange(2.0)).expand(b, t, 2, 2)
        return torch.stack([m, m.mean(1, keepdim=True).expand_as(m), rc], -1)


register_encoder("pair", Pair)


def make_episodes(lengths=(4, 3)):
    rng = np.random.default_rng(0)
    K = np.array([[30.0, 0, W / 2], [0, 30.0, H / 2], [0, 0, 1]])
    out = []
    for e, n in enumerate(lengths):
        z = np.zeros((n, 7))
        frames = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(n)]
        ep = Episode(Path(f"mem/ep{e}"), "", z, z, {"cam": frames}, {"cam": CameraCalibration(K, np.eye(4))})
        ep.depths = {"cam": [rng.uniform(0.5, 2, (H, W)).astype(np.float32) for _ in range(n)]}
        out.append(ep)
    return out


def as_version_1(src: Path, dst: Path) -> None:
    """Rewrite the version-2 store ``src`` into ``dst`` as ``align extract`` / ``ingest`` wrote it at layout
    version 1: kind ``hidden_state``, ``teacher_hidden [1, T*Hf*Wf, C]`` / ``[1, N, 3]``, same inputs."""
    store = open_store(src)
    m = store.manifest
    info = {**m["meta"]["extra"]["align"], "version": 1}
    points = info["layout"] == "points"
    feature = "xyz" if points else "patch_features"
    inputs = [k for k, f in m["fields"].items() if f["role"] == "input"]
    rows = store.get_batch(slice(None))
    source = [{k: rows[k][i] for k in (feature, *inputs)} for i in range(len(store))]

    def run(batch):  # the version-1 writers' extractors
        x = batch[feature]  # (B, N, 3) or (B, T, Hf, Wf, C)
        return {"teacher_hidden": x[:, None] if points else x.reshape(len(x), 1, -1, x.shape[-1])}

    meta = StoreMeta(**{**m["meta"], "kind": "hidden_state", "extra": {"align": info}})
    build_store(dst, source, run, meta, batch_size=3, store_inputs=inputs, progress=False)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    eps = make_episodes()
    for name in ("dinov2", "pair"):
        extract_features(eps, build_encoder(name)[0], root / "v2" / name, camera="cam", dtype="float32", progress=False)
    ingest_depth(eps, root / "v2" / "points", camera="cam", points=64, stride=2, progress=False)
    for name in ("dinov2", "pair", "points"):
        as_version_1(root / "v2" / name, root / "v1" / name)
    return root


def same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            same(a[k], b[k])
    else:
        assert a.dtype == b.dtype and torch.equal(a, b)


def test_version_1_stores_are_what_the_old_writers_wrote(stores):
    for name, kind, field, shape, old_shape in (
        ("dinov2", "patch_grid", "patch_features", [1, 4, 4, 32], [1, 16, 32]),
        ("pair", "patch_grid", "patch_features", [2, 2, 2, 3], [1, 8, 3]),
        ("points", "point_cloud", "xyz", [64, 3], [1, 64, 3]),
    ):
        new, old = open_store(stores / "v2" / name), open_store(stores / "v1" / name)
        assert (new.kind, new.specs[field].shape, new.meta["extra"]["align"]["version"]) == (kind, shape, 2)
        assert (old.kind, old.specs["teacher_hidden"].shape, old.meta["extra"]["align"]["version"]) == (
            "hidden_state",
            old_shape,
            1,
        )
        assert set(old.specs) - {"teacher_hidden"} == set(new.specs) - {field}
        x = new.get_batch(slice(None))[field]
        assert torch.equal(old.get_batch(slice(None))["teacher_hidden"].flatten(1), x.flatten(1))  # same bytes


def test_grid_of_and_verify_read_both_versions_alike(stores):
    for name in ("dinov2", "pair"):
        same(grid_of(open_store(stores / "v1" / name)), grid_of(open_store(stores / "v2" / name)))
    for name in ("dinov2", "pair", "points"):
        old, new = verify_align(stores / "v1" / name), verify_align(stores / "v2" / name)
        assert old.ok and new.ok, (old.problems, new.problems)
        assert (old.layout, old.rows, old.nonfinite, old.warnings) == (new.layout, new.rows, 0, new.warnings)
        assert (old.adjacent_cos, old.window_cos) == (new.adjacent_cos, new.window_cos)
    assert verify_align(stores / "v1" / "pair").window_cos is not None


@pytest.mark.parametrize("points", ["v1", "v2"])
@pytest.mark.parametrize("features", ["v1", "v2", "mixed"])
def test_dataset_and_loader_join_either_version(stores, points, features):
    versions = {"v1": ("v1", "v1"), "v2": ("v2", "v2"), "mixed": ("v1", "v2")}[features]
    feats = [stores / v / k for v, k in zip(versions, ("pair", "dinov2"), strict=True)]
    ref_feats = [stores / "v2" / k for k in ("pair", "dinov2")]
    ds, ref = AlignDataset(stores / points / "points", feats), AlignDataset(stores / "v2" / "points", ref_feats)
    assert ds.names == ["pair", "dinov2"] and len(ds) == len(ref) == 4  # windows [0, 1] [2, 3] | [0, 1] [1, 2]
    got = ds.get_batch(range(4))
    same(got, ref.get_batch(range(4)))
    assert got["features"]["pair"].shape == (4, 2, 2, 2, 3) and got["xyz"].shape == (4, 2, 64, 3)
    assert got["features"]["dinov2"].shape == (4, 2, 4, 4, 32)
    frames = AlignDataset(stores / points / "points", feats[1:], window=3)  # frame store only: T rows per item
    same(frames.get_batch([0, 2]), AlignDataset(stores / "v2" / "points", ref_feats[1:], window=3).get_batch([0, 2]))
    kw = {"batch_size": 3, "shuffle": False, "pin_memory": False}
    loaders = (
        make_loader(stores / points / "points", feats, **kw),
        make_loader(stores / "v2" / "points", ref_feats, **kw),
    )
    for a, b in zip(*loaders, strict=True):
        same(a, b)


def edited(stores, tmp_path, name: str, **align) -> Path:
    """A copy of the version-2 store ``name`` whose ``meta.extra["align"]`` has ``align`` changed."""
    out = tmp_path / name
    shutil.copytree(stores / "v2" / name, out)
    path = out / "manifest.json"
    m = json.loads(path.read_text())
    m["meta"]["extra"]["align"].update(align)
    path.write_text(json.dumps(m))
    return out


def test_future_inconsistent_and_misshapen_layouts_fail_clearly(stores, tmp_path):
    future = edited(stores, tmp_path, "points", version=3)
    with pytest.raises(ValueError, match="align layout version 3 is newer than this policylens reads"):
        AlignDataset(future, [stores / "v2" / "dinov2"])
    assert "newer than this policylens" in verify_align(future).problems[0]
    liar = edited(stores, tmp_path, "dinov2", version=1)  # says version 1, is a patch_grid store
    with pytest.raises(
        ValueError, match="version 1 is written as kind 'hidden_state', but the store is kind 'patch_grid'"
    ):
        grid_of(open_store(liar))
    with pytest.raises(ValueError, match="is kind 'patch_grid'"):
        AlignDataset(stores / "v2" / "points", [liar])
    chk = verify_align(edited(stores, tmp_path, "pair", window=3))
    assert (
        not chk.ok
        and "per-row shape [2, 2, 2, 3]; the layout (window 3, grid 2x2) needs [3, 2, 2, C]" in chk.problems[0]
    )
