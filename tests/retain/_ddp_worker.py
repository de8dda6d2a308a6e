"""One rank of the DDP retention test: ``python _ddp_worker.py RANK WORLD INIT_FILE OUT_JSON``.
World 1 runs the global batch without DDP (the reference); world 2 wraps the toy in DDP (gloo)
and trains on its half. Writes the final parameters and λ as JSON."""

import gc
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))
from _toy import batches, student, task_loss, toy_model

from policylens.retain import Retainer, RetentionConfig


def main(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    model = toy_model()
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"file://{init_file}")
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    retainer = Retainer(model, task_loss, student(model), RetentionConfig(epsilon=0.01, lam_lr=2.0))
    for step in range(5):
        task, anchor = batches(8, seed=step)
        part = slice(rank * 8 // world, (rank + 1) * 8 // world)
        retainer.backward({k: v[part] for k, v in task.items()}, {k: v[part] for k, v in anchor.items()})
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    inner = model.module if world > 1 else model
    state = {k: v.tolist() for k, v in inner.state_dict().items()}
    if rank == 0:
        Path(out).write_text(json.dumps({"params": state, "lam": retainer.dual.lam}))
    if world > 1:  # the DDP wrapper freed and every rank done before the group goes
        del model, retainer
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
