"""``prismatic_spans`` finds STOP from the ids: VLA-Adapter's training batches end with the action
queries, its inference batches (``predict_action``) with STOP, and one batch may hold both."""

import pytest
import torch

from policylens.tap import prismatic_spans

P, Q, STOP, QUERY = 4, 3, 2, 90


def text_ids(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and mask from ``[BOS, prompt…, queries…, STOP?]`` rows."""
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    return ids, mask


TRAIN = [1, 5, 6, 7, *[QUERY] * Q]  # prompt 5 6 7, queries, no STOP
INFER = [1, 5, 6, *[QUERY] * Q, STOP]


def queries_of(ids: torch.Tensor, k: int) -> list[int]:
    return [int(t) + P for t in (ids[k] == QUERY).nonzero().flatten()]  # text position t>=1 -> t + P


def test_training_batch_has_no_stop_and_keeps_the_last_prompt_token_as_text():
    ids, mask = text_ids([TRAIN, TRAIN[:2] + TRAIN[4:]])
    spans = prismatic_spans(ids, mask, P, Q)
    for k in range(2):
        assert spans.positions("action", k).tolist() == queries_of(ids, k)
        assert spans.positions("stop", k).tolist() == []
    assert spans.positions("text", 0).tolist() == [5, 6, 7]
    assert spans.positions("text", 1).tolist() == [5]


def test_inference_batch_ends_with_stop():
    ids, mask = text_ids([INFER])
    spans = prismatic_spans(ids, mask, P, Q)
    assert spans.positions("action", 0).tolist() == queries_of(ids, 0)
    assert spans.positions("stop", 0).tolist() == [P + len(INFER) - 1]
    assert spans.positions("text", 0).tolist() == [5, 6]


def test_mixed_batch_is_detected_per_sample():
    ids, mask = text_ids([TRAIN, INFER, TRAIN[:3] + [QUERY] * Q + [STOP]])
    spans = prismatic_spans(ids, mask, P, Q, stop_id=STOP)
    assert spans["stop"].sum(1).tolist() == [0, 1, 1]
    for k in range(3):
        assert spans.positions("action", k).tolist() == queries_of(ids, k)
    assert (spans["bos"] | spans["image"] | spans["text"] | spans["action"] | spans["stop"]).eq(spans["valid"]).all()


def test_explicit_has_stop_is_applied_to_every_sample():
    ids, mask = text_ids([TRAIN, INFER])
    forced = prismatic_spans(ids, mask, P, Q, has_stop=True)
    assert forced["stop"].sum(1).tolist() == [1, 1]  # the training sample's last query is taken for STOP
    assert forced.positions("action", 0).tolist() == [7, *queries_of(ids, 0)[:-1]]
    none = prismatic_spans(ids, mask, P, Q, has_stop=False)
    assert none["stop"].sum() == 0
    assert none.positions("action", 0).tolist() == queries_of(ids, 0)


def test_stop_id_is_the_tokenizers_eos():
    ids, mask = text_ids([[*INFER[:-1], 151643]])  # a tokenizer whose eos is 151643
    assert prismatic_spans(ids, mask, P, Q)["stop"].sum() == 0
    assert prismatic_spans(ids, mask, P, Q, stop_id=151643)["stop"].sum() == 1


def test_detection_needs_a_stop_id_and_has_stop_is_checked():
    ids, mask = text_ids([INFER])
    with pytest.raises(ValueError, match="stop_id"):
        prismatic_spans(ids, mask, P, Q, has_stop=None, stop_id=None)
    assert prismatic_spans(ids, None, P, Q, has_stop=True, stop_id=None)["stop"].sum() == 1
    with pytest.raises(ValueError, match="has_stop='yes'"):
        prismatic_spans(ids, mask, P, Q, has_stop="yes")
