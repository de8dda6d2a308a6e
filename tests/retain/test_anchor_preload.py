"""Anchor samples decoded once: an ``AnchorSet(preload=True)`` over a DROID bridge cache gives the
same model inputs as decoding each frame from the episode (built here from the raw episode with
the policy's ``make_batch``, not through the anchor code), the same student features, and reads
nothing from the dataset after it opened."""

import numpy as np
import pytest
import torch

from policylens.anchors import build_cache
from policylens.data import open_episodes
from policylens.models import load_model
from policylens.retain import AnchorSet, open_anchors
from policylens.sim.pybullet import generate_episodes


@pytest.fixture(scope="module")
def droid_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("preload")
    generate_episodes("reach", 1, root / "droid", seed=3, fmt="droid", image_size=32, progress=False)
    build_cache("tiny_vla", f"droid:{root / 'droid'}", str(root / "cache"), kind="bridge", batch_size=4,
                progress=False)  # fmt: skip
    return root


def _reference(model, episode, t: int) -> dict:
    """Sample t's inputs from the episode's own frame decoder and the policy's make_batch."""
    images = {c: torch.from_numpy(np.asarray(episode.frame(c, t)))[None] for c in model.config.cameras}
    state = torch.from_numpy(np.asarray(episode.proprio[t], dtype=np.float32))[None]
    return model.make_batch(images, [episode.instruction], state)


class _Counting:
    def __init__(self, source):
        self.source, self.reads = source, 0

    def __len__(self):
        return len(self.source)

    def __getitem__(self, i):
        self.reads += 1
        return self.source[i]


def test_preloaded_anchors_equal_the_decoded_frames_and_decode_nothing_per_batch(droid_cache):
    model = load_model("tiny_vla").eval()
    cache = droid_cache / "cache"
    episode = open_episodes(f"droid:{droid_cache / 'droid'}")[0]
    lazy, loaded = AnchorSet(cache, model), AnchorSet(cache, model, preload=True)
    assert len(loaded) == len(episode) >= 6
    loaded.source = _Counting(loaded.source)
    rows = [5, 0, 5, len(loaded) - 1, 2]
    got, per_step = loaded.batch(rows), lazy.batch(rows)
    assert loaded.source.reads == 0  # slices of the tensors decoded when the set opened
    index = got["sample_index"].tolist()
    for j, i in enumerate(index):
        ref = _reference(model, episode, i)
        for key, value in ref.items():
            assert torch.equal(got[key][j], value[0]), key
    assert set(got) == set(per_step)
    for key in got:
        assert torch.equal(got[key], per_step[key]), key
    inputs = {k: v for k, v in got.items() if k not in ("target_features", "sample_index")}
    with torch.no_grad():
        feats = loaded.student(inputs, indices=got["sample_index"])["target_features"]
        ref_inputs = {k: torch.cat([_reference(model, episode, i)[k] for i in index]) for k in inputs}
        ref = lazy.student(ref_inputs, indices=torch.as_tensor(index))["target_features"]
    assert torch.equal(feats, ref)
    assert float((feats - got["target_features"].float()).pow(2).mean()) < 1e-6  # teacher as student, float16 store


def test_open_anchors_preloads_on_request(droid_cache):
    model = load_model("tiny_vla").eval()
    anchors = open_anchors(droid_cache / "cache", model, preload=True)
    anchors.source = _Counting(anchors.source)
    anchors.sample(4, np.random.default_rng(0))
    assert anchors.source.reads == 0
    lazy = open_anchors(droid_cache / "cache", model)
    lazy.source = _Counting(lazy.source)
    lazy.sample(4, np.random.default_rng(0))
    assert lazy.source.reads == 4


def test_an_unknown_feature_view_is_refused(droid_cache):
    with pytest.raises(ValueError, match="features='bridge'.*'all', 'action'"):
        AnchorSet(droid_cache / "cache", load_model("tiny_vla"), features="bridge")
