"""Pooling under left and right padding, against plain per-sample loops."""

import pytest
import torch

from policylens.tap import POOLINGS, TokenSpans, pool


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


@pytest.mark.parametrize("mode", ["masked_mean", "first", "last"])
def test_pooling_over_a_mask_of_ones_own_matches_a_float64_loop(mode):
    """A job pooling positions of its own (a shifted span, action queries) passes a (B, T) mask."""
    torch.manual_seed(1)
    hidden = torch.randn(2, 5, 3)
    mask = torch.tensor([[1, 1, 0, 0, 0], [0, 1, 1, 1, 0]]).bool()
    out = pool(hidden, mask, mode)
    for b in range(2):
        rows = [hidden[b, t].double() for t in range(5) if mask[b, t]]
        want = {"masked_mean": sum(rows) / len(rows), "first": rows[0], "last": rows[-1]}[mode]
        torch.testing.assert_close(out[b].double(), want, rtol=1e-6, atol=1e-6)
    assert mode in POOLINGS
