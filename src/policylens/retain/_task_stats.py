"""Task data outside the teacher's normalisation, and the remedy that keeps the teacher's function.

TinyVLA stores per-dim mean / std of its states and actions, fitted on its training data; a dim
that data never moved gets the floor std (1e-3, ``set_normalization``'s clamp). Fine-tuning keeps
these statistics (the teacher's features are the anchor), so a new task that moves such a dim
(the gripper of ``put_in_tray`` under the shipped ``reach`` teacher) puts its targets 1000σ out:
L_act 6.8e4 at step 0 instead of 1.4. :func:`check_task_stats` measures it: per dim, the 99th
percentile of |x − mean| / std over the task data; far outside: above ``Z_LIMIT`` (10σ).
:func:`adopt_task_stats` gives the far dims the teacher never used (its std at most
``UNUSED_STD``, twice the floor) the task data's mean / std (``set_normalization``'s convention:
unbiased std, floored at 1e-3) without changing the teacher:

- actions: the network works in normalised units (flow target (a − mean) / std, output
  de-normalised as x·std + mean), so new statistics of dim d change dim d of the de-normalised
  output only; the other dims come out bit for bit the same.
- states: the normalised state enters ``state_proj`` (W s_n + b). New (m', s') for dim d with
  W'[:, d] = W[:, d]·s'/s and b' = b + W[:, d](m' − m)/s give the same state token for every input
  (to float rounding): the teacher's outputs and bridge features do not change, only the scale the
  optimiser sees (task inputs of order 1 instead of ~500σ).

Far dims the teacher did use are reported and left alone: new statistics there would change its
outputs on its own data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = [
    "UNUSED_STD",
    "Z_LIMIT",
    "Z_QUANTILE",
    "StreamCheck",
    "adopt_task_stats",
    "check_task_stats",
    "far_dims",
    "planned_task_stats",
    "task_stats_message",
]

Z_LIMIT = 10.0  # a dim is far outside when the quantile below of |z| exceeds this many teacher stds
Z_QUANTILE = 0.99
STD_FLOOR = 1e-3  # set_normalization's clamp
UNUSED_STD = 2 * STD_FLOOR  # a teacher std at most this: the teacher's data never moved the dim
STREAMS = ("action", "state")


@dataclass(frozen=True)
class StreamCheck:
    """One stream (``action`` / ``state``) of the task data under the teacher's statistics: per dim
    ``z`` (the ``Z_QUANTILE`` of |x − mean| / std), the task data's ``mean`` / ``std``; the dims
    ``far`` outside (z > ``z_limit``), and those the teacher never used (``unused``)."""

    name: str
    z: tuple[float, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    far: tuple[int, ...]
    unused: tuple[int, ...]
    z_limit: float = Z_LIMIT
    quantile: float = Z_QUANTILE

    @property
    def adopt(self) -> tuple[int, ...]:
        """Far dims the teacher never used: they can take the task data's statistics."""
        return tuple(d for d in self.far if d in self.unused)

    @property
    def kept(self) -> tuple[int, ...]:
        """Far dims the teacher uses: their statistics stay the teacher's."""
        return tuple(d for d in self.far if d not in self.unused)


