"""``AlignDataset`` / ``make_loader``: points joined with per-frame and window feature stores by
(episode, step); patch indices equal ``uv_to_grid``'s; mismatched records fail clearly; the held-out
split is by episode; a worker-backed loader gives the same batches."""

from pathlib import Path

import numpy as np
import pytest
import torch

from policylens.align import (
    AlignDataset,
    PatchEncoder,
    PreprocessRecord,
    build_encoder,
    episode_split,
    extract_features,
    grid_of,
    ingest_depth,
    ingest_ply,
    make_loader,
    register_encoder,
    uv_to_grid,
)
from policylens.data import CameraCalibration, Episode
from policylens.data.pointcloud import PointCloud, write_ply
from policylens.store import StoreMeta, build_store, open_store

H, W = 24, 32


class Window2(PatchEncoder):
    """Two-frame encoder: patch (r, c) of slot j -> [frame mean, r, c]."""

    name, patch_size, window, mean, std = "window2", 8, 2, (0.0,) * 3, (1.0,) * 3

    def __init__(self, model=None):
        self.model = None

    def record(self, frame_size):
        return PreprocessRecord.resize(frame_size, 16, 8, encoder=self.name)

    def features(self, pixels):  # (B, T, 3, 16, 16) -> (B, T, 2, 2, 3)
        m = pixels.mean((2, 3, 4))[..., None, None, None].expand(*pixels.shape[:2], 2, 2, 1)
        r, c = torch.meshgrid(torch.arange(2.0), torch.arange(2.0), indexing="ij")
        return torch.cat([m, r.expand_as(m[..., 0])[..., None], c.expand_as(m[..., 0])[..., None]], -1)


register_encoder("window2", Window2)


def make_episodes(lengths=(4, 3, 5)):
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


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("align")
    eps = make_episodes()
    kw = {"camera": "cam", "dtype": "float32", "progress": False}
    for name, src in (("dinov2", None), ("siglip", None), ("window2", None)):
        enc, _ = build_encoder(name, src)
        extract_features(eps, enc, root / name, **kw)
    ingest_depth(eps, root / "points", camera="cam", points=300, stride=2, progress=False)
    return root


def test_patch_indices_equal_uv_to_grid_and_features_join_by_step(stores):
    ds = AlignDataset(stores / "points", {"dinov2": stores / "dinov2", "siglip": stores / "siglip"}, window=2)
    assert len(ds) == 2 + 2 + 3 and ds.episodes == [0, 1, 2]
    grids = {k: grid_of(open_store(stores / k)) for k in ("dinov2", "siglip")}
    pts = open_store(stores / "points").get_batch(slice(None))
    row_of = {
        (e[0], s[0]): r for r, (e, s) in enumerate(zip(pts["episode"].tolist(), pts["step"].tolist(), strict=True))
    }
    for i in range(len(ds)):
        it = ds[i]
        rows = [row_of[(int(it["episode"]), int(t))] for t in it["step"]]
        torch.testing.assert_close(it["xyz"], pts["xyz"][rows])
        torch.testing.assert_close(it["uv"], pts["uv"][rows])
        for k in ("dinov2", "siglip"):
            torch.testing.assert_close(it["features"][k], grids[k][rows, 0])
            for j in range(2):
                g = uv_to_grid(it["uv"][j], ds.records[k])
                ok = g.valid & it["valid"][j]
                assert torch.equal(it["patch_valid"][k][j], ok)
                assert torch.equal(it["patch_index"][k][j], torch.where(ok, g.index, -1))
    assert it["step"].tolist() == [3, 4] and ds.items[2, :, 1].tolist() == [0, 1]  # last window ends at the end
    assert it["patch_valid"]["dinov2"].any() and not it["patch_valid"]["dinov2"].all()  # centre crop drops sides


