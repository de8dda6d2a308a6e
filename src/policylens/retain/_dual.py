"""Dual ascent on the retention multiplier λ: λ ← max(0, λ + η_λ (L_ret − ε)), optionally every
N updating steps (on the mean L_ret of the finite steps since the last update), skipped on
non-finite steps. λ lives on the device (no host sync per step); the state round-trips through
JSON for checkpoints."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["DualAscent"]


class DualAscent:
    """``epsilon``: the retention budget; ``lr``: η_λ; ``lam``: the starting λ; ``every``: update
    λ once per that many steps; ``fixed=True`` keeps λ constant (a fixed-weight retention loss)."""

    def __init__(self, epsilon: float, lr: float = 1.0, lam: float = 0.0, every: int = 1, fixed: bool = False) -> None:
        if every < 1:
            raise ValueError(f"DualAscent.every={every}; update λ every N >= 1 steps")
        if not (lam >= 0 and epsilon >= 0 and lr >= 0):
            raise ValueError(f"DualAscent: lam={lam}, epsilon={epsilon}, lr={lr}; all must be >= 0")
        self.epsilon, self.lr, self.every, self.fixed = float(epsilon), float(lr), int(every), bool(fixed)
        self.calls = 0
        self._lam = torch.tensor(float(lam))
        self._sum, self._n, self._skipped = torch.zeros(()), torch.zeros(()), torch.zeros(())
        self._history: list[Tensor] = []

    def value(self, device: torch.device | str | None = None) -> Tensor:
        """λ, a 0-dim float32 tensor (moved to ``device`` once; it stays there)."""
        if device is not None and self._lam.device != torch.device(device):
            self._lam, self._sum, self._n, self._skipped = (
                t.to(device) for t in (self._lam, self._sum, self._n, self._skipped)
            )
        return self._lam

    def update(self, l_ret: Tensor, finite: Tensor | bool = True) -> None:
        """One updating step with retention loss ``l_ret``; a non-finite loss or ``finite=False``
        (an overflowed AMP step) does not count towards λ."""
        l_ret = torch.as_tensor(l_ret, dtype=torch.float32, device=self._lam.device).detach()
        ok = torch.isfinite(l_ret) & torch.as_tensor(finite, device=self._lam.device)
        self._sum = self._sum + torch.where(ok, l_ret, torch.zeros_like(l_ret))
        self._n, self._skipped = self._n + ok.float(), self._skipped + (~ok).float()
        self.calls += 1
        if self.fixed or self.calls % self.every:
            return
        mean = self._sum / self._n.clamp(min=1)
        stepped = (self._lam + self.lr * (mean - self.epsilon)).clamp(min=0)
        self._lam = torch.where(self._n > 0, stepped, self._lam)
        self._sum, self._n = torch.zeros_like(self._sum), torch.zeros_like(self._n)
        self._history.append(self._lam)

    @property
    def lam(self) -> float:
        return float(self._lam)

    @property
    def skipped(self) -> int:
        return int(self._skipped)

    @property
    def history(self) -> list[float]:
        return [float(v) for v in self._history]

    def state_dict(self) -> dict:
        """JSON-ready state (reads the device: call it at checkpoints, not every step)."""
        return {
            "epsilon": self.epsilon,
            "lr": self.lr,
            "every": self.every,
            "fixed": self.fixed,
            "calls": self.calls,
            "lam": self.lam,
            "sum": float(self._sum),
            "n": float(self._n),
            "skipped": self.skipped,
            "history": self.history,
        }

    def load_state_dict(self, state: dict) -> None:
        device = self._lam.device
        self.epsilon, self.lr, self.every, self.fixed = state["epsilon"], state["lr"], state["every"], state["fixed"]
        self.calls = int(state["calls"])
        self._lam, self._sum, self._n, self._skipped = (
            torch.tensor(float(state[k]), device=device) for k in ("lam", "sum", "n", "skipped")
        )
        self._history = [torch.tensor(float(v)) for v in state["history"]]
