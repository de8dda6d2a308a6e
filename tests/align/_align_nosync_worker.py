"""One torchrun rank of ``align train`` without DDP's wrapper (so without gradient averaging), for
tests/align/test_align_torchrun.py: ``python _align_nosync_worker.py STORES OUT key=value ...``
(AlignTrainConfig fields, JSON values). Rank 0 writes OUT as usual."""

import json
import sys
from pathlib import Path

import policylens.align._loop as loop
from policylens.align import AlignTrainConfig, train_alignment

loop._wrap = lambda model, d: model  # each rank steps on the gradient of its own share
stores, out = Path(sys.argv[1]), Path(sys.argv[2])
config = {k: json.loads(v) for k, v in (a.split("=", 1) for a in sys.argv[3:])}
feats = [stores / "dinov2", stores / "siglip"]
train_alignment(stores / "points", feats, out, AlignTrainConfig(**config, progress=False))
