"""Run under torchrun by tests/runs/test_distributed.py: every rank joins through ``distributed()``,
gathers its rank and shard, and rank 0 writes what it saw as JSON to argv[1]; argv[2] == "fail"
makes rank 1 raise inside the block."""

import json
import sys

from policylens.runs import distributed, shard

with distributed(device="cpu") as d:
    mine = shard(list(range(7)), d.rank, d.world)
    seen = d.all_gather({"rank": d.rank, "shard": mine})
    token = d.broadcast("from rank 0" if d.main else None)
    if len(sys.argv) > 2 and sys.argv[2] == "fail" and d.rank == 1:
        raise RuntimeError("rank 1 failed on purpose")
    d.barrier()
    if d.main:
        with open(sys.argv[1], "w") as f:
            json.dump({"world": d.world, "backend": d.backend, "seen": seen, "token": token}, f)
