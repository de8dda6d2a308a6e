"""The oracle-encoder check (docs/align.md): with a fixed random projection of each patch's pixels as
the 2D encoder, and the same projection of the patch each point reprojects to as its 3D feature,
within-frame retrieval through the stores, the join and the uv -> patch lookup is > 95% top-1; a
transposed grid (a layout bug) is caught."""

import pytest
import torch
import torch.nn.functional as F

from policylens.align import OracleEncoder, oracle_retrieval
from policylens.data import open_episodes
from policylens.sim.pybullet import generate_episodes

CAM = "varied_camera_1"


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    root = tmp_path_factory.mktemp("oracle_droid")
    generate_episodes("reach", 2, root, fmt="droid", image_size=112, progress=False)
    return open_episodes(f"droid:{root}")


def test_oracle_encoder_retrieves_above_95_percent(episodes, tmp_path):
    report = oracle_retrieval(episodes, tmp_path, camera=CAM)
    print(report.summary())  # measured: top-1 100.00% both ways, pool 512 points, chance 1.86%
    assert report.retrieval["2d->3d"].topk[1] > 0.95 and report.retrieval["3d->2d"].topk[1] > 0.95
    assert report.retrieval["2d->3d"].chance[1] < 0.05 and report.n_rows > 0.9 * 2 * 8 * 512


class Transposed(OracleEncoder):
    """The grid written column-major: the kind of layout bug the check must catch."""

    def tokens(self, pixels):
        g = pixels.shape[-1] // self.patch_size
        t = super().tokens(pixels)  # (B, N, C) row-major
        return t.reshape(len(t), g, g, -1).transpose(1, 2).reshape(t.shape)


def test_oracle_catches_a_transposed_grid(episodes, tmp_path):
    report = oracle_retrieval(episodes, tmp_path, camera=CAM, encoder=Transposed())
    assert report.retrieval["2d->3d"].topk[1] < 0.5


def test_oracle_features_are_the_projection_of_each_patch():
    enc = OracleEncoder(size=28, patch_size=14, dim=8)
    pixels = torch.rand(1, 3, 28, 28)
    feats = enc.features(pixels)  # (1, 2, 2, 8)
    patch = pixels[0, :, 14:28, 0:14]  # row 1, column 0
    ref = F.unfold(patch[None], 14).reshape(-1) @ enc.weight
    torch.testing.assert_close(feats[0, 1, 0], ref)
    with pytest.raises(ValueError, match="not a multiple of patch_size"):
        OracleEncoder(size=30)
