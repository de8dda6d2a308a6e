"""Anchor dataloader: whole-batch reads, meta on every batch, spawned workers, infinite iterator."""

import itertools

import torch
from _store_fixtures import build

from policylens.store import build_anchor_dataloader, infinite_batches, open_store


def test_loader_batches_match_store_and_carry_meta(tmp_path):
    build(tmp_path / "s", "hidden_state", "bfloat16", store_inputs=["input_ids"])
    ds = open_store(tmp_path / "s")
    loader = build_anchor_dataloader(tmp_path / "s", batch_size=8, shuffle=False)
    batches = list(loader)
    assert [len(b["sample_index"]) for b in batches] == [8, 8, 8, 8, 5]
    ids = torch.cat([b["sample_index"] for b in batches])
    assert ids.tolist() == list(range(37))
    for b in batches:
        assert b["meta"]["kind"] == "hidden_state"
        assert b["meta"]["taps"] == ["layers.0.out", "layers.1.out", "layers.2.out"]
        assert b["meta"]["dtype"] == "bfloat16"
        ref = torch.stack([ds[int(i)]["teacher_hidden"] for i in b["sample_index"]])
        assert torch.equal(b["teacher_hidden"], ref)
        assert b["teacher_hidden"].dtype == torch.bfloat16


def test_loader_under_spawn_workers_sees_every_sample_once_per_epoch(tmp_path):
    build(tmp_path / "s", "hidden_feature", "float16")
    ds = open_store(tmp_path / "s")
    ds[0]  # open memory maps in the parent: they must not travel to the workers
    assert ds._maps is not None
    assert ds.__getstate__()["_maps"] is None
    loader = build_anchor_dataloader(
        tmp_path / "s", batch_size=6, shuffle=True, num_workers=2, multiprocessing_context="spawn", seed=3
    )
    epochs = []
    for _ in range(2):
        seen = []
        for b in loader:
            assert b["meta"]["kind"] == "hidden_feature"
            for i, row in zip(b["sample_index"].tolist(), b["target_features"], strict=True):
                assert torch.equal(row, ds[i]["target_features"])
            seen += b["sample_index"].tolist()
        assert sorted(seen) == list(range(37))
        epochs.append(seen)
    assert epochs[0] != epochs[1]  # reshuffled each epoch
    assert epochs[0] != list(range(37))


def test_infinite_batches_cross_epochs(tmp_path):
    build(tmp_path / "s", "token_level", n=10)
    loader = build_anchor_dataloader(tmp_path / "s", batch_size=4, shuffle=False, drop_last=True)
    got = [b["sample_index"].tolist() for b in itertools.islice(infinite_batches(loader), 5)]
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3]]
    assert all(b["labels"].dtype == torch.int64 for b in itertools.islice(infinite_batches(loader), 3))
