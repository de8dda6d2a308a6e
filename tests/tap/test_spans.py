"""Token spans come from the real layout: PaliGemma, Prismatic, pi0 / pi0.5 / SmolVLA."""

import pytest
import torch

from policylens.models import TinyVLA, TinyVLAConfig
from policylens.tap import paligemma_spans, pi0_layout, prismatic_spans


@pytest.mark.parametrize("n_cams", [1, 2, 3])
def test_paligemma_cameras_get_their_own_blocks(n_cams):
    per = 256  # a 224×224 image through a patch-14 SigLIP
    text = torch.tensor([[1, 20, 21, 22, 0], [1, 30, 0, 0, 0]])
    ids = torch.cat([torch.full((2, n_cams * per), 7), text], 1)
    mask = (ids != 0).long()
    names = [f"c{k}" for k in range(n_cams)]
    spans = paligemma_spans(ids, mask, image_token_id=7, tokens_per_image=per, cameras=names)
    for k, name in enumerate(names):
        assert spans.positions(f"image[{name}]", 1).tolist() == list(range(k * per, (k + 1) * per))
    assert spans["image"].sum(1).tolist() == [n_cams * per] * 2
    assert spans.positions("text", 0).tolist() == list(range(n_cams * per, n_cams * per + 4))
    assert spans["text"].sum(1).tolist() == [4, 2]
    assert spans["pad"].sum(1).tolist() == [1, 3]


def test_paligemma_rejects_uneven_image_tokens():
    ids = torch.tensor([[7, 7, 7, 1, 2]])
    with pytest.raises(ValueError, match="tokens_per_image=2"):
        paligemma_spans(ids, None, image_token_id=7, tokens_per_image=2)


def test_prismatic_layout_bos_patches_prompt_queries_stop():
    # text ids [BOS, p, p, p, a, a, STOP] right-padded; 4 patches inserted after BOS
    ids = torch.tensor([[1, 5, 6, 7, 90, 91, 2, 0], [1, 5, 90, 91, 2, 0, 0, 0]])
    spans = prismatic_spans(ids, (ids != 0).long(), n_patches=4, n_action_tokens=2)
    assert spans.shape == (2, 12)
    assert spans.positions("bos", 0).tolist() == [0]
    assert spans.positions("image", 0).tolist() == [1, 2, 3, 4]
    assert spans.positions("text", 0).tolist() == [5, 6, 7]
    assert spans.positions("action", 0).tolist() == [8, 9]
    assert spans.positions("stop", 0).tolist() == [10]
    assert spans.positions("text", 1).tolist() == [5]
    assert spans.positions("action", 1).tolist() == [6, 7]
    assert spans.positions("stop", 1).tolist() == [8]


def test_prismatic_refuses_left_padding():
    ids = torch.tensor([[0, 1, 5, 2]])
    with pytest.raises(ValueError, match="padding_side"):
        prismatic_spans(ids, (ids != 0).long(), n_patches=4, n_action_tokens=1)


def test_pi0_variants():
    present = torch.tensor([[True, False, True]])
    lang = torch.tensor([[True, True, True, False]])
    pi0 = pi0_layout("pi0", present, 4, lang, chunk_size=5, cameras=["top", "left", "wrist"])
    assert pi0["prefix"].positions("image[wrist]").tolist() == [8, 9, 10, 11]
    assert pi0["prefix"]["image[left]"].sum() == 0  # an absent camera is padding
    assert pi0["prefix"]["valid"].sum() == 8 + 3
    assert pi0["suffix"].positions("state").tolist() == [0]
    assert pi0["suffix"].positions("action").tolist() == [1, 2, 3, 4, 5]
    assert pi0["joint"].positions("action").tolist() == [17, 18, 19, 20, 21]
    pi05 = pi0_layout("pi05", present, 4, lang, chunk_size=5)
    assert pi05["suffix"]["state"].sum() == 0 and pi05["suffix"]["action"].sum() == 5
    smol = pi0_layout("smolvla", present, 4, lang, chunk_size=5)
    assert smol["prefix"].positions("state").tolist() == [16]
    with pytest.raises(ValueError, match="variant"):
        pi0_layout("pi1", present, 4, lang, 5)


@pytest.mark.parametrize("cameras", [("side",), ("side", "wrist"), ("a", "b", "c")])
def test_tiny_vla_layout_per_camera(cameras):
    cfg = TinyVLAConfig(cameras=cameras, image_size=28, vision_layers=1, layers=1, max_text_tokens=8)
    model = TinyVLA(cfg)
    batch = model.example_batch(2)
    prefix = model.token_layout(batch)["prefix"]
    for k, cam in enumerate(cameras):
        assert prefix.positions(f"image[{cam}]").tolist() == list(range(4 * k, 4 * k + 4))
    n_text = int(batch["attention_mask"][0].sum()) - 4 * len(cameras)
    assert prefix["text"][0].sum() == n_text


def test_reprs_are_short_and_count_tokens_per_span():
    ids = torch.cat([torch.full((6, 4), 7), torch.tensor([[1, 2, 0]] * 3 + [[1, 0, 0]] * 3)], 1)
    spans = paligemma_spans(ids, (ids != 0).long(), image_token_id=7, tokens_per_image=2, cameras=["left", "wrist"])
    text = repr(spans)
    assert text == (
        "TokenSpans(B=6, T=7, cameras=['left', 'wrist'], tokens per span: image[left]=2, image[wrist]=2, "
        "text=[2, 2, 2, 1, ...], valid=[6, 6, 6, 5, ...], image=4, pad=[1, 1, 1, 2, ...])"
    )
    layout = TinyVLA(TinyVLAConfig(image_size=28, vision_layers=1, layers=1)).eval()
    batch = layout.example_batch(2, seed=0)
    shown = repr(layout.token_layout(batch))
    assert shown.startswith("Layout(\n  vision: TokenSpans(") and "\n  suffix: TokenSpans(B=2, T=9" in shown
    assert "tensor" not in shown and len(shown) < 600
