"""One rank of the InfoNCE DDP test: ``python _gather_worker.py RANK WORLD INIT_FILE OUT_JSON``.
World 1 runs the global batch of 7 rows without a process group (the reference); world 2 wraps the
toy in DDP (gloo) and gives rank 0 rows 0-2 and rank 1 rows 3-6 (unequal shares). Two SGD steps,
the second with the queue filled by the first. Rank 0 writes losses (mean over ranks), gradients and
final parameters as JSON."""

import gc
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from policylens.align._infonce import InfoNCE

KEYS = torch.tensor([[0, 0], [0, 1], [1, 0], [0, 1], [2, 2], [1, 0], [0, 1]])  # shared keys across the split


class Toy(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.rgb, self.pts = torch.nn.Linear(5, 4), torch.nn.Linear(6, 4)
        self.nce = InfoNCE(temperature=0.2, queue_size=10)

    def forward(self, x2d, x3d, keys):
        return self.nce(self.rgb(x2d), self.pts(x3d), keys)


def main(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    model = Toy()
    if world > 1:
        dist.init_process_group("gloo", rank=rank, world_size=world, init_method=f"file://{init_file}")
        model = torch.nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    part = slice(0, 7) if world == 1 else (slice(0, 3) if rank == 0 else slice(3, 7))
    losses, grads = [], []
    for step in range(2):
        g = torch.Generator().manual_seed(step)
        x2d, x3d = torch.randn(7, 5, generator=g), torch.randn(7, 6, generator=g)
        opt.zero_grad()
        loss = model(x2d[part], x3d[part], KEYS[part])
        loss.backward()
        logged = loss.detach().clone()
        if world > 1:
            dist.all_reduce(logged)
            logged /= world
        losses.append(logged.item())
        grads.append({k: p.grad.tolist() for k, p in model.named_parameters()})
        opt.step()
    inner = model.module if world > 1 else model
    result = {
        "losses": losses,
        "grads": [{k.removeprefix("module."): v for k, v in g.items()} for g in grads],
        "params": {k: v.tolist() for k, v in inner.named_parameters()},
        "queue": inner.nce.queue.tolist(),
    }
    if rank == 0:
        Path(out).write_text(json.dumps(result))
    if world > 1:  # the DDP wrapper freed and every rank done before the group goes
        del model, inner
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