def test_window_store_sets_the_items(stores):
    ds = AlignDataset(stores / "points", [stores / "window2", stores / "dinov2"])
    wins = open_store(stores / "window2").get_batch(slice(None))
    assert ds.names == ["window2", "dinov2"] and len(ds) == len(wins["step"])
    b = ds.get_batch([0, 3])
    assert b["step"].tolist() == wins["step"][[0, 3]].tolist() and b["features"]["window2"].shape == (2, 2, 2, 2, 3)
    torch.testing.assert_close(b["features"]["window2"], grid_of(open_store(stores / "window2"))[[0, 3]])
    g = uv_to_grid(b["uv"].reshape(-1, 2), ds.records["window2"])
    assert torch.equal(
        b["patch_index"]["window2"].reshape(-1), torch.where(g.valid & b["valid"].reshape(-1), g.index, -1)
    )


def test_mismatched_records_and_missing_frames_fail_clearly(stores, tmp_path):
    pc = PointCloud(np.zeros((3, 3)), np.zeros((3, 3)), np.ones((3, 2)), np.zeros(3))
    write_ply(tmp_path / "p/e0_s0.ply", pc)
    ingest_ply(str(tmp_path / "p/e{episode}_s{step}.ply"), tmp_path / "small", frame_size=(10, 10), progress=False)
    with pytest.raises(ValueError, match="records do not match"):
        AlignDataset(tmp_path / "small", [stores / "dinov2"])
    ingest_ply(str(tmp_path / "p/e{episode}_s{step}.ply"), tmp_path / "wrist", camera="wrist", progress=False)
    with pytest.raises(ValueError, match="camera 'cam' but the points .* camera 'wrist'"):
        AlignDataset(tmp_path / "wrist", [stores / "dinov2"])
    write_ply(tmp_path / "q/e7_s0.ply", pc)
    ingest_ply(str(tmp_path / "q/e{episode}_s{step}.ply"), tmp_path / "far", progress=False)
    with pytest.raises(ValueError, match=r"lacks \(episode, step\) \[\(7, 0\)\]"):
        AlignDataset(tmp_path / "far", [stores / "dinov2"])
    with pytest.raises(ValueError, match="is a 'frames' store; pass an `align ingest` store"):
        AlignDataset(stores / "dinov2", [stores / "points"])
    src = [{"i": torch.tensor(i)} for i in range(2)]
    build_store(
        tmp_path / "plain",
        src,
        lambda b: {"target_features": b["i"][:, None].float()},
        StoreMeta(kind="hidden_feature"),
        progress=False,
    )
    with pytest.raises(ValueError, match="not written by `policylens align`"):
        AlignDataset(stores / "points", [tmp_path / "plain"])


def test_episode_split_and_loaders(stores):
    train, held = episode_split([0, 1, 2, 2, 1], held_out=0.34, seed=1)
    assert sorted(train + held) == [0, 1, 2] and len(held) == 1 and episode_split([0, 1, 2], 0.34, 1) == (train, held)
    feats = {"dinov2": stores / "dinov2"}
    kw = {"batch_size": 3, "shuffle": False, "held_out": 0.34, "seed": 1}
    seen = {
        s: {int(e) for b in make_loader(stores / "points", feats, split=s, **kw) for e in b["episode"]}
        for s in ("train", "held_out")
    }
    assert seen == {"train": set(train), "held_out": set(held)}
    plain = list(make_loader(stores / "points", feats, batch_size=4, shuffle=False))
    workers = list(make_loader(stores / "points", feats, batch_size=4, shuffle=False, num_workers=1, pin_memory=False))
    assert len(plain) == len(workers) == 3
    for a, b in zip(plain, workers, strict=True):
        torch.testing.assert_close(a["xyz"], b["xyz"])
        torch.testing.assert_close(a["features"]["dinov2"], b["features"]["dinov2"])
        assert torch.equal(a["patch_index"]["dinov2"], b["patch_index"]["dinov2"])
    with pytest.raises(ValueError, match="split='test'"):
        make_loader(stores / "points", feats, split="test")
