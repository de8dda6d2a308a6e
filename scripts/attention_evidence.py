"""Faithfulness evidence for docs/attention.md: does masking the reference VLA's high-attention
area change its action more than equal-area controls and the noise floor, and does a model with
randomised weights (Adebayo et al.'s sanity check) lose that?

The same as ``policylens attention faithfulness`` (``policylens.attention.run_faithfulness``): for
the first keyframe of every episode under ``--episodes`` (the VLA's own rollouts, from ``policylens
sim generate --policy tiny_vla``) and each ``--layers`` prefix map, the action change when the high /
low / shifted / random-blob areas (equal area, ``--area`` of the frame) or the whole view are filled
with the frame's mean colour, the noise floor, deletion curves, paired sign-flip tests with Holm.
Writes ``RUN/faithfulness.json`` for the report and prints the tables.

    python scripts/attention_evidence.py --episodes runs/vla_rollouts --run runs/attn
"""

from __future__ import annotations

import argparse

import torch

from policylens.attention import faithfulness_tables, run_faithfulness


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", required=True)
    ap.add_argument("--run", required=True, help="attention run folder: faithfulness.json is written there")
    ap.add_argument("--policy", default="tiny_vla")
    ap.add_argument("--layers", default="1,3")
    ap.add_argument("--area", type=float, default=0.1)
    ap.add_argument("--n-random", type=int, default=5)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(2)
    layers = [int(v) for v in args.layers.split(",")]
    result = run_faithfulness(
        args.policy, args.episodes, args.run, layers, args.area, args.n_random, args.batch, progress=True
    )
    print(faithfulness_tables(result))


if __name__ == "__main__":
    main()
