"""Run as 2 CPU ranks under torchrun by test_policy_train.py (``python -m torch.distributed.run
--standalone --nproc-per-node 2 _policy_dp_worker.py DATASET CACHE OUT``): ``run`` — policy_train on the
SmolVLA stand-in with CRaFT and global batches of 4 — into OUT."""

import sys
from pathlib import Path

import _own_policies as op

from policylens.data import dataset_training_episodes
from policylens.retain import PolicyTrainConfig, RetentionConfig, policy_train
from policylens.runs import distributed


def run(dataset: str, cache: Path, out: Path) -> dict:
    model = op.smolvla()
    eps = dataset_training_episodes(model, dataset, op.SMOLVLA_MAP)
    config = PolicyTrainConfig(steps=3, batch_size=4, anchor_batch_size=4, lr=1e-3, warmup=1, log_every=1)
    retention = RetentionConfig(epsilon=0.0, lam_lr=1e3)
    return policy_train(model, eps, out, config, retention, anchors=cache, progress=False)


if __name__ == "__main__":
    with distributed(device="cpu"):
        run(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
