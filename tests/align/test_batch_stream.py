"""BatchStream: a stream restored at a saved place yields what the unbroken stream yields from there,
batches and torch's global draws alike, with a ResumableBatchSampler (skipped batches unread) or a
plain BatchSampler (replayed), over passes without and with replacement."""

import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from policylens.align._dataset import BatchStream, ResumableBatchSampler

N, BATCH, STEPS = 10, 3, 11  # passes of 4 batches (the last of 1 item): 11 steps end 2 passes + 3 batches


class Items(Dataset):
    def __init__(self):
        self.reads = []

    def __len__(self):
        return N

    def __getitem__(self, i):  # an index, or a batch of them (as align's batches dataset)
        self.reads.extend(i if isinstance(i, list) else [i])
        return i


def loader(kind, replacement=False):
    """A loader as ``make_loader`` builds it (``sampler=`` a batch sampler), or as stage 2 does (``batch_sampler=``)."""
    items = Items()
    base = RandomSampler(items, replacement, 10**6 if replacement else None, torch.Generator().manual_seed(0))
    if kind == "plain":
        return DataLoader(items, batch_sampler=BatchSampler(base, BATCH, False))
    sampler = ResumableBatchSampler(base, BATCH, False)
    if kind == "make_loader":
        return DataLoader(items, sampler=sampler, batch_size=None, collate_fn=lambda batch: batch)
    return DataLoader(items, batch_sampler=sampler)


def steps(stream, n):
    """What n training steps see: the batch, then a draw from torch's global generator (as dropout would)."""
    return [(list(map(int, next(stream))), torch.rand(1).item()) for _ in range(n)]


@pytest.mark.parametrize("replacement", [False, True])
@pytest.mark.parametrize("kind", ["make_loader", "batch_sampler", "plain"])
@pytest.mark.parametrize("stop", [1, 4, 6])  # mid-pass, at the end of a pass, in the second pass
def test_restored_stream_continues_the_unbroken_one(kind, replacement, stop):
    torch.manual_seed(0)
    whole = steps(BatchStream(loader(kind, replacement)), STEPS)

    torch.manual_seed(0)
    first = BatchStream(loader(kind, replacement))
    seen = steps(first, stop)
    saved = {
        "taken": first.taken,
        "torch": torch.get_rng_state(),
        **{k: g.get_state() for k, g in first.generators().items()},
    }
    torch.manual_seed(123)  # a new process: other global state, a fresh loader seeded as before
    again = BatchStream(loader(kind, replacement))
    assert again.generators().keys() == {"order"}
    again.generators()["order"].set_state(saved["order"])
    again.taken = saved["taken"]
    torch.set_rng_state(saved["torch"])
    assert seen + steps(again, STEPS - stop) == whole
    reads = len(again.loader.dataset.reads)
    after = sum(len(batch) for batch, _ in whole[stop:])
    assert reads == after if kind != "plain" else reads > after  # skipped unread, or replayed


def test_a_pass_that_ended_restarts_the_order_from_the_next_one():
    stream = BatchStream(loader("batch_sampler"))
    steps(stream, 4)
    assert stream.taken == 4  # the pass ended, its end not yet seen
    steps(stream, 1)
    assert stream.taken == 1