def _stream(episodes: list[dict], name: str, dim: int) -> np.ndarray:
    rows = []
    for i, ep in enumerate(episodes):
        if name not in ep:
            raise KeyError(f"episode {i} lacks field {name!r} (need images, state, action, instruction)")
        x = np.asarray(ep[name], dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != dim:
            raise ValueError(f"episode {i}: field {name!r} has shape {x.shape}; the policy needs (T, {dim})")
        rows.append(x)
    return np.concatenate(rows).astype(np.float64)  # (N, dim)


def _streams(model: nn.Module) -> tuple[str, ...]:
    missing = [n for s in STREAMS for n in (f"{s}_mean", f"{s}_std") if not hasattr(model, n)]
    if missing or not isinstance(getattr(model, "state_proj", None), nn.Linear):
        raise TypeError(
            f"task statistics need a TinyVLA-style policy (action/state mean and std buffers, a state_proj "
            f"layer); {type(model).__name__} lacks {missing or ['state_proj']}"
        )
    return STREAMS if model.config.use_state else ("action",)  # a policy that ignores its state


def check_task_stats(
    model: nn.Module, episodes: list[dict], z_limit: float = Z_LIMIT, quantile: float = Z_QUANTILE
) -> dict[str, StreamCheck]:
    """How far ``episodes`` (``state`` / ``action`` arrays (T, dim)) sit from ``model``'s statistics,
    per stream (``state`` only if the policy reads its state)."""
    if not episodes:
        raise ValueError("check_task_stats: no episodes")
    if not (z_limit > 0 and 0 < quantile <= 1):
        raise ValueError(
            f"check_task_stats: z_limit={z_limit}, quantile={quantile}; use z_limit > 0, 0 < quantile <= 1"
        )
    out = {}
    for name in _streams(model):
        mean = getattr(model, f"{name}_mean").detach().double().cpu().numpy()
        std = getattr(model, f"{name}_std").detach().double().cpu().numpy()
        x = _stream(episodes, name, len(mean))
        z = np.quantile(np.abs(x - mean) / std, quantile, axis=0)
        task_std = np.maximum(x.std(0, ddof=1) if len(x) > 1 else np.zeros(len(mean)), STD_FLOOR)
        out[name] = StreamCheck(
            name,
            z=tuple(float(v) for v in z),
            mean=tuple(float(v) for v in x.mean(0)),
            std=tuple(float(v) for v in task_std),
            far=tuple(int(d) for d in np.flatnonzero(z > z_limit)),
            unused=tuple(int(d) for d in np.flatnonzero(std <= UNUSED_STD)),
            z_limit=float(z_limit),
            quantile=float(quantile),
        )
    return out


def _short(v) -> float:
    return float(f"{float(v):.6g}")


def planned_task_stats(model: nn.Module, checks: dict[str, StreamCheck]) -> dict[str, dict[str, dict[str, list]]]:
    """What :func:`adopt_task_stats` would change, without changing it: {stream: {dim: {"mean":
    [old, new], "std": [old, new]}}} for the far dims the teacher never used (JSON-ready, 6 digits)."""
    out: dict[str, dict[str, dict[str, list]]] = {}
    for name, check in checks.items():
        if not check.adopt:
            continue
        old_mean, old_std = (getattr(model, f"{name}_{k}").detach().cpu() for k in ("mean", "std"))
        out[name] = {
            str(d): {
                "mean": [_short(old_mean[d]), _short(np.float32(check.mean[d]))],
                "std": [_short(old_std[d]), _short(np.float32(check.std[d]))],
            }
            for d in check.adopt
        }
    return out


@torch.no_grad()
def adopt_task_stats(model: nn.Module, checks: dict[str, StreamCheck]) -> dict[str, dict[str, dict[str, list]]]:
    """Give the far dims the teacher never used (``check.adopt``) the task data's statistics, in
    place, compensating ``state_proj`` for state dims (see the module docstring). Returns what was
    changed (:func:`planned_task_stats`)."""
    changed = planned_task_stats(model, checks)
    for name, check in checks.items():
        if not check.adopt:
            continue
        mean, std = getattr(model, f"{name}_mean"), getattr(model, f"{name}_std")
        old_mean, old_std = mean.detach().double().cpu(), std.detach().double().cpu()
        new_mean, new_std = old_mean.clone(), old_std.clone()
        dims = list(check.adopt)
        new_mean[dims] = torch.tensor([check.mean[d] for d in dims], dtype=torch.float64)
        new_std[dims] = torch.tensor([check.std[d] for d in dims], dtype=torch.float64)
        new_mean, new_std = new_mean.float().double(), new_std.float().double()  # the values the buffers hold
        if name == "state":
            layer = model.state_proj
            w = layer.weight.detach().double().cpu()  # (width, state_dim)
            bias = layer.bias.detach().double().cpu() + w @ ((new_mean - old_mean) / old_std)
            layer.weight.copy_((w * (new_std / old_std)[None]).to(layer.weight))
            layer.bias.copy_(bias.to(layer.bias))
        mean.copy_(new_mean.to(mean))
        std.copy_(new_std.to(std))
    return changed


def far_dims(checks: dict[str, StreamCheck]) -> dict[str, dict[str, float]]:
    """{stream: {dim: z}} of the far dims (z to 0.1σ), JSON-ready."""
    return {n: {str(d): round(c.z[d], 1) for d in c.far} for n, c in checks.items() if c.far}


def task_stats_message(checks: dict[str, StreamCheck], changed: dict | None) -> str | None:
    """One line on what :func:`check_task_stats` found and what was done (``changed``: what
    :func:`adopt_task_stats` returned, None when the remedy is off); None when nothing is far."""
    far = [f"{n} dim {d} at {c.z[d]:.0f}σ" for n, c in checks.items() for d in c.far]
    if not far:
        return None
    first = next(iter(checks.values()))
    limit = f"{first.quantile * 100:g}th percentile of |z| above {first.z_limit:g}"
    line = f"task data outside the teacher's normalisation ({limit}): {', '.join(far)}"
    if changed is None:
        return line + "; kept the teacher's statistics (task stats off): L_act is dominated by these dims"
    done = [
        f"{n}[{d}] mean {v['mean'][0]:.4g}→{v['mean'][1]:.4g} std {v['std'][0]:.4g}→{v['std'][1]:.4g}"
        for n, dims in changed.items()
        for d, v in dims.items()
    ]
    if done:
        line += f"; took the task data's statistics for dims the teacher never used: {', '.join(done)}"
        if "state" in changed:
            line += " (state_proj rescaled to match: the teacher's function is unchanged)"
    kept = [f"{n} dim {d}" for n, c in checks.items() for d in c.kept]
    if kept:
        line += f"; {', '.join(kept)} the teacher uses: its statistics kept"
    return line
