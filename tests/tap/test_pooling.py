"""Pooling under left and right padding, against plain per-sample loops."""

import pytest
import torch

from policylens.tap import TokenSpans, bridge_features, pool


def _spans(valid, image):
    return TokenSpans({"valid": valid, "image[cam0]": image & valid}, ("cam0",))


@pytest.mark.parametrize("side", ["left", "right"])
def test_pooling_modes_match_loops(side):
    torch.manual_seed(0)
    hidden = torch.randn(3, 6, 4)
    lengths = [6, 4, 2]
    valid = torch.zeros(3, 6, dtype=torch.bool)
    for b, n in enumerate(lengths):
        if side == "right":
            valid[b, :n] = True
        else:
            valid[b, 6 - n :] = True
    image = torch.zeros(3, 6, dtype=torch.bool)
    image[:, :3] = True
    image |= valid & (torch.arange(6) < 3)
    spans = _spans(valid, image)
    for b in range(3):
        idx = valid[b].nonzero().flatten()
        img = (image[b] & valid[b]).nonzero().flatten()
        torch.testing.assert_close(pool(hidden, spans, "first")[b], hidden[b, idx[0]])
        torch.testing.assert_close(pool(hidden, spans, "last")[b], hidden[b, idx[-1]])
        torch.testing.assert_close(pool(hidden, spans, "masked_mean")[b], hidden[b, idx].mean(0))
        if len(img):
            torch.testing.assert_close(
                pool(hidden[b : b + 1], spans["image"][b : b + 1], "mean_image_tokens")[0], hidden[b, img].mean(0)
            )
    assert pool(hidden, spans, "none") is hidden


def test_pool_errors_name_the_problem():
    hidden = torch.randn(1, 3, 2)
    with pytest.raises(ValueError, match="mode='max'"):
        pool(hidden, None, "max")
    with pytest.raises(ValueError, match="no token"):
        pool(hidden, torch.zeros(1, 3, dtype=torch.bool), "masked_mean")


def test_bridge_features_concatenate_two_means():
    raw, query = torch.randn(2, 5, 3), torch.randn(2, 4, 2)
    raw_mask = torch.tensor([[1, 1, 0, 0, 0], [0, 1, 1, 1, 0]]).bool()
    query_mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]]).bool()
    out = bridge_features(raw, raw_mask, query, query_mask)
    assert out.shape == (2, 5)
    torch.testing.assert_close(out[1, :3], raw[1, 1:4].mean(0))
    torch.testing.assert_close(out[0, 3:], query[0, 2:].mean(0))
