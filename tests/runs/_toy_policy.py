"""A toy policy class with a config, registered by the checkpoint and registry tests."""

import torch
from torch import nn

from policylens.runs import register_policy_type


class Toy(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width
        self.body = nn.Linear(2, width)
        self.register_buffer("scale", torch.ones(width))


def toy_config(model: nn.Module) -> dict:
    if not isinstance(model, Toy):
        raise TypeError(f"not a Toy: {type(model).__name__}")
    return {"width": model.width}


def register_toy(**kw) -> None:
    register_policy_type("toy", build=lambda cfg: Toy(**cfg), config_of=toy_config, **kw)


def toy(width: int = 3, seed: int = 0) -> Toy:
    torch.manual_seed(seed)
    return Toy(width)
