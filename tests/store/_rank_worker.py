"""One torchrun-like rank of a store build: ``python _rank_worker.py RANK WORLD INIT_FILE OUT_JSON``
builds ``N`` samples into the store ``s`` beside OUT_JSON.

RANK / WORLD_SIZE go into the environment as torchrun sets them, so ``build_store`` takes its share
from there (default chunking); each rank records the dataset indices its extractor saw, and rank 0
gathers them over gloo and writes ``{rank: indices}`` as JSON."""

import json
import os
import sys

import torch
import torch.distributed as dist
from _store_fixtures import TinyModel, TinySource, extractor, meta_for

from policylens.store import build_store

N = 512

if __name__ == "__main__":
    rank, world, init, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    root, n = os.path.join(os.path.dirname(out), "s"), N
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    model = TinyModel()
    run = extractor(model, "hidden_state")
    seen = torch.zeros(n, dtype=torch.int64)  # 1 where this rank computed the sample

    class Indexed(TinySource):
        def __getitem__(self, i):
            return {**super().__getitem__(i), "i": i}

    def counting(batch):
        seen[batch.pop("i")] = 1
        return run(batch)

    build_store(root, Indexed(n), counting, meta_for("hidden_state", "bfloat16", model), batch_size=8, progress=False)
    parts = [torch.zeros_like(seen) for _ in range(world)]
    dist.all_gather(parts, seen)
    if rank == 0:
        with open(out, "w") as f:
            json.dump({r: p.nonzero().flatten().tolist() for r, p in enumerate(parts)}, f)
    dist.destroy_process_group()
