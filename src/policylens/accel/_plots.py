"""Analysis plots of a calibration (matplotlib): similarity heat maps, update-step map, BU scores.

Figures are made with ``matplotlib.figure.Figure`` (rendered by Agg on save), imported when a plot
is drawn: importing ``policylens.accel`` neither loads matplotlib (a second of import) nor switches
the process's pyplot backend.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ._calibration import Calibration


def _subplots(rows: int = 1, cols: int = 1, **kwargs):
    from matplotlib.figure import Figure

    fig = Figure(figsize=kwargs.pop("figsize"))
    return fig, fig.subplots(rows, cols, **kwargs)


def plot_similarity(cal: Calibration, path: str | Path, metric: str | None = None) -> Path:
    """One (K, K) heat map per branch of the ``metric`` matrices."""
    metric = metric or cal.metric
    mats = cal.matrices[metric]
    n = len(cal.block_names)
    cols = min(6, n)
    rows = math.ceil(n / cols)
    fig, axes = _subplots(rows, cols, figsize=(2.4 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    short = dict(zip(cal.block_names, _short_names(cal.block_names), strict=True))
    for ax, name in zip(axes.flat, cal.block_names, strict=False):
        ax.axis("on")
        ax.imshow(mats[name], cmap="viridis" if metric == "cosine" else "magma_r", origin="upper")
        ax.set_title(short[name], fontsize=6)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"{metric} between branch outputs at steps a (rows) and t (cols), K={cal.num_steps}")
    fig.tight_layout()
    return _save(fig, path)


def plot_schedule(schedule: dict[str, list[int]], num_steps: int, path: str | Path, title: str = "") -> Path:
    """Branches (rows) x denoising steps (cols): dark = recomputed, light = cached."""
    names = list(schedule)
    grid = np.zeros((len(names), num_steps))
    for i, n in enumerate(names):
        grid[i, schedule[n]] = 1.0
    fig, ax = _subplots(figsize=(10, 0.22 * len(names) + 1.2))
    ax.imshow(grid, aspect="auto", cmap="Greys", interpolation="nearest", vmin=0, vmax=1)
    ax.set_yticks(range(len(names)), _short_names(names), fontsize=6)
    ax.set_xlabel("denoising step")
    ax.set_title(title or "update steps (black = recompute)")
    fig.tight_layout()
    return _save(fig, path)


def plot_bu_scores(cal: Calibration, path: str | Path) -> Path:
    """Bubbling-Union score (mean pairwise L1 reuse error) per branch; the top n_bu are highlighted."""
    names = cal.block_names
    scores = [cal.bu_scores[n] for n in names]
    top = set(sorted(names, key=lambda n: -cal.bu_scores[n])[: cal.n_bu])
    fig, ax = _subplots(figsize=(10, 3))
    ax.bar(range(len(names)), scores, color=["tab:red" if n in top else "tab:blue" for n in names])
    ax.set_xticks(range(len(names)), _short_names(names), rotation=90, fontsize=6)
    ax.set_ylabel("mean L1 reuse error")
    ax.set_title(f"Bubbling-Union scores (red: top n_bu={cal.n_bu})")
    fig.tight_layout()
    return _save(fig, path)


def save_plots(cal: Calibration, out_dir: str | Path) -> list[Path]:
    """Write similarity.png, schedule.png and bu_scores.png into ``out_dir``."""
    out = Path(out_dir)
    return [
        plot_similarity(cal, out / "similarity.png"),
        plot_schedule(
            cal.schedule,
            cal.num_steps,
            out / "schedule.png",
            f"update steps, S={cal.num_updates}, n_bu={cal.n_bu}, metric={cal.metric}",
        ),
        plot_bu_scores(cal, out / "bu_scores.png"),
    ]


def _short_names(names: list[str]) -> list[str]:
    """Branch names without the dotted prefix they all share: ``model.decoder.layers.0.ffn`` -> ``layers.0.ffn``."""
    parts = [n.split(".") for n in names]
    k = 0
    while (
        len(names) > 1
        and all(len(p) > k + 2 and p[k] == parts[0][k] for p in parts)
        and not parts[0][k + 1].isdigit()  # keep "layers" before the layer index
    ):
        k += 1
    return [".".join(p[k:]) for p in parts]


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
