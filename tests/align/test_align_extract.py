"""``extract_features``: the store round trip equals the encoder's own features, windows map back to
exact steps (a fake multi-frame encoder), resume recomputes only what is missing, clear errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from policylens.align import (
    PatchEncoder,
    PreprocessRecord,
    build_encoder,
    extract_features,
    frame_windows,
    grid_of,
    register_encoder,
)
from policylens.data import Episode
from policylens.store import open_store
from policylens.store._layout import marker


def episodes(lengths=(5, 3), size=(40, 60), seed=0, cam="cam"):
    rng = np.random.default_rng(seed)
    out = []
    for e, n in enumerate(lengths):
        frames = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]
        z = np.zeros((n, 7))
        out.append(Episode(Path(f"mem/ep{e}"), "", z, z, {cam: frames}))
    return out


class FakeVideo(PatchEncoder):
    """A multi-frame encoder: patch (r, c) of slot j -> [frame mean, window mean, r, c]; window 3."""

    name, patch_size, window, mean, std = "fake_video", 8, 3, (0.0,) * 3, (1.0,) * 3

    def __init__(self, model=None):
        self.model = None

    def record(self, frame_size):
        return PreprocessRecord.resize(frame_size, 16, 8, encoder=self.name)

    def features(self, pixels):  # (B, T, 3, 16, 16) -> (B, T, 2, 2, 4)
        b, t = pixels.shape[:2]
        frame = pixels.mean((2, 3, 4))  # (B, T)
        rows, cols = torch.meshgrid(torch.arange(2.0), torch.arange(2.0), indexing="ij")
        out = torch.stack(
            [
                frame[..., None, None].expand(b, t, 2, 2),
                frame.mean(1)[:, None, None, None].expand(b, t, 2, 2),
                rows.expand(b, t, 2, 2),
                cols.expand(b, t, 2, 2),
            ],
            -1,
        )
        return out


register_encoder("fake_video", FakeVideo)


def test_frames_round_trip_equals_the_encoders_features(tmp_path):
    eps = episodes()
    enc, model_id = build_encoder("dinov2", seed=0)
    m = extract_features(eps, enc, tmp_path / "s", camera="cam", dtype="float32", batch_size=3, progress=False)
    store = open_store(tmp_path / "s")
    info = m["meta"]["extra"]["align"]
    assert info["layout"] == "frames" and info["window"] == 1 and model_id.startswith("random:dinov2")
    assert PreprocessRecord.from_dict(info["record"]) == enc.record((40, 60))
    keys = store.get_batch(slice(None))
    assert keys["episode"].tolist() == [[0]] * 5 + [[1]] * 3
    assert keys["step"].tolist() == [[t] for t in [0, 1, 2, 3, 4, 0, 1, 2]]
    frames = np.stack([ep.frame("cam", t) for ep in eps for t in range(len(ep))])
    ref = enc.features(enc.preprocess(frames)[0])  # (8, Hf, Wf, C)
    torch.testing.assert_close(grid_of(store)[:, 0], ref)
    assert m["kind"] == store.kind == "patch_grid" and info["version"] == 2
    assert m["fields"]["patch_features"]["shape"] == [1, *ref.shape[1:]]  # [T=1, Hf, Wf, C]
    torch.testing.assert_close(store[3]["patch_features"][0], ref[3])


def test_resume_recomputes_only_missing_chunks(tmp_path):
    eps = episodes((6,))
    enc, _ = build_encoder("siglip", seed=1)
    kw = {"camera": "cam", "dtype": "float32", "progress": False}
    extract_features(eps, enc, tmp_path / "s", **kw)
    first = grid_of(open_store(tmp_path / "s"))
    marker(tmp_path / "s", 0).unlink()  # as if killed before chunk 0 was done
    with pytest.raises(Exception, match="incomplete"):
        open_store(tmp_path / "s")
    extract_features(eps, enc, tmp_path / "s", **kw)
    torch.testing.assert_close(grid_of(open_store(tmp_path / "s")), first)
    other, _ = build_encoder("siglip", seed=2)  # other weights: the store refuses to mix them
    with pytest.raises(Exception, match="weights_hash"):
        extract_features(eps, other, tmp_path / "s", **kw)


def test_frame_windows_cover_every_step():
    assert frame_windows([7, 2, 3], 3, 2) == [
        (0, [0, 1, 2]),
        (0, [2, 3, 4]),
        (0, [4, 5, 6]),
        (1, [0, 1, 1]),
        (2, [0, 1, 2]),
    ]
    assert frame_windows([4], 3) == [(0, [0, 1, 2]), (0, [1, 2, 3])]
    assert frame_windows([2], 1) == [(0, [0]), (0, [1])]


def test_window_layout_maps_back_to_exact_steps(tmp_path):
    eps = episodes((7, 2), size=(16, 16))
    for e, ep in enumerate(eps):  # frame (e, t) is a constant image of value 10 e + t
        ep.cameras["cam"] = [np.full((16, 16, 3), 10 * e + t, np.uint8) for t in range(len(ep))]
    enc, _ = build_encoder("fake_video")
    m = extract_features(eps, enc, tmp_path / "w", camera="cam", stride=2, dtype="float32", progress=False)
    info = m["meta"]["extra"]["align"]
    assert info["layout"] == "windows" and info["window"] == 3 and info["stride"] == 2 and info["grid"] == [2, 2]
    assert m["kind"] == "patch_grid" and m["fields"]["patch_features"]["shape"] == [3, 2, 2, 4]  # [T, Hf, Wf, C]
    store = open_store(tmp_path / "w")
    feats = grid_of(store)  # (W, T, Hf, Wf, C)
    keys = store.get_batch(slice(None))
    wins = [(e, s) for e, s in frame_windows([7, 2], 3, 2)]
    assert [(r[0], s) for r, s in zip(keys["episode"].tolist(), keys["step"].tolist(), strict=True)] == wins
    assert feats.shape == (len(wins), 3, 2, 2, 4)
    for row, (e, steps) in enumerate(wins):
        want = torch.tensor([10 * e + t for t in steps], dtype=torch.float32) / 255
        torch.testing.assert_close(feats[row, :, 0, 0, 0], want)  # each slot is its step's frame
        torch.testing.assert_close(feats[row, :, 1, 1, 1], want.mean().expand(3))  # depends on the frame set
        assert feats[row, 0, 1, 0, 2] == 1 and feats[row, 0, 0, 1, 3] == 1  # row-major grid


def test_errors_name_the_problem(tmp_path):
    eps = episodes()
    enc, _ = build_encoder("dinov2")
    with pytest.raises(KeyError, match=r"--camera 'wrist'.*has \['cam'\]"):
        extract_features(eps, enc, tmp_path / "a", camera="wrist", progress=False)
    with pytest.raises(ValueError, match="single-image encoder"):
        extract_features(eps, enc, tmp_path / "b", camera="cam", stride=2, progress=False)
    mixed = episodes((2,)) + episodes((2,), size=(30, 30))
    with pytest.raises(ValueError, match="frame sizes"):
        extract_features(mixed, enc, tmp_path / "c", camera="cam", progress=False)
    with pytest.raises(KeyError, match="registered"):
        build_encoder("nope")
    with pytest.raises(FileNotFoundError, match="CONFIG.json"):
        build_encoder("dinov2", tmp_path / "missing.json")


def test_config_json_builds_a_random_encoder_with_adapter_options(tmp_path):
    cfg = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    (tmp_path / "c.json").write_text(json.dumps({**cfg, "image_size": 28, "patch_size": 14, "size": 42, "fit": "pad"}))
    enc, model_id = build_encoder("dinov2", tmp_path / "c.json")
    rec = enc.record((40, 60))
    assert rec == PreprocessRecord.pad((40, 60), 42, 14, 1, "dinov2") and "c.json" in model_id
    assert enc.features(enc.preprocess(torch.zeros(1, 40, 60, 3, dtype=torch.uint8))[0]).shape == (1, 3, 3, 16)
