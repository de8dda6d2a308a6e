"""Toy policies for the retention tests: a two-layer one whose hidden layer is the "bridge" (task
and retention gradients conflict on it, so projection has something to do), and one with
parameters that only one of the two losses reaches."""

import torch
from torch import nn


def toy_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def task_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    return ((model(batch["x"]) - batch["y"]) ** 2).mean()


def student(model: nn.Module):
    inner = model.module if hasattr(model, "module") else model

    def run(inputs: dict, indices=None) -> dict:
        return {"target_features": torch.tanh(inner[0](inputs["x"]))}

    return run


def batches(n: int = 8, seed: int = 1) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed)
    task = {"x": torch.randn(n, 4, generator=g), "y": torch.randn(n, 2, generator=g) * 3}
    anchor = {"x": torch.randn(n, 4, generator=g), "target_features": torch.randn(n, 8, generator=g) * 0.5}
    return task, anchor


class SplitToy(nn.Module):
    """A trunk both losses reach, a head only the task reaches (no g_ret) and a probe only the
    retention features reach (no g_act): every missing-gradient case in one model."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.trunk, self.head, self.probe = nn.Linear(4, 8), nn.Linear(8, 2), nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.trunk(x)))


def split_student(model: SplitToy):
    def run(inputs: dict, indices=None) -> dict:
        return {"target_features": model.probe(torch.tanh(model.trunk(inputs["x"])))}

    return run
